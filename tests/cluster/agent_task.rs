//! The AgentTask controller against the real API server, the real Job controller and garbage
//! collector, and kwok's simulated pods, which end as the annotations a test puts on the task's
//! `podMetadata` say (see `e2e/cluster/kwok.yaml`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agent_operator::api::{AgentTask, LLMProvider};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{KEY, agent, agent_task, apply, event_reasons, provider, wait_ready};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

const WAIT: Duration = Duration::from_secs(90);

/// A Ready provider and an agent `support` using it, with `extra` merged into its spec.
async fn ready_agent(ns: &TestNamespace, fake: &FakeProvider, extra: Value) {
    provider(ns, "openai", fake).await;
    let mut spec =
        json!({"image": "registry.example/support-agent:1", "providers": [{"name": "openai"}]});
    support::merge_patch(&mut spec, &extra);
    agent(ns, "support", spec).await;
    wait_ready(&ns.api::<LLMProvider>(), "openai", WAIT).await;
}

/// An AgentTask of agent `support`; `pod` annotations steer the simulated worker.
async fn task(ns: &TestNamespace, name: &str, pod: Value, extra: Value) {
    let mut spec = json!({
        "agentRef": {"name": "support"}, "input": format!("input of {name}"),
        "retryBackoff": {"initialDelay": "1s", "maxDelay": "2s"},
        "podMetadata": {"annotations": pod}
    });
    support::merge_patch(&mut spec, &extra);
    agent_task(ns, name, spec).await;
}

fn phase(task: &AgentTask) -> Option<String> {
    task.status.as_ref()?.phase.map(|p| format!("{p:?}"))
}

async fn wait_for_phase(api: &Api<AgentTask>, name: &str, wanted: &str) -> AgentTask {
    wait_until(WAIT, &format!("task {name} to be {wanted}"), || async {
        let task = api.get(name).await.ok()?;
        (phase(&task).as_deref() == Some(wanted)).then_some(task)
    })
    .await
}

fn reason(task: &AgentTask) -> Option<String> {
    task.status.as_ref()?.reason.clone()
}

/// The worker pods of every task in the namespace (the agent's own pods are not).
async fn worker_pods(ns: &TestNamespace) -> Option<Vec<Pod>> {
    let listed = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("agentoperator.dev/task"))
        .await
        .ok()?;
    Some(listed.items)
}

