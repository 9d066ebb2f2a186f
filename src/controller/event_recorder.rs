//! Publishes Kubernetes Events (`events.k8s.io/v1`) about the operator's objects. A repeat of
//! an event within a few minutes joins the first one's series (its count and last time are
//! patched), as client-go's recorder does, instead of adding an Event per occurrence.
//!
//! Of each recent event only what a repeat needs is kept: its key, its name and its count.
//! kube-runtime's `Recorder` keeps each whole Event for the window, in a table that never
//! shrinks and is swept on every publish: 2.95 MiB after 1,000 agents had each announced that
//! they were available (`docs/benchmarks.md`).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::resources::names::DNS_SUBDOMAIN_MAX;

/// How long after its last occurrence a repeat still joins an event's series: client-go's
/// and kube-runtime's window.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often events older than the window are swept from memory: amortised over publishes,
/// where a sweep per publish would cost a pass over every recent event each time.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(1);
/// The API rejects a longer note (`events.k8s.io/v1` validation counts bytes).
const NOTE_MAX_BYTES: usize = 1024;
/// Below one event in this many buckets, the table gives its room back.
const SPARSE: usize = 8;
/// A table this small is kept as it is.
const SMALL: usize = 64;

/// One occurrence of something a person should know about an object.
pub struct Occurrence<'a> {
    pub warning: bool,
    /// A stable CamelCase reason, as in the object's conditions.
    pub reason: &'a str,
    /// What the operator was doing (`Reconcile`).
    pub action: &'a str,
    pub note: String,
}

pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    recent: Mutex<RecentEvents>,
}

/// Who writes the events.
struct Reporter {
    /// `reportingController`: which controller.
    controller: String,
    /// `reportingInstance`: which replica of it (the pod's name when it has one).
    instance: String,
}

impl EventRecorder {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            reporter: Reporter {
                controller: controller.to_string(),
                instance: instance.unwrap_or_else(|| controller.to_string()),
            },
            recent: Mutex::default(),
        }
    }

    /// Creates the Event, or counts a repeat into the series of the one created for the same
    /// object, type, action and reason within the window. The note of a repeat is not sent:
    /// a series keeps its first note, as client-go's do.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        occurrence: Occurrence<'_>,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events = Api::<Event>::namespaced(self.client.clone(), namespace);
        let key = EventKey::of(regarding, &occurrence);
        let now = Timestamp::now();
        let seen = self.lock().seen(&key, now);
        if let Some(Repeat { name, count }) = seen {
            let series = json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(now),
            }});
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(series))
                .await
            {
                Ok(_) => return Ok(()),
                // Gone before its series ended (the API server's event TTL, or deleted): the
                // occurrence starts a new Event.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => return Err(error),
            }
        }
        let event = event_for(&self.reporter, regarding, &occurrence, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &event).await?;
        self.lock().created(key, name, now);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentEvents> {
        // The table holds no invariant a panic could break halfway: use it as it is.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new Event of `occurrence` about `regarding`.
fn event_for(
    reporter: &Reporter,
    regarding: &ObjectReference,
    occurrence: &Occurrence,
    now: Timestamp,
) -> Event {
    let object = regarding.name.as_deref().unwrap_or(&reporter.controller);
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(object, now)),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(
            if occurrence.warning {
                "Warning"
            } else {
                "Normal"
            }
            .to_string(),
        ),
        reason: Some(occurrence.reason.to_string()),
        action: Some(occurrence.action.to_string()),
        note: Some(within_bytes(&occurrence.note, NOTE_MAX_BYTES).to_string()),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone()),
        ..Event::default()
    }
}

/// client-go's naming: the object's name and the time, unique per occurrence. A name is a DNS
/// subdomain of at most 253 characters, so the object's part of a long one is cut.
fn event_name(object: &str, now: Timestamp) -> String {
    let suffix = format!(".{:x}", now.as_nanosecond());
    let room = DNS_SUBDOMAIN_MAX - suffix.len();
    let object = within_bytes(object, room).trim_end_matches(['.', '-']);
    format!("{object}{suffix}")
}

