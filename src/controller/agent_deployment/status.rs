//! The AgentDeployment status computed from what the controller read. Pure: no client, no clock.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;

use crate::api::agent_deployment::{AgentDeploymentStatus, ProviderState, condition};
use crate::api::conditions::{ConditionStatus, DesiredCondition, Progress, merge_conditions};
use crate::controller::compact::CachedPod;
use crate::resources::provider_config::ResolvedProvider;

/// A reference the agent needs that does not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokenReference {
    SecretNotFound {
        secret: String,
    },
    SecretKeyNotFound {
        secret: String,
        key: String,
    },
    /// The API server refused a child (a quota, an admission policy, an exhausted IP range):
    /// the agent cannot be Ready, and retrying alone may not fix it.
    ApplyFailed {
        kind: &'static str,
        name: String,
        error: String,
    },
}

impl BrokenReference {
    fn reason(&self) -> &'static str {
        match self {
            BrokenReference::SecretNotFound { .. } => "SecretNotFound",
            BrokenReference::SecretKeyNotFound { .. } => "SecretKeyNotFound",
            BrokenReference::ApplyFailed { .. } => "ApplyFailed",
        }
    }

    fn message(&self) -> String {
        match self {
            BrokenReference::SecretNotFound { secret } => {
                format!("Secret {secret} referenced by spec.secrets does not exist")
            }
            BrokenReference::SecretKeyNotFound { secret, key } => {
                format!("Secret {secret} has no key {key} referenced by spec.secrets")
            }
            BrokenReference::ApplyFailed { kind, name, error } => {
                format!("the API server refused {kind} {name}: {error}; retrying with backoff")
            }
        }
    }
}

/// A container of an agent pod that cannot run, as the kubelet reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub pod: String,
    pub container: String,
    /// The kubelet's waiting reason, e.g. CrashLoopBackOff, ImagePullBackOff.
    pub reason: String,
    pub message: String,
}

/// Waiting reasons that mean a pod will not become ready on its own. `ContainerCreating` and
/// `PodInitializing` are normal steps, not problems.
const STUCK_REASONS: [&str; 7] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The problems of an agent's pods, from their container statuses.
pub fn pod_problems(pods: &[&CachedPod]) -> Vec<PodProblem> {
    let mut problems = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        // The router sidecar is an init container: when it cannot start, the agent waits in
        // PodInitializing, and only the sidecar's own status says why.
        let statuses = pod.status.iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        for container in statuses {
            let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let Some(reason) = waiting
                .reason
                .as_deref()
                .filter(|r| STUCK_REASONS.contains(r))
            else {
                continue;
            };
            problems.push(PodProblem {
                pod: name.clone(),
                container: container.name.clone(),
                reason: reason.to_string(),
                message: waiting.message.clone().unwrap_or_default(),
            });
        }
    }
    problems.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
    problems
}

/// Everything the status is computed from.
pub struct StatusInputs<'a> {
    pub pod_problems: &'a [PodProblem],
    pub generation: Option<i64>,
    pub chain: &'a [ResolvedProvider],
    pub broken: &'a [BrokenReference],
    pub deployment: Option<&'a Deployment>,
    /// Providers whose credential no probe has judged yet, holding the Deployment's creation.
    pub unjudged_credentials: &'a [String],
    pub suspended: bool,
    pub selector: String,
    /// With `spec.budget`: this round's lease.
    pub budget: Option<&'a super::lease::Outcome>,
}

/// Facts of the Deployment's rollout.
struct Rollout {
    desired: i32,
    replicas: i32,
    ready: i32,
    updated: i32,
    observed: bool,
    stuck: Option<String>,
}

