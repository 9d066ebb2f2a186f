//! Counts of objects by kind and condition, and of tasks by phase, taken from the controllers'
//! watch caches when Prometheus scrapes. Counting at scrape time cannot drift the way gauges
//! kept up to date by each reconcile would after a restart or a missed transition.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// What the census needs of one object.
pub struct ObjectFacts {
    pub kind: &'static str,
    pub conditions: Vec<(String, String)>,
    /// AgentTasks only.
    pub phase: Option<String>,
}

impl ObjectFacts {
    pub fn new(kind: &'static str, conditions: &[Condition], phase: Option<String>) -> Self {
        Self {
            kind,
            conditions: conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
            phase,
        }
    }
}

type Source = Box<dyn Fn() -> Vec<ObjectFacts> + Send + Sync>;

/// The registered caches, by a key naming controller and scope.
#[derive(Default)]
pub struct Census {
    sources: Mutex<HashMap<String, Source>>,
}

impl Census {
    /// Counts what `source` returns until the returned guard drops (the controller stopped).
    pub fn register(
        self: &Arc<Self>,
        key: String,
        source: impl Fn() -> Vec<ObjectFacts> + Send + Sync + 'static,
    ) -> CensusGuard {
        if let Ok(mut sources) = self.sources.lock() {
            sources.insert(key.clone(), Box::new(source));
        }
        CensusGuard {
            census: self.clone(),
            key,
        }
    }

    /// (kind, condition, status) → count, and phase → count.
    fn count(&self) -> (BTreeMap<[String; 3], i64>, BTreeMap<String, i64>) {
        let mut by_condition = BTreeMap::new();
        let mut by_phase = BTreeMap::new();
        let Ok(sources) = self.sources.lock() else {
            return (by_condition, by_phase);
        };
        for facts in sources.values().flat_map(|source| source()) {
            for (type_, status) in facts.conditions {
                *by_condition
                    .entry([facts.kind.to_string(), type_, status])
                    .or_insert(0) += 1;
            }
            if let Some(phase) = facts.phase {
                *by_phase.entry(phase).or_insert(0) += 1;
            }
        }
        (by_condition, by_phase)
    }
}

pub struct CensusGuard {
    census: Arc<Census>,
    key: String,
}

impl Drop for CensusGuard {
    fn drop(&mut self) {
        if let Ok(mut sources) = self.census.sources.lock() {
            sources.remove(&self.key);
        }
    }
}

/// The Prometheus side of the census: fresh gauges at every scrape.
pub struct CensusCollector {
    census: Arc<Census>,
    objects: IntGaugeVec,
    tasks: IntGaugeVec,
}

impl CensusCollector {
    pub fn new(census: Arc<Census>) -> Result<Self, prometheus::Error> {
        let (objects, tasks) = gauges()?;
        Ok(Self {
            census,
            objects,
            tasks,
        })
    }
}

fn gauges() -> Result<(IntGaugeVec, IntGaugeVec), prometheus::Error> {
    Ok((
        IntGaugeVec::new(
            Opts::new(
                "agent_operator_objects",
                "Objects the operator watches, by kind and by the status of each condition type.",
            ),
            &["kind", "condition", "status"],
        )?,
        IntGaugeVec::new(
            Opts::new("agent_operator_tasks", "AgentTasks by phase."),
            &["phase"],
        )?,
    ))
}

impl Collector for CensusCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.objects
            .desc()
            .into_iter()
            .chain(self.tasks.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok((objects, tasks)) = gauges() else {
            return Vec::new();
        };
        let (by_condition, by_phase) = self.census.count();
        for ([kind, condition, status], count) in by_condition {
            objects
                .with_label_values(&[kind.as_str(), condition.as_str(), status.as_str()])
                .set(count);
        }
        for (phase, count) in by_phase {
            tasks.with_label_values(&[phase.as_str()]).set(count);
        }
        objects
            .collect()
            .into_iter()
            .chain(tasks.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str) -> Condition {
        serde_json::from_value(serde_json::json!({
            "type": type_, "status": status, "reason": "R", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }))
        .expect("a condition")
    }

    #[test]
    fn counts_by_condition_and_phase_while_registered() {
        let census = Arc::new(Census::default());
        let guard = census.register("tasks".into(), || {
            vec![
                ObjectFacts::new(
                    "AgentTask",
                    &[condition("Complete", "True")],
                    Some("Succeeded".into()),
                ),
                ObjectFacts::new(
                    "AgentTask",
                    &[condition("Complete", "False")],
                    Some("Running".into()),
                ),
                ObjectFacts::new(
                    "AgentTask",
                    &[condition("Complete", "True")],
                    Some("Succeeded".into()),
                ),
            ]
        });
        let (by_condition, by_phase) = census.count();
        assert_eq!(
            by_condition[&["AgentTask".to_string(), "Complete".into(), "True".into()]],
            2
        );
        assert_eq!(by_phase["Running"], 1);
        drop(guard);
        assert!(
            census.count().0.is_empty(),
            "a stopped controller is not counted"
        );
    }
}
