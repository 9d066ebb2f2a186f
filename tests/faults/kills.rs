//! SIGKILL at random moments with work in flight in all three controllers: every round ends
//! converged, with no task attempt lost or run twice and no child orphaned or duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agent_operator::api::{AgentDeployment, LLMProvider};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use rand::Rng;
use serde_json::json;

use crate::apiserver::assert_tasks_exact;
use crate::figures::record;
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{agent, agent_task, provider, wait_ready};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

const WAIT: Duration = Duration::from_secs(240);

/// Names of `K` in the namespace, by owner name (the agent they belong to).
pub async fn owned_by<K>(ns: &TestNamespace) -> BTreeMap<String, Vec<String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut owned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in ns
        .api::<K>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        for owner in object.owner_references() {
            if owner.kind == "AgentDeployment" {
                owned
                    .entry(owner.name.clone())
                    .or_default()
                    .push(object.name_any());
            }
        }
    }
    owned
}

#[tokio::test]
async fn random_kills_lose_and_duplicate_nothing() {
    let rounds = crate::scale(12, 100);
    let (_client, ns) = support::namespace_with_crds("faults-kills").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    let mut live_agents = BTreeSet::new();
    let mut tasks = Vec::new();
    let mut rng = rand::rng();
    for round in 0..rounds {
        // One change per round, across the three controllers.
        match round % 4 {
            0 => {
                let name = format!("agent-{round}");
                agent(
                    &ns,
                    &name,
                    json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
                )
                .await;
                live_agents.insert(name);
            }
            1 => {
                let name = format!("task-{round}");
                let mut pod = json!({"kwok.agentoperator.dev/run-duration": "1s"});
                if rng.random_bool(0.3) {
                    pod["kwok.agentoperator.dev/exit-code-attempt-1"] = json!("1");
                }
                agent_task(&ns, &name, json!({
                    "template": {"image": "registry.example/worker:1", "providers": [{"name": "openai"}]},
                    "input": "x", "backoffLimit": 3,
                    "retryBackoff": {"initialDelay": "1s", "maxDelay": "2s"},
                    "podMetadata": {"annotations": pod}
                }))
                .await;
                tasks.push(name);
            }
            2 => {
                if let Some(name) = live_agents.iter().next().cloned() {
                    ns.api::<AgentDeployment>()
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"replicas": rng.random_range(1..=3)}})),
                        )
                        .await
                        .expect("scale");
                }
            }
            _ => {
                // A provider blip: unhealthy for a moment, then healthy again.
                let failing = rng.random_bool(0.5);
                fake.set(|b| b.status = failing.then_some(500));
                if live_agents.len() > 2 && rng.random_bool(0.3) {
                    let name = live_agents.iter().next_back().cloned().expect("an agent");
                    ns.api::<AgentDeployment>()
                        .delete(&name, &DeleteParams::default())
                        .await
                        .expect("delete");
                    live_agents.remove(&name);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        operator.kill();
        operator = OperatorProcess::start(&ns.name).await;
    }
    fake.set(|b| b.status = None);

    wait_ready(&ns.api::<LLMProvider>(), "openai", WAIT).await;
    for name in &live_agents {
        wait_ready(&ns.api::<AgentDeployment>(), name, WAIT).await;
    }
    assert_tasks_exact(&ns, &tasks).await;
    // Each live agent owns exactly one of each child; deleted agents own nothing any more.
    wait_until(
        WAIT,
        "children to match the live agents exactly",
        || async {
            // (The agents declare no ports, so they have no Service.)
            let kinds = [
                owned_by::<Deployment>(&ns).await,
                owned_by::<ServiceAccount>(&ns).await,
                owned_by::<ConfigMap>(&ns).await,
            ];
            kinds
                .iter()
                .all(|owned| {
                    owned.keys().cloned().collect::<BTreeSet<_>>() == live_agents
                        && owned.values().all(|names| names.len() == 1)
                })
                .then_some(())
        },
    )
    .await;
    record(
        "operator-kills",
        &format!(
            "{rounds} SIGKILL rounds across the three controllers: {} tasks, {} agents left, tasks lost 0, attempts duplicated 0, children orphaned or duplicated 0",
            tasks.len(),
            live_agents.len()
        ),
    );
}