fn rollout(deployment: Option<&Deployment>) -> Option<Rollout> {
    let deployment = deployment?;
    let status = deployment.status.clone().unwrap_or_default();
    let stuck = status.conditions.iter().flatten().find_map(|c| {
        (c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        .then(|| {
            c.message
                .clone()
                .unwrap_or_else(|| "the rollout exceeded its progress deadline".into())
        })
    });
    Some(Rollout {
        desired: deployment.spec.replicas.unwrap_or(1),
        replicas: status.replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        observed: status.observed_generation >= deployment.metadata.generation,
        stuck,
    })
}

/// The Degraded condition for pods that cannot run, naming the first and counting the rest.
fn pod_problem_condition(problem: &PodProblem, more: usize) -> DesiredCondition {
    let detail = if problem.message.is_empty() {
        String::new()
    } else {
        format!(": {}", problem.message)
    };
    let others = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    let (reason, fix) = match problem.reason.as_str() {
        "CrashLoopBackOff" => ("CrashLoopBackOff", ""),
        "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => ("ImagePullError", ""),
        // The kubelet's "container has runAsNonRoot and image will run as root" and "image has
        // non-numeric user (…), cannot verify user is non-root".
        _ if problem.message.contains("non-root") || problem.message.contains("runAsNonRoot") => (
            "RunAsNonRootUnverifiable",
            "; set spec.security.runAsUser to a non-zero UID the image can run as",
        ),
        _ => ("ContainerConfigError", ""),
    };
    DesiredCondition::new(
        condition::DEGRADED,
        ConditionStatus::True,
        reason,
        format!(
            "container {} of pod {} is in {}{detail}{others}{fix}",
            problem.container, problem.pod, problem.reason
        ),
    )
}

/// Stalled when a person must act: a missing provider (once the grace for one applied together
/// with the agent is over), Secret or key, a child the API server refuses, a rollout past its
/// deadline, pods that crash or cannot pull or configure their image. Working while the
/// Deployment is created or rolled out. Providers that are down may recover by themselves:
/// `Ready=False` alone says so.
fn agent_progress(
    inputs: &StatusInputs<'_>,
    ready: &DesiredCondition,
    progressing: &DesiredCondition,
    degraded: &DesiredCondition,
    missing: &[&str],
) -> Progress {
    let stalled = |reason: &'static str, message: &str| Progress::Stalled {
        reason,
        message: message.to_string(),
    };
    if ready.status == ConditionStatus::True {
        return Progress::Settled;
    }
    if let Some(broken) = inputs.broken.first() {
        return stalled(broken.reason(), &broken.message());
    }
    if !missing.is_empty() && inputs.unjudged_credentials.is_empty() {
        return stalled(ready.reason, &ready.message);
    }
    if degraded.status == ConditionStatus::True && degraded.reason != "NoProviderReady" {
        return stalled(degraded.reason, &degraded.message);
    }
    if progressing.status == ConditionStatus::True || !missing.is_empty() {
        return Progress::Working {
            reason: progressing.reason,
            message: progressing.message.clone(),
        };
    }
    Progress::Settled
}