async fn job_names(ns: &TestNamespace) -> BTreeSet<String> {
    ns.api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("list Jobs")
        .items
        .iter()
        .map(|j| j.name_any())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_task_succeeds_first_time_with_its_result_in_a_restricted_namespace() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = TestNamespace::with_labels(
        &client,
        "task-succeeds",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({})).await;
    task(
        &ns,
        "summarise",
        json!({"kwok.agentoperator.dev/message": "three bullet points"}),
        json!({}),
    )
    .await;

    let done = wait_for_phase(&ns.api(), "summarise", "Succeeded").await;
    assert_eq!(reason(&done).as_deref(), Some("Succeeded"));
    let status = done.status.expect("status");
    assert_eq!(status.attempts, 1);
    assert_eq!(status.failed_attempts, 0);
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert!(status.duration.is_some());
    assert_eq!(status.provider.as_deref(), Some("openai"));
    assert_eq!(status.job_name.as_deref(), Some("summarise-1"));
    let result = status.result.expect("result");
    assert_eq!(result.summary, "three bullet points");
    assert!(!result.truncated && result.config_map_ref.is_none());
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .expect("Complete");
    assert_eq!(
        (complete.status.as_str(), complete.reason.as_str()),
        ("True", "Succeeded")
    );
    assert_eq!(job_names(&ns).await, names(&["summarise-1"]));

    // The worker pod was admitted under `restricted`, got the input and no API token.
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("agentoperator.dev/task"))
        .await
        .expect("pods");
    let pod = pods.items.first().expect("the worker pod");
    let spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    // The input rides in the pod's own annotations, projected as a file: no ConfigMap.
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("files.agentoperator.dev/input")
            .map(String::as_str),
        Some("input of summarise")
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("summarise-task")
            .await
            .expect("get")
            .is_none(),
        "the worker's files need no ConfigMap"
    );
    assert!(
        !operator.log().contains(KEY),
        "no credential in the operator's log"
    );

    // What the task cost in writes: its Job, and its status when the attempt started and when
    // it ended. The pod's name waits for the end; success needs no Event.
    let reasons = event_reasons(&ns, "summarise").await;
    assert!(reasons.is_empty(), "no Event for a success: {reasons:?}");
    let patches = operator.requests_by_resource("patch").await;
    assert_eq!(
        patches.get("agenttasks/status").copied(),
        Some(2.0),
        "{patches:?}"
    );
    let creates = operator.requests_by_resource("create").await;
    assert_eq!(creates.get("jobs").copied(), Some(1.0), "{creates:?}");
    let attempts = format!(
        "agent_operator_task_attempts_total{{namespace=\"{}\"}}",
        ns.name
    );
    assert_eq!(operator.metric(&attempts).await, Some(1.0));
    let metrics = operator.metrics().await;
    assert!(
        metrics.contains("agent_operator_task_duration_seconds_count{")
            && metrics.contains("phase=\"Succeeded\""),
        "the task's duration is observed by its final phase"
    );
    assert_eq!(
        operator
            .metric(r#"agent_operator_tasks{phase="Succeeded"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        operator
            .metric(
                r#"agent_operator_objects{condition="Complete",kind="AgentTask",status="True"}"#
            )
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_running_workers_files_follow_failover_in_its_pods_annotations() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = TestNamespace::new(&client, "task-files-failover").await;
    let first = FakeProvider::start(Behaviour::default()).await;
    let second = FakeProvider::start(Behaviour::default()).await;
    provider(&ns, "first", &first).await;
    provider(&ns, "second", &second).await;
    agent(
        &ns,
        "support",
        json!({"image": "registry.example/support-agent:1",
            "providers": [{"name": "first"}, {"name": "second"}]}),
    )
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;
    wait_ready(&ns.api::<LLMProvider>(), "first", WAIT).await;
    wait_ready(&ns.api::<LLMProvider>(), "second", WAIT).await;
    task(
        &ns,
        "long",
        json!({"kwok.agentoperator.dev/run-duration": "1h"}),
        json!({}),
    )
    .await;

    // What the running pod's annotations say: the active provider of `providers.json`.
    let active = || async {
        let pod = worker_pods(&ns).await?.into_iter().next()?;
        let annotations = pod.metadata.annotations?;
        let file: Value =
            serde_json::from_str(annotations.get("files.agentoperator.dev/providers.json")?)
                .ok()?;
        let active = file["activeProvider"].as_str().map(str::to_string);
        Some((
            active,
            annotations.get("agentoperator.dev/files-hash")?.clone(),
        ))
    };
    let (_, hash_before) = wait_until(WAIT, "the worker on the first provider", || async {
        active()
            .await
            .filter(|(a, _)| a.as_deref() == Some("first"))
    })
    .await;
    first.set(|b| b.status = Some(503));
    let (_, hash_after) = wait_until(
        WAIT,
        "the worker's file to name the second provider",
        || async {
            active()
                .await
                .filter(|(a, _)| a.as_deref() == Some("second"))
        },
    )
    .await;
    assert_ne!(hash_before, hash_after, "the hash follows the files");
    assert_eq!(
        job_names(&ns).await,
        names(&["long-1"]),
        "the same attempt, pointed elsewhere"
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("long-task")
            .await
            .expect("get")
            .is_none(),
        "no ConfigMap of the task's own"
    );
}

#[tokio::test]
async fn a_long_result_is_summarised_and_kept_whole_in_a_config_map() {
    let (_client, ns) = support::namespace_with_crds("task-long-result").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({})).await;
    let long = "word ".repeat(600);
    task(
        &ns,
        "report",
        json!({"kwok.agentoperator.dev/message": long}),
        json!({}),
    )
    .await;

    let done = wait_for_phase(&ns.api(), "report", "Succeeded").await;
    let result = done.status.and_then(|s| s.result).expect("result");
    assert!(result.truncated);
    assert_eq!(result.summary.len(), 1024);
    let reference = result
        .config_map_ref
        .expect("a reference to the whole result")
        .name;
    let whole: ConfigMap = ns
        .api()
        .get(&reference)
        .await
        .expect("the result ConfigMap");
    assert_eq!(whole.data.expect("data")["result"], long);
}

