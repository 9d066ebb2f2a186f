//! One round of an AgentDeployment's budget lease: read every running pod's router, count
//! what they spent, take back room from pods holding too much, then give room to pods
//! holding too little. Two calls per pod per round, on the pods' own addresses: no request to
//! the API server, whatever the agent's traffic. The arithmetic is in `budget`.

use std::time::Duration;

use jiff::Timestamp;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::budget::{Accounts, Amount, Limits, window};
use crate::api::agent_deployment::condition;
use crate::api::budget::{AgentBudget, AgentBudgetStatus};
use crate::api::conditions::{ConditionStatus, DesiredCondition};
use crate::resources::budget_lease::{
    Grant, GrantMode, LEASE_INTERVAL, LEASE_PATH, LEASE_PORT, LeaseReading, LeaseRequest,
};

/// Longest wait for one router's answer: a router that takes longer keeps its room until the
/// next round.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A running pod whose router is leased the budget.
#[derive(Clone, Debug)]
pub struct LeasedPod {
    pub name: String,
    /// `None` before the pod has an address.
    pub address: Option<String>,
    /// Being deleted: read until it is gone, and given no more room.
    pub stopping: bool,
}

/// What a round found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `None` when the window cannot be computed: the last status is kept.
    pub status: Option<AgentBudgetStatus>,
    pub condition: DesiredCondition,
    /// The share of each limit used, in percent, for the metrics and alerts.
    pub used_percent: Vec<(&'static str, f64)>,
    /// The same, as the last status left it in this window: an alert fires on the crossing.
    pub used_percent_before: Vec<(&'static str, f64)>,
}

/// Whether the last status said the window was spent, for the same window and spec: a spent
/// window stays spent while nothing changes, though the agent, told not to retry, no longer
/// asks.
pub fn was_spent(
    previous: Option<&AgentBudgetStatus>,
    conditions: &[Condition],
    generation: Option<i64>,
    window_start: &str,
) -> bool {
    previous.is_some_and(|p| p.window_start == window_start)
        && conditions.iter().any(|c| {
            c.type_ == condition::BUDGET_EXCEEDED
                && c.status == "True"
                && c.reason == SPENT
                && c.observed_generation == generation
        })
}

const SPENT: &str = "WindowSpent";

/// What the last status said, as a round starts from it.
pub struct LastStatus<'a> {
    pub budget: Option<&'a AgentBudgetStatus>,
    pub conditions: &'a [Condition],
    /// The generation the round is for, to tell a spec change from a spent window.
    pub generation: Option<i64>,
}