pub fn desired_status(
    previous: Option<&AgentDeploymentStatus>,
    inputs: &StatusInputs<'_>,
    now: Timestamp,
) -> AgentDeploymentStatus {
    let rollout = rollout(inputs.deployment);
    let active = inputs
        .chain
        .iter()
        .find(|p| p.ready)
        .map(|p| p.name.clone());
    let missing: Vec<&str> = inputs
        .chain
        .iter()
        .filter(|p| p.provider_type.is_none())
        .map(|p| p.name.as_str())
        .collect();

    let providers_ready = if inputs.chain.is_empty() {
        DesiredCondition::new(
            condition::PROVIDERS_READY,
            ConditionStatus::True,
            "NoProvidersConfigured",
            "the agent has no failover chain",
        )
    } else if !missing.is_empty() {
        DesiredCondition::new(
            condition::PROVIDERS_READY,
            ConditionStatus::False,
            "ProviderNotFound",
            format!(
                "LLMProvider {} does not exist in this namespace",
                missing.join(", ")
            ),
        )
    } else if let Some(active) = &active {
        DesiredCondition::new(
            condition::PROVIDERS_READY,
            ConditionStatus::True,
            "ProviderAvailable",
            format!(
                "using {active}, the first Ready provider of {}",
                inputs.chain.len()
            ),
        )
    } else {
        let reasons: Vec<String> = inputs
            .chain
            .iter()
            .map(|p| format!("{}: {}", p.name, p.reason.as_deref().unwrap_or("NotReady")))
            .collect();
        DesiredCondition::new(
            condition::PROVIDERS_READY,
            ConditionStatus::False,
            "NoProviderReady",
            format!(
                "no provider of the failover chain is Ready ({})",
                reasons.join(", ")
            ),
        )
    };

    let (progressing, degraded, available) = match &rollout {
        None => (
            if inputs.unjudged_credentials.is_empty() {
                DesiredCondition::new(
                    condition::PROGRESSING,
                    ConditionStatus::True,
                    "Creating",
                    "creating the agent's Deployment",
                )
            } else {
                DesiredCondition::new(
                    condition::PROGRESSING,
                    ConditionStatus::True,
                    "WaitingForCredentialCheck",
                    format!(
                        "the Deployment is created once LLMProvider {} has accepted its \
                         credential (or judged it, 10 s after the agent's creation), so that its \
                         pods start with it",
                        inputs.unjudged_credentials.join(", ")
                    ),
                )
            },
            DesiredCondition::new(
                condition::DEGRADED,
                ConditionStatus::False,
                "AsExpected",
                "nothing is degraded",
            ),
            false,
        ),
        Some(r) => {
            let complete = r.observed
                && r.updated >= r.desired
                && r.ready >= r.desired
                && r.replicas <= r.desired;
            let progressing = if let Some(message) = &r.stuck {
                DesiredCondition::new(
                    condition::PROGRESSING,
                    ConditionStatus::False,
                    "RolloutStuck",
                    message.clone(),
                )
            } else if complete {
                DesiredCondition::new(
                    condition::PROGRESSING,
                    ConditionStatus::False,
                    "RolloutComplete",
                    format!(
                        "{} of {} pods run the current version",
                        r.updated, r.desired
                    ),
                )
            } else {
                DesiredCondition::new(
                    condition::PROGRESSING,
                    ConditionStatus::True,
                    "RolloutInProgress",
                    format!(
                        "{} of {} pods updated, {} ready",
                        r.updated, r.desired, r.ready
                    ),
                )
            };
            let degraded = if let Some(message) = &r.stuck {
                DesiredCondition::new(
                    condition::DEGRADED,
                    ConditionStatus::True,
                    "RolloutStuck",
                    message.clone(),
                )
            } else if let Some(problem) = inputs.pod_problems.first() {
                pod_problem_condition(problem, inputs.pod_problems.len() - 1)
            } else if active.is_none() && !inputs.chain.is_empty() {
                DesiredCondition::new(
                    condition::DEGRADED,
                    ConditionStatus::True,
                    providers_ready.reason,
                    providers_ready.message.clone(),
                )
            } else {
                DesiredCondition::new(
                    condition::DEGRADED,
                    ConditionStatus::False,
                    "AsExpected",
                    "nothing is degraded",
                )
            };
            (progressing, degraded, complete)
        }
    };

    let ready = if let Some(broken) = inputs.broken.first() {
        DesiredCondition::new(
            condition::READY,
            ConditionStatus::False,
            broken.reason(),
            broken.message(),
        )
    } else if providers_ready.status != ConditionStatus::True {
        DesiredCondition::new(
            condition::READY,
            ConditionStatus::False,
            providers_ready.reason,
            providers_ready.message.clone(),
        )
    } else if inputs.suspended && available {
        DesiredCondition::new(
            condition::READY,
            ConditionStatus::True,
            "Suspended",
            "scaled to zero by spec.suspend",
        )
    } else if available {
        let desired = rollout.as_ref().map(|r| r.desired).unwrap_or(0);
        DesiredCondition::new(
            condition::READY,
            ConditionStatus::True,
            "Available",
            format!("{desired} of {desired} pods ready"),
        )
    } else if degraded.status == ConditionStatus::True {
        DesiredCondition::new(
            condition::READY,
            ConditionStatus::False,
            degraded.reason,
            degraded.message.clone(),
        )
    } else {
        DesiredCondition::new(
            condition::READY,
            ConditionStatus::False,
            progressing.reason,
            progressing.message.clone(),
        )
    };

    let progress = agent_progress(inputs, &ready, &progressing, &degraded, &missing);
    let existing = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut desired_conditions = vec![ready, progressing, degraded, providers_ready];
    if let Some(budget) = inputs.budget {
        desired_conditions.push(budget.condition.clone());
    }
    desired_conditions.extend(progress.conditions());
    let conditions = merge_conditions(existing, &desired_conditions, inputs.generation, now);
    let (replicas, ready_replicas, updated_replicas, desired) = rollout
        .as_ref()
        .map(|r| (r.replicas, r.ready, r.updated, r.desired))
        .unwrap_or_default();
    AgentDeploymentStatus {
        conditions,
        observed_generation: inputs.generation,
        replicas,
        ready_replicas,
        updated_replicas,
        ready: Some(format!("{ready_replicas}/{desired}")),
        selector: Some(inputs.selector.clone()),
        active_provider: active,
        providers: inputs
            .chain
            .iter()
            .map(|p| ProviderState {
                name: p.name.clone(),
                model: p.model.clone(),
                ready: p.ready,
                reason: p.reason.clone(),
            })
            .collect(),
        budget: inputs.budget.and_then(|budget| {
            budget
                .status
                .clone()
                .map(Box::new)
                .or_else(|| previous.and_then(|p| p.budget.clone()))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::llm_provider::ProviderType;

    fn provider(name: &str, ready: bool, exists: bool) -> ResolvedProvider {
        ResolvedProvider {
            name: name.into(),
            provider_type: exists.then_some(ProviderType::OpenAI),
            endpoint: None,
            model: None,
            ready,
            reason: (!ready).then(|| {
                if exists {
                    "Unreachable".into()
                } else {
                    "NotFound".into()
                }
            }),
            credential: None,
            api: Default::default(),
        }
    }

    fn deployment(desired: i32, ready: i32, updated: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "generation": 2},
            "spec": {"replicas": desired, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": desired, "readyReplicas": ready, "updatedReplicas": updated}
        }))
        .expect("deployment")
    }

    fn status(
        chain: &[ResolvedProvider],
        broken: &[BrokenReference],
        deployment: Option<&Deployment>,
    ) -> AgentDeploymentStatus {
        status_at(
            chain,
            broken,
            deployment,
            Timestamp::from_second(1).expect("ts"),
        )
    }

    fn status_at(
        chain: &[ResolvedProvider],
        broken: &[BrokenReference],
        deployment: Option<&Deployment>,
        now: Timestamp,
    ) -> AgentDeploymentStatus {
        let inputs = StatusInputs {
            pod_problems: &[],
            generation: Some(1),
            chain,
            broken,
            deployment,
            unjudged_credentials: &[],
            suspended: false,
            selector: "s=a".into(),
            budget: None,
        };
        desired_status(None, &inputs, now)
    }

    #[test]
    fn a_status_computed_now_reads_back_from_the_api_unchanged() {
        // The watch returns what the API keeps, times to the second: a finer time would keep
        // the copy of the written status (`written_status`) for the agent's life.
        let d = deployment(1, 1, 1);
        let computed = status_at(
            &[provider("a", true, true)],
            &[],
            Some(&d),
            crate::api::conditions::now_to_the_second(),
        );
        assert!(!computed.conditions.is_empty());
        let read_back: AgentDeploymentStatus =
            serde_json::from_value(serde_json::to_value(&computed).expect("json")).expect("status");
        assert_eq!(read_back, computed);
    }

    fn reason(status: &AgentDeploymentStatus, type_: &str) -> (String, String) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn available_agent_with_ready_provider_is_ready() {
        let d = deployment(2, 2, 2);
        let s = status(&[provider("a", true, true)], &[], Some(&d));
        assert_eq!(reason(&s, "Ready"), ("True".into(), "Available".into()));
        assert_eq!(
            reason(&s, "Progressing"),
            ("False".into(), "RolloutComplete".into())
        );
        assert_eq!(s.ready.as_deref(), Some("2/2"));
        assert_eq!(s.active_provider.as_deref(), Some("a"));
    }

    #[test]
    fn active_provider_is_the_first_ready_one() {
        let d = deployment(1, 1, 1);
        let s = status(
            &[provider("a", false, true), provider("b", true, true)],
            &[],
            Some(&d),
        );
        assert_eq!(s.active_provider.as_deref(), Some("b"));
        assert_eq!(reason(&s, "ProvidersReady").1, "ProviderAvailable");
    }

    #[test]
    fn missing_provider_makes_ready_false_naming_it() {
        let d = deployment(1, 1, 1);
        let s = status(&[provider("ghost", false, false)], &[], Some(&d));
        assert_eq!(
            reason(&s, "Ready"),
            ("False".into(), "ProviderNotFound".into())
        );
        let message = &s.conditions[0].message;
        assert!(message.contains("ghost"), "{message}");
    }

    #[test]
    fn a_refused_child_makes_the_agent_not_ready_with_the_api_servers_words() {
        let d = deployment(1, 1, 1);
        let refused = [BrokenReference::ApplyFailed {
            kind: "Service",
            name: "support".into(),
            error: "exceeded quota: no-services, requested: services=1".into(),
        }];
        let s = status(&[provider("a", true, true)], &refused, Some(&d));
        assert_eq!(reason(&s, "Ready"), ("False".into(), "ApplyFailed".into()));
        let message = &s
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready")
            .message;
        assert!(
            message.contains("Service support") && message.contains("exceeded quota"),
            "{message}"
        );
    }

    #[test]
    fn no_ready_provider_degrades_but_keeps_running() {
        let d = deployment(1, 1, 1);
        let s = status(&[provider("a", false, true)], &[], Some(&d));
        assert_eq!(reason(&s, "Ready").1, "NoProviderReady");
        assert_eq!(
            reason(&s, "Degraded"),
            ("True".into(), "NoProviderReady".into())
        );
        assert_eq!(s.ready_replicas, 1);
    }

    #[test]
    fn broken_secret_reference_comes_first() {
        let d = deployment(1, 1, 1);
        let broken = [BrokenReference::SecretKeyNotFound {
            secret: "tools".into(),
            key: "token".into(),
        }];
        let s = status(&[provider("a", true, true)], &broken, Some(&d));
        assert_eq!(
            reason(&s, "Ready"),
            ("False".into(), "SecretKeyNotFound".into())
        );
    }

    fn abnormal(status: &AgentDeploymentStatus) -> Vec<(String, String)> {
        status
            .conditions
            .iter()
            .filter(|c| c.type_ == "Stalled" || c.type_ == "Reconciling")
            .map(|c| (c.type_.clone(), c.reason.clone()))
            .collect()
    }

    #[test]
    fn an_agent_reads_as_working_stalled_or_settled_as_kstatus_expects() {
        let pair = |t: &str, r: &str| vec![(t.to_string(), r.to_string())];
        let available = status(
            &[provider("a", true, true)],
            &[],
            Some(&deployment(1, 1, 1)),
        );
        assert!(abnormal(&available).is_empty(), "{available:?}");
        let rolling = status(
            &[provider("a", true, true)],
            &[],
            Some(&deployment(3, 1, 2)),
        );
        assert_eq!(abnormal(&rolling), pair("Reconciling", "RolloutInProgress"));
        let creating = status(&[provider("a", true, true)], &[], None);
        assert_eq!(abnormal(&creating), pair("Reconciling", "Creating"));
        let broken = [BrokenReference::SecretNotFound {
            secret: "tools".into(),
        }];
        let missing_secret = status(
            &[provider("a", true, true)],
            &broken,
            Some(&deployment(1, 1, 1)),
        );
        assert_eq!(abnormal(&missing_secret), pair("Stalled", "SecretNotFound"));
        let missing_provider = status(
            &[provider("a", false, false)],
            &[],
            Some(&deployment(1, 1, 1)),
        );
        assert_eq!(
            abnormal(&missing_provider),
            pair("Stalled", "ProviderNotFound")
        );
        let down = status(
            &[provider("a", false, true)],
            &[],
            Some(&deployment(1, 1, 1)),
        );
        assert!(
            !abnormal(&down).iter().any(|(t, _)| t == "Stalled"),
            "a provider that is down may recover by itself: {down:?}"
        );
        let crash_looping = status_with_pod(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{
                "name": "agent", "image": "a", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}
            }]}
        }));
        assert_eq!(
            abnormal(&crash_looping),
            pair("Stalled", "CrashLoopBackOff")
        );
    }

    #[test]
    fn an_agent_waits_for_its_providers_first_verdict_before_creating_pods_or_stalling() {
        // A provider not probed yet, and one not in the cache yet (applied together).
        for exists in [true, false] {
            let chain = [provider("a", false, exists)];
            let inputs = StatusInputs {
                pod_problems: &[],
                generation: Some(1),
                chain: &chain,
                broken: &[],
                deployment: None,
                unjudged_credentials: &["a".to_string()],
                suspended: false,
                selector: "s=a".into(),
                budget: None,
            };
            let s = desired_status(None, &inputs, Timestamp::from_second(1).expect("ts"));
            assert_eq!(
                reason(&s, "Progressing"),
                ("True".into(), "WaitingForCredentialCheck".into())
            );
            let waiting = (
                "Reconciling".to_string(),
                "WaitingForCredentialCheck".to_string(),
            );
            assert_eq!(abnormal(&s), vec![waiting], "provider exists: {exists}");
        }
    }

    #[test]
    fn rollout_in_progress_is_not_ready() {
        let d = deployment(3, 1, 2);
        let s = status(&[], &[], Some(&d));
        assert_eq!(
            reason(&s, "Ready"),
            ("False".into(), "RolloutInProgress".into())
        );
        assert_eq!(
            reason(&s, "Progressing"),
            ("True".into(), "RolloutInProgress".into())
        );
    }

    /// The status of a one-replica agent whose only pod is `pod`.
    fn status_with_pod(pod: serde_json::Value) -> AgentDeploymentStatus {
        let pod: CachedPod = serde_json::from_value(pod).expect("pod");
        let problems = pod_problems(&[&pod]);
        let d = deployment(1, 0, 1);
        let chain = [provider("a", true, true)];
        let inputs = StatusInputs {
            pod_problems: &problems,
            generation: Some(1),
            chain: &chain,
            broken: &[],
            deployment: Some(&d),
            unjudged_credentials: &[],
            suspended: false,
            selector: "s".into(),
            budget: None,
        };
        desired_status(None, &inputs, Timestamp::from_second(1).expect("ts"))
    }

    fn degraded_of(pod: serde_json::Value) -> (String, String) {
        let s = status_with_pod(pod);
        let degraded = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        (degraded.reason.clone(), degraded.message.clone())
    }

    #[test]
    fn crash_looping_pods_degrade_the_agent_and_name_the_pod() {
        let pod = serde_json::json!({
            "metadata": {"name": "support-abc"},
            "status": {"containerStatuses": [{
                "name": "agent", "image": "a", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}
            }]}
        });
        let s = status_with_pod(pod.clone());
        assert_eq!(
            reason(&s, "Ready"),
            ("False".into(), "CrashLoopBackOff".into())
        );
        let (reason, message) = degraded_of(pod);
        assert_eq!(reason, "CrashLoopBackOff");
        assert!(
            message.contains("support-abc") && message.contains("back-off 40s"),
            "{message}"
        );
    }

    #[test]
    fn a_router_sidecar_that_cannot_start_degrades_the_agent() {
        let (reason, message) = degraded_of(serde_json::json!({
            "metadata": {"name": "support-abc"},
            "status": {
                "initContainerStatuses": [{
                    "name": "llm-router", "image": "op", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}
                }],
                "containerStatuses": [{
                    "name": "agent", "image": "a", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}
                }]
            }
        }));
        assert_eq!(reason, "ImagePullError");
        assert!(message.contains("llm-router"), "{message}");
    }

    #[test]
    fn an_image_the_kubelet_cannot_verify_as_non_root_names_the_field_to_set() {
        let (reason, message) = degraded_of(serde_json::json!({
            "metadata": {"name": "support-abc"},
            "status": {"containerStatuses": [{
                "name": "agent", "image": "a", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": "container has runAsNonRoot and image will run as root (pod: \"support-abc\")"
                }}
            }]}
        }));
        assert_eq!(reason, "RunAsNonRootUnverifiable");
        assert!(message.contains("spec.security.runAsUser"), "{message}");
    }

    #[test]
    fn containers_being_created_are_not_problems() {
        let pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{
                "name": "agent", "image": "a", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]}
        }))
        .expect("pod");
        assert!(pod_problems(&[&pod]).is_empty());
    }

    #[test]
    fn a_rollout_past_its_deadline_is_degraded() {
        let mut d = deployment(2, 1, 1);
        d.status.as_mut().expect("status").conditions = Some(vec![
            serde_json::from_value(serde_json::json!({
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"a-1\" has timed out progressing."
            }))
            .expect("condition"),
        ]);
        let s = status(&[], &[], Some(&d));
        assert_eq!(
            reason(&s, "Degraded"),
            ("True".into(), "RolloutStuck".into())
        );
        assert_eq!(
            reason(&s, "Progressing"),
            ("False".into(), "RolloutStuck".into())
        );
        assert_eq!(reason(&s, "Ready"), ("False".into(), "RolloutStuck".into()));
    }

    #[test]
    fn recomputing_an_unchanged_status_is_identical() {
        let d = deployment(1, 1, 1);
        let chain = [provider("a", true, true)];
        let inputs = StatusInputs {
            pod_problems: &[],
            generation: Some(1),
            chain: &chain,
            broken: &[],
            deployment: Some(&d),
            unjudged_credentials: &[],
            suspended: false,
            selector: "s".into(),
            budget: None,
        };
        let first = desired_status(None, &inputs, Timestamp::from_second(1).expect("ts"));
        let second = desired_status(
            Some(&first),
            &inputs,
            Timestamp::from_second(99).expect("ts"),
        );
        assert_eq!(first, second);
    }
}
