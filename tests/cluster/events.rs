//! The operator's Event recorder against the real API server: what it creates passes the
//! `events.k8s.io/v1` validation, repeats become one Event's series, and an Event gone before
//! its series ended is created again.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use agent_operator::controller::event_recorder::{EventRecorder, Occurrence};

use crate::support::{self, TestNamespace};

fn occurrence<'a>(reason: &'a str, note: &str) -> Occurrence<'a> {
    Occurrence {
        warning: reason != "Available",
        reason,
        action: "Reconcile",
        note: note.to_string(),
    }
}

async fn events_about(ns: &TestNamespace, reason: &str) -> Vec<Event> {
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("list events");
    events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test]
async fn repeats_join_one_events_series_and_a_deleted_event_is_created_again() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "event-series").await;
    let object: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "support"}})).expect("config map");
    let object = ns
        .api::<ConfigMap>()
        .create(&PostParams::default(), &object)
        .await
        .expect("create the object the events are about");
    let regarding = object.object_ref(&());
    let recorder = EventRecorder::new(client.clone(), "agent-operator", Some("replica-1".into()));

    // A note longer than the API accepts is cut, not rejected.
    let long_note = format!("first: {}", "x".repeat(2000));
    for note in [long_note.as_str(), "second", "third"] {
        recorder
            .publish(&regarding, occurrence("ProviderFailover", note))
            .await
            .expect("publish");
    }
    recorder
        .publish(&regarding, occurrence("Available", "available"))
        .await
        .expect("publish another reason");

    let failovers = events_about(&ns, "ProviderFailover").await;
    assert_eq!(
        failovers.len(),
        1,
        "three occurrences, one Event: {failovers:?}"
    );
    let failover = &failovers[0];
    let series = failover.series.as_ref().expect("a series");
    assert_eq!(series.count, 3);
    assert!(series.last_observed_time.0 >= failover.event_time.as_ref().expect("time").0);
    let note = failover.note.as_deref().unwrap_or_default();
    assert!(
        note.starts_with("first: ") && note.len() == 1024,
        "{}",
        note.len()
    );
    assert_eq!(failover.type_.as_deref(), Some("Warning"));
    assert_eq!(
        failover.regarding.as_ref().and_then(|r| r.uid.clone()),
        object.metadata.uid
    );
    assert_eq!(
        failover.reporting_controller.as_deref(),
        Some("agent-operator")
    );
    assert_eq!(failover.reporting_instance.as_deref(), Some("replica-1"));

    let available = events_about(&ns, "Available").await;
    assert_eq!(available.len(), 1);
    assert_eq!(available[0].series, None);
    assert_eq!(available[0].type_.as_deref(), Some("Normal"));

    // The Event goes before its series ends: the next occurrence starts a new one.
    let name = failover.metadata.name.clone().expect("name");
    ns.api::<Event>()
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete the event");
    recorder
        .publish(&regarding, occurrence("ProviderFailover", "after"))
        .await
        .expect("publish after the delete");
    let failovers = events_about(&ns, "ProviderFailover").await;
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    assert_ne!(failovers[0].metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(failovers[0].note.as_deref(), Some("after"));
    assert_eq!(failovers[0].series, None);

    // An object whose name is as long as names go still gets its Event.
    let long_name = format!("{}-{}", "a".repeat(235), "b".repeat(17));
    let long: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": long_name}})).expect("config map");
    let long = ns
        .api::<ConfigMap>()
        .create(&PostParams::default(), &long)
        .await
        .expect("create the object with the longest name");
    recorder
        .publish(&long.object_ref(&()), occurrence("Degraded", "long"))
        .await
        .expect("publish about the object with the longest name");
    assert_eq!(events_about(&ns, "Degraded").await.len(), 1);
}