/// What makes two occurrences one series: the object (by UID, so a recreated object starts
/// afresh), the type, the action and the reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey(Box<str>);

impl EventKey {
    fn of(regarding: &ObjectReference, occurrence: &Occurrence) -> Self {
        let object = match &regarding.uid {
            Some(uid) => uid.clone(),
            None => format!(
                "{}/{}/{}",
                regarding.kind.as_deref().unwrap_or_default(),
                regarding.namespace.as_deref().unwrap_or_default(),
                regarding.name.as_deref().unwrap_or_default()
            ),
        };
        Self(
            format!(
                "{object} {} {} {}",
                occurrence.warning, occurrence.action, occurrence.reason
            )
            .into(),
        )
    }
}

/// A repeat to count: the Event's name and the series' new count.
#[derive(Debug, PartialEq)]
struct Repeat {
    name: String,
    count: i32,
}

struct Recent {
    name: Box<str>,
    /// Occurrences so far, the first included.
    count: i32,
    last: Timestamp,
}

/// The events published within the window.
#[derive(Default)]
struct RecentEvents {
    by_key: HashMap<EventKey, Recent>,
    swept: Option<Timestamp>,
}

impl RecentEvents {
    /// Counts an occurrence of `key` at `now`: a repeat when its event is recent, else `None`
    /// and the caller creates one.
    fn seen(&mut self, key: &EventKey, now: Timestamp) -> Option<Repeat> {
        self.sweep(now);
        let recent = self
            .by_key
            .get_mut(key)
            .filter(|recent| recent.last + SERIES_WINDOW > now)?;
        recent.count = recent.count.saturating_add(1);
        recent.last = now;
        Some(Repeat {
            name: recent.name.to_string(),
            count: recent.count,
        })
    }

    /// Remembers the Event just created for `key`.
    fn created(&mut self, key: EventKey, name: String, now: Timestamp) {
        let recent = Recent {
            name: name.into(),
            count: 1,
            last: now,
        };
        self.by_key.insert(key, recent);
    }