/// Runs one round for `pods`. The calls of each step go out together: a round costs the
/// slowest router's answer per step, not the sum of them.
pub async fn round(
    http: &reqwest::Client,
    token: &str,
    budget: &AgentBudget,
    last: LastStatus<'_>,
    pods: &[LeasedPod],
    now: Timestamp,
) -> Outcome {
    let LastStatus {
        budget: previous,
        conditions,
        generation,
    } = last;
    let window = match window(&budget.window, now) {
        Ok(window) => window,
        Err(message) => {
            return Outcome {
                status: None,
                condition: DesiredCondition::new(
                    condition::BUDGET_EXCEEDED,
                    ConditionStatus::True,
                    "InvalidTimeZone",
                    format!("{message}; the routers get no more room until it is fixed"),
                ),
                used_percent: Vec::new(),
                used_percent_before: Vec::new(),
            };
        }
    };
    let spent_before = was_spent(previous, conditions, generation, &window.start.to_string());
    let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    let mut accounts = Accounts::open(Limits::of(budget), window, previous, &names);
    accounts.stay_spent(spent_before);
    for pod in pods.iter().filter(|p| p.stopping) {
        accounts.stopping(&pod.name);
    }
    let used_percent_before = accounts.used_percent();
    let client = LeaseClient { http, token, pods };
    let reads = pods
        .iter()
        .map(|pod| (pod.name.clone(), LeaseRequest::default()))
        .collect();
    for (pod, reading) in client.send_all(reads).await {
        accounts.read(&pod, &reading);
    }
    let spent = accounts.spent();
    let terms = LeaseRequest {
        grant: None,
        window_spent: spent.is_some(),
        window_end: Some(accounts.window().end.to_string()),
        retry_after_seconds: LEASE_INTERVAL.as_secs(),
    };
    let with_terms = |grants: Vec<(String, Grant)>| -> Vec<(String, LeaseRequest)> {
        grants
            .into_iter()
            .map(|(pod, grant)| {
                let request = LeaseRequest {
                    grant: Some(grant),
                    ..terms.clone()
                };
                (pod, request)
            })
            .collect()
    };
    let mut granted: Vec<String> = Vec::new();
    // Lowerings are answered before the additions are computed: the room they give back is
    // what the additions may hand out.
    let lowerings = accounts.lowerings();
    granted.extend(lowerings.iter().map(|(pod, _)| pod.clone()));
    for (pod, reading) in client.send_all(with_terms(lowerings)).await {
        accounts.read(&pod, &reading);
    }
    let additions = accounts.additions();
    granted.extend(additions.iter().map(|(pod, _)| pod.clone()));
    // Every other router hears the terms (and that its refusals were seen) with an empty
    // addition, which changes no allowance.
    let nothing = Limits::of(budget).grant(GrantMode::Add, Amount::default());
    let others = accounts
        .reached()
        .into_iter()
        .filter(|pod| !granted.contains(pod))
        .map(|pod| (pod, nothing.clone()));
    let last_calls = with_terms(additions.into_iter().chain(others).collect());
    for (pod, reading) in client.send_all(last_calls).await {
        accounts.read(&pod, &reading);
    }
    let condition = match &spent {
        Some(why) => DesiredCondition::new(
            condition::BUDGET_EXCEEDED,
            ConditionStatus::True,
            SPENT,
            format!("{why}; the routers refuse LLM calls until then"),
        ),
        None => DesiredCondition::new(
            condition::BUDGET_EXCEEDED,
            ConditionStatus::False,
            "WithinBudget",
            accounts.summary(),
        ),
    };
    Outcome {
        used_percent: accounts.used_percent(),
        used_percent_before,
        status: Some(accounts.status()),
        condition,
    }
}

struct LeaseClient<'a> {
    http: &'a reqwest::Client,
    token: &'a str,
    pods: &'a [LeasedPod],
}

impl LeaseClient<'_> {
    /// Sends each pod its request, all at once; the answers that came back, by pod.
    async fn send_all(&self, requests: Vec<(String, LeaseRequest)>) -> Vec<(String, LeaseReading)> {
        let calls = requests.into_iter().map(|(name, request)| async move {
            let pod = self.pods.iter().find(|p| p.name == name)?;
            let reading = self.call(pod, &request).await?;
            Some((name, reading))
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One call; `None` when the router did not answer, which the round survives.
    async fn call(&self, pod: &LeasedPod, request: &LeaseRequest) -> Option<LeaseReading> {
        let address = pod.address.as_deref()?;
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_string()
        };
        let url = format!("http://{host}:{LEASE_PORT}{LEASE_PATH}");
        let answer = self
            .http
            .post(&url)
            .bearer_auth(self.token)
            .json(request)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match answer {
            Ok(response) => match response.json::<LeaseReading>().await {
                Ok(reading) => Some(reading),
                Err(error) => {
                    tracing::warn!(pod = %pod.name, %error, "the router's lease answer is not readable");
                    None
                }
            },
            Err(error) => {
                // A pod still starting has no router listening yet: expected, and retried
                // next round.
                tracing::debug!(pod = %pod.name, %error, "cannot reach the router's lease");
                None
            }
        }
    }
}