#[tokio::test]
async fn two_failed_attempts_then_success_and_a_backoff_limit_that_ends_it() {
    let (_client, ns) = support::namespace_with_crds("task-retries").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({})).await;
    let fail_twice = json!({
        "kwok.agentoperator.dev/exit-code-attempt-1": "1",
        "kwok.agentoperator.dev/exit-code-attempt-2": "3",
        "kwok.agentoperator.dev/message-attempt-3": "third time lucky"
    });
    task(&ns, "flaky", fail_twice, json!({"backoffLimit": 3})).await;
    task(
        &ns,
        "doomed",
        json!({"kwok.agentoperator.dev/exit-code": "1"}),
        json!({"backoffLimit": 1}),
    )
    .await;

    let api = ns.api::<AgentTask>();
    let flaky = wait_for_phase(&api, "flaky", "Succeeded").await;
    let status = flaky.status.expect("status");
    assert_eq!((status.attempts, status.failed_attempts), (3, 2));
    assert_eq!(status.result.expect("result").summary, "third time lucky");

    let doomed = wait_for_phase(&api, "doomed", "Failed").await;
    assert_eq!(reason(&doomed).as_deref(), Some("BackoffLimitExceeded"));
    let status = doomed.status.expect("status");
    assert_eq!((status.attempts, status.failed_attempts), (2, 2));
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed");
    assert!(
        failed.message.contains("exited with code 1"),
        "{}",
        failed.message
    );

    assert_eq!(
        job_names(&ns).await,
        names(&["flaky-1", "flaky-2", "flaky-3", "doomed-1", "doomed-2"]),
        "one Job per attempt, none twice"
    );
}

#[tokio::test]
async fn a_task_that_exceeds_its_timeout_ends_with_reason_timeout() {
    let (_client, ns) = support::namespace_with_crds("task-timeout").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({})).await;
    task(
        &ns,
        "slow",
        json!({"kwok.agentoperator.dev/run-duration": "1h"}),
        json!({"timeout": "3s", "backoffLimit": 0}),
    )
    .await;

    let slow = wait_for_phase(&ns.api(), "slow", "Failed").await;
    assert_eq!(reason(&slow).as_deref(), Some("Timeout"));
    assert_eq!(slow.status.expect("status").attempts, 1);
}

#[tokio::test]
async fn max_concurrent_tasks_queues_the_rest_in_creation_order() {
    let (_client, ns) = support::namespace_with_crds("task-queue").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({"maxConcurrentTasks": 2})).await;
    let tasks: Vec<String> = (0..10).map(|i| format!("batch-{i:02}")).collect();
    for name in &tasks {
        task(
            &ns,
            name,
            json!({"kwok.agentoperator.dev/run-duration": "2s"}),
            json!({}),
        )
        .await;
    }

    let jobs = ns.api::<Job>();
    let api = ns.api::<AgentTask>();
    let mut first_seen: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    let mut seen_waiting = BTreeSet::new();
    let mut seen_started = BTreeSet::new();
    let mut most_running = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let listed = jobs
            .list(&ListParams::default())
            .await
            .expect("list Jobs")
            .items;
        let running = listed.iter().filter(|job| !job_finished(job)).count();
        most_running = most_running.max(running);
        assert!(running <= 2, "{running} Jobs run at once, the limit is 2");
        for job in &listed {
            let task = job.name_any().trim_end_matches("-1").to_string();
            first_seen
                .entry(task)
                .or_insert_with(tokio::time::Instant::now);
        }
        let listed = api
            .list(&ListParams::default())
            .await
            .expect("list tasks")
            .items;
        for t in &listed {
            let name = t.name_any();
            if t.status.as_ref().is_some_and(|s| s.attempts > 0) {
                seen_started.insert(name);
            } else if reason(t).as_deref() == Some("ConcurrencyLimit") {
                // Written apart from the reconciles: never over the start of the same task.
                assert!(
                    !seen_started.contains(&name),
                    "{name} reads as waiting for a slot after it started"
                );
                seen_waiting.insert(name);
            }
        }
        let finished = listed
            .iter()
            .filter(|t| phase(t).as_deref() == Some("Succeeded"))
            .count();
        if finished == tasks.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {finished} of 10 tasks finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(most_running, 2, "the queue used both slots");
    // The last to start waited for four runs of 2 s, far longer than the 100 ms between looks.
    for late in &tasks[6..] {
        assert!(
            seen_waiting.contains(late),
            "{late} waited without its status saying so (ConcurrencyLimit); kstatus reads a task without status as Current"
        );
    }
    // Two tasks admitted at the same moment (two slots freed together) race to create their
    // Jobs, and under load one reconcile may run a moment after the other, so their Jobs may
    // show in either order. A task admitted ahead of an older one that had to wait would be
    // ahead by about a whole run (2 s), until the next slot freed.
    let tolerance = Duration::from_secs(1);
    for (older, newer) in tasks
        .iter()
        .enumerate()
        .flat_map(|(i, older)| tasks[i + 1..].iter().map(move |newer| (older, newer)))
    {
        assert!(
            first_seen[older] <= first_seen[newer] + tolerance,
            "{newer} started {:?} before {older}, which was created first: tasks start first come, first served",
            first_seen[older] - first_seen[newer]
        );
    }
}

fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

#[tokio::test]
async fn without_a_ready_provider_tasks_wait_without_using_attempts() {
    let (_client, ns) = support::namespace_with_crds("task-no-provider").await;
    let fake = FakeProvider::start(Behaviour {
        status: Some(503),
        ..Behaviour::default()
    })
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "support",
        json!({"image": "registry.example/support-agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    task(&ns, "waits", json!({}), json!({})).await;

    let api = ns.api::<AgentTask>();
    let waiting = wait_until(WAIT, "task waits for a provider", || async {
        let task = api.get("waits").await.ok()?;
        (reason(&task).as_deref() == Some("ProviderUnavailable")).then_some(task)
    })
    .await;
    assert_eq!(phase(&waiting).as_deref(), Some("Queued"));
    assert_eq!(waiting.status.expect("status").attempts, 0);
    assert!(job_names(&ns).await.is_empty(), "no attempt started");

    fake.set(|b| b.status = None);
    let done = wait_for_phase(&api, "waits", "Succeeded").await;
    assert_eq!(done.status.expect("status").attempts, 1);
}

#[tokio::test]
async fn a_provider_failure_reported_by_the_worker_does_not_use_the_budget() {
    let (_client, ns) = support::namespace_with_crds("task-provider-exit").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({})).await;
    let provider_fails_first = json!({
        "kwok.agentoperator.dev/exit-code-attempt-1": "69",
        "kwok.agentoperator.dev/message-attempt-1": "upstream 503"
    });
    task(
        &ns,
        "resilient",
        provider_fails_first,
        json!({"backoffLimit": 0}),
    )
    .await;

    let done = wait_for_phase(&ns.api(), "resilient", "Succeeded").await;
    let status = done.status.expect("status");
    assert_eq!(
        (status.attempts, status.failed_attempts),
        (2, 0),
        "backoffLimit 0, yet retried"
    );
}

#[tokio::test]
async fn cancel_stops_the_attempt_and_deleting_a_task_deletes_its_jobs_and_pods() {
    let (_client, ns) = support::namespace_with_crds("task-cancel").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({})).await;
    let forever = json!({"kwok.agentoperator.dev/run-duration": "1h"});
    task(&ns, "cancelled", forever.clone(), json!({})).await;
    task(&ns, "deleted", forever, json!({})).await;
    let api = ns.api::<AgentTask>();
    wait_for_phase(&api, "cancelled", "Running").await;
    wait_for_phase(&api, "deleted", "Running").await;
    wait_until(WAIT, "both worker pods to exist", || async {
        let pods = worker_pods(&ns).await?;
        (pods.len() == 2).then_some(())
    })
    .await;

    api.patch(
        "cancelled",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await
    .expect("set cancel");
    let cancelled = wait_for_phase(&api, "cancelled", "Cancelled").await;
    assert_eq!(reason(&cancelled).as_deref(), Some("Cancelled"));
    api.delete("deleted", &DeleteParams::background())
        .await
        .expect("delete task");

    wait_until(WAIT, "every Job and pod to be gone", || async {
        let jobs = ns.api::<Job>().list(&ListParams::default()).await.ok()?;
        let pods = worker_pods(&ns).await?;
        (jobs.items.is_empty() && pods.is_empty()).then_some(())
    })
    .await;
    // The cancelled task stays, and stays cancelled.
    assert_eq!(
        phase(&api.get("cancelled").await.expect("kept")).as_deref(),
        Some("Cancelled")
    );
}

#[tokio::test]
async fn ttl_deletes_the_children_or_the_task_as_asked() {
    let (_client, ns) = support::namespace_with_crds("task-ttl").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({})).await;
    task(
        &ns,
        "keeps-task",
        json!({}),
        json!({"ttlSecondsAfterFinished": 2}),
    )
    .await;
    task(
        &ns,
        "goes-away",
        json!({}),
        json!({"ttlSecondsAfterFinished": 2, "ttlDeletes": "Task"}),
    )
    .await;

    let api = ns.api::<AgentTask>();
    wait_for_phase(&api, "keeps-task", "Succeeded").await;
    wait_until(
        WAIT,
        "the TTL to delete Jobs, pods and ConfigMaps",
        || async {
            let jobs = ns.api::<Job>().list(&ListParams::default()).await.ok()?;
            let pods = worker_pods(&ns).await?;
            let owned = ns
                .api::<ConfigMap>()
                .list(&ListParams::default().labels("agentoperator.dev/task"))
                .await
                .ok()?;
            let gone = api.get_opt("goes-away").await.ok()?.is_none();
            (jobs.items.is_empty() && pods.is_empty() && owned.items.is_empty() && gone)
                .then_some(())
        },
    )
    .await;
    let kept = api.get("keeps-task").await.expect("the task itself stays");
    assert_eq!(phase(&kept).as_deref(), Some("Succeeded"));
    assert!(
        kept.status.and_then(|s| s.result).is_some(),
        "its result summary stays"
    );
}