    /// Forgets events whose window has passed, at most once per `SWEEP_EVERY`, and gives the
    /// table's room back once it is mostly empty (the shrinks at least halve it, so their cost
    /// spread over the insertions stays constant).
    fn sweep(&mut self, now: Timestamp) {
        if self.swept.is_some_and(|swept| swept + SWEEP_EVERY > now) {
            return;
        }
        self.swept = Some(now);
        self.by_key
            .retain(|_, recent| recent.last + SERIES_WINDOW > now);
        if self.by_key.capacity() > SMALL && self.by_key.len() < self.by_key.capacity() / SPARSE {
            self.by_key.shrink_to_fit();
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn within_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("agentoperator.dev/v1alpha1".into()),
            kind: Some("AgentDeployment".into()),
            name: Some("support".into()),
            namespace: Some("team".into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    fn occurrence(reason: &str) -> Occurrence<'_> {
        Occurrence {
            warning: false,
            reason,
            action: "Reconcile",
            note: "the agent is available".into(),
        }
    }

    fn key(uid: &str, reason: &str) -> EventKey {
        EventKey::of(&reference(uid), &occurrence(reason))
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    #[test]
    fn a_repeat_within_the_window_joins_the_series_and_one_after_it_starts_anew() {
        let mut recent = RecentEvents::default();
        let available = key("uid-1", "Available");
        assert_eq!(recent.seen(&available, at(0)), None);
        recent.created(available.clone(), "support.1".into(), at(0));

        let repeat = |count| {
            Some(Repeat {
                name: "support.1".into(),
                count,
            })
        };
        assert_eq!(recent.seen(&available, at(60)), repeat(2));
        // The window runs from the last occurrence, not the first.
        assert_eq!(recent.seen(&available, at(60 + 359)), repeat(3));
        assert_eq!(recent.seen(&available, at(60 + 359 + 360)), None);
    }

    #[test]
    fn another_reason_type_or_object_is_another_event() {
        let mut recent = RecentEvents::default();
        recent.created(key("uid-1", "Available"), "support.1".into(), at(0));
        assert_eq!(recent.seen(&key("uid-1", "ProviderFailover"), at(1)), None);
        assert_eq!(recent.seen(&key("uid-2", "Available"), at(1)), None);
        let warning = Occurrence {
            warning: true,
            ..occurrence("Available")
        };
        assert_eq!(
            recent.seen(&EventKey::of(&reference("uid-1"), &warning), at(1)),
            None
        );
    }

    #[test]
    fn events_past_the_window_are_swept_and_the_table_shrinks() {
        let mut recent = RecentEvents::default();
        for i in 0..5_000 {
            recent.created(
                key(&format!("uid-{i}"), "Available"),
                format!("a.{i}"),
                at(0),
            );
        }
        let grown = recent.by_key.capacity();
        // Within a minute of the last sweep nothing is swept, however old.
        recent.swept = Some(at(SERIES_WINDOW.as_secs() + 30));
        recent.seen(&key("uid-x", "Available"), at(SERIES_WINDOW.as_secs() + 60));
        assert_eq!(recent.by_key.len(), 5_000);

        recent.seen(
            &key("uid-x", "Available"),
            at(SERIES_WINDOW.as_secs() + 120),
        );
        assert!(recent.by_key.is_empty());
        assert!(
            recent.by_key.capacity() < grown / SPARSE,
            "the room is given back"
        );
    }

    #[test]
    fn an_event_of_an_object_with_a_long_name_has_a_valid_name() {
        assert_eq!(
            event_name("support", at(0)),
            format!("support.{:x}", at(0).as_nanosecond())
        );
        let long = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        let name = event_name(&long, at(0));
        assert_eq!(name.len(), 253 - 1, "{name}");
        assert!(name.starts_with(&"a".repeat(235)));
        // The cut fell after a dash, which may not end a name's part: it goes too.
        assert!(!name.contains("-."), "{name}");
    }

    #[test]
    fn a_long_note_is_cut_at_a_character_boundary_within_the_limit() {
        assert_eq!(within_bytes("short", NOTE_MAX_BYTES), "short");
        let long = "é".repeat(NOTE_MAX_BYTES);
        let cut = within_bytes(&long, NOTE_MAX_BYTES);
        assert_eq!(cut.len(), NOTE_MAX_BYTES);
        let odd = format!("a{long}");
        assert_eq!(within_bytes(&odd, NOTE_MAX_BYTES).len(), NOTE_MAX_BYTES - 1);
    }

    #[test]
    fn an_event_names_its_object_and_reporter_and_keeps_its_note_within_the_limit() {
        let reporter = Reporter {
            controller: "agent-operator".into(),
            instance: "agent-operator-7d9f".into(),
        };
        let warning = Occurrence {
            warning: true,
            note: "x".repeat(5000),
            ..occurrence("ProviderFailover")
        };
        let event = event_for(&reporter, &reference("uid-1"), &warning, at(0));
        let name = event.metadata.name.as_deref().unwrap_or_default();
        assert!(name.starts_with("support."), "{name}");
        assert_eq!(event.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some("ProviderFailover"));
        assert_eq!(event.action.as_deref(), Some("Reconcile"));
        assert_eq!(event.note.map(|n| n.len()), Some(NOTE_MAX_BYTES));
        assert_eq!(event.regarding, Some(reference("uid-1")));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("agent-operator")
        );
        assert_eq!(
            event.reporting_instance.as_deref(),
            Some("agent-operator-7d9f")
        );
        assert_eq!(event.event_time, Some(MicroTime(at(0))));
        assert_eq!(event.series, None);
    }
}