#[tokio::test]
async fn broken_references_are_conditions_until_fixed() {
    let (_client, ns) = support::namespace_with_crds("task-references").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    task(&ns, "orphan", json!({}), json!({})).await;
    task(
        &ns,
        "no-input",
        json!({}),
        json!({"input": null, "inputFrom": {"configMapKeyRef": {"name": "tickets", "key": "t1"}}}),
    )
    .await;

    let api = ns.api::<AgentTask>();
    for name in ["orphan", "no-input"] {
        let waiting = wait_until(
            WAIT,
            &format!("{name} to report InvalidReference"),
            || async {
                let task = api.get(name).await.ok()?;
                (reason(&task).as_deref() == Some("InvalidReference")).then_some(task)
            },
        )
        .await;
        assert_eq!(phase(&waiting).as_deref(), Some("Pending"));
    }
    let orphan = api.get("orphan").await.expect("orphan");
    let message = &orphan.status.expect("status").conditions[0].message;
    assert!(
        message.contains("AgentDeployment support") && message.contains("spec.agentRef"),
        "{message}"
    );

    ready_agent(&ns, &fake, json!({})).await;
    wait_for_phase(&api, "orphan", "Succeeded").await;
    apply(&ns.api::<ConfigMap>(), "tickets", json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tickets"}, "data": {"t1": "ticket one"}
    }))
    .await;
    wait_for_phase(&api, "no-input", "Succeeded").await;
}

#[tokio::test]
async fn killing_the_operator_repeatedly_loses_and_duplicates_no_attempt() {
    let (_client, ns) = support::namespace_with_crds("task-kills").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut operator = OperatorProcess::start(&ns.name).await;
    ready_agent(&ns, &fake, json!({"maxConcurrentTasks": 8})).await;
    // Every third task fails its first attempt, so retries are in flight across the kills too.
    let tasks: Vec<String> = (0..20).map(|i| format!("work-{i:02}")).collect();
    for (i, name) in tasks.iter().enumerate() {
        let pod = if i % 3 == 0 {
            json!({"kwok.agentoperator.dev/run-duration": "1500ms", "kwok.agentoperator.dev/exit-code-attempt-1": "1"})
        } else {
            json!({"kwok.agentoperator.dev/run-duration": "1500ms"})
        };
        task(&ns, name, pod, json!({"backoffLimit": 2})).await;
    }
    for round in 0..6u64 {
        tokio::time::sleep(Duration::from_millis(700 + 450 * (round % 3))).await;
        operator.kill();
        operator = OperatorProcess::start(&ns.name).await;
    }

    let api = ns.api::<AgentTask>();
    for name in &tasks {
        wait_for_phase(&api, name, "Succeeded").await;
    }
    let jobs = job_names(&ns).await;
    let mut expected = BTreeSet::new();
    for (i, name) in tasks.iter().enumerate() {
        let status = api.get(name).await.expect("task").status.expect("status");
        let attempts = if i % 3 == 0 { 2 } else { 1 };
        assert_eq!(status.attempts, attempts, "{name}: attempts");
        for attempt in 1..=attempts {
            expected.insert(format!("{name}-{attempt}"));
        }
    }
    assert_eq!(jobs, expected, "exactly one Job per attempt");
}
