//! Events, as upstream's controllers record them (type, reason, message), published as
//! events.k8s.io/v1 Events by kube's recorder. As upstream's EventBroadcaster, recording
//! never blocks a sync: events go through a bounded queue to a background task, and are
//! dropped (and logged) when it is full. As upstream's EventCorrelator spam filter, each
//! object may emit a burst of 25 events, then one per 5 minutes; the rest are dropped. A
//! failure to publish is logged.
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
pub use kube::runtime::events::EventType;
use kube::runtime::events::{Event, Recorder, Reporter};
use tokio::sync::mpsc;

/// upstream's EventBroadcaster queue length (maxQueuedEvents).
const QUEUE: usize = 1000;
/// upstream's EventSourceObjectSpamFilter: defaultSpamBurst and 1/defaultSpamQPS.
const SPAM_BURST: u32 = 25;
const SPAM_PERIOD: std::time::Duration = std::time::Duration::from_secs(300);

/// upstream getSpamKey: the event source and the object, not the reason or message.
fn spam_key(component: &str, o: &ObjectReference) -> String {
    format!(
        "{component}/{}/{}/{}/{}/{}",
        o.kind.as_deref().unwrap_or_default(),
        o.namespace.as_deref().unwrap_or_default(),
        o.name.as_deref().unwrap_or_default(),
        o.uid.as_deref().unwrap_or_default(),
        o.api_version.as_deref().unwrap_or_default(),
    )
}

#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventRecorder {
    /// `component` as upstream names its controllers' event sources (`deployment-controller`);
    /// the reporting instance is the pod's `HOSTNAME`.
    /// Must be called inside the runtime: it starts the publishing task.
    pub fn new(client: Client, component: &str) -> Self {
        Self::with_instance(client, component, std::env::var("HOSTNAME").ok())
    }

    /// As [`new`](Self::new), with the reporting instance named (the kubelet's is its node).
    pub fn with_instance(client: Client, component: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: component.into(),
            instance,
        };
        let recorder = Recorder::new(client, reporter);
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(QUEUE);
        let quota = governor::Quota::with_period(SPAM_PERIOD)
            .expect("a non-zero period")
            .allow_burst(std::num::NonZeroU32::new(SPAM_BURST).expect("a non-zero burst"));
        let spam_filter = governor::RateLimiter::<String, _, _>::keyed(quota);
        let component = component.to_string();
        tokio::spawn(async move {
            while let Some((object, event)) = rx.recv().await {
                if spam_filter
                    .check_key(&spam_key(&component, &object))
                    .is_err()
                {
                    tracing::debug!(object = ?object.name, reason = %event.reason, "event dropped by the spam filter");
                    continue;
                }
                if let Err(e) = recorder.publish(&event, &object).await {
                    tracing::warn!(object = ?object.name, reason = %event.reason, error = %e, "recording event");
                }
            }
        });
        EventRecorder { tx }
    }

    pub async fn normal(&self, object: &ObjectReference, reason: &str, message: String) {
        self.record(object, EventType::Normal, reason, message)
    }

    pub async fn warning(&self, object: &ObjectReference, reason: &str, message: String) {
        self.record(object, EventType::Warning, reason, message)
    }

    /// Queues an event without waiting (what `normal` and `warning` do); a message longer
    /// than an events.k8s.io note may be is cut ([`truncate_note`]).
    pub fn record(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate_note(message)),
            action: reason.into(),
            secondary: None,
        };
        if self.tx.try_send((object.clone(), event)).is_err() {
            tracing::warn!(object = ?object.name, reason, "event queue full; event dropped");
        }
    }
}

/// events.k8s.io/v1's limit on an Event's note (the apiserver's `NoteLengthLimit`, bytes).
pub const NOTE_LENGTH_LIMIT: usize = 1024;

/// `message` cut to [`NOTE_LENGTH_LIMIT`] bytes at a character boundary, ending in `...`
/// when cut: the apiserver refuses a longer note, and the event would be lost whole (the
/// kubelet's core/v1 events have no such limit; its long messages, such as a pod's
/// aggregated volume errors, stay readable this way).
pub fn truncate_note(message: String) -> String {
    if message.len() <= NOTE_LENGTH_LIMIT {
        return message;
    }
    let mut end = NOTE_LENGTH_LIMIT - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_note("short".into()), "short");
        let exact = "a".repeat(NOTE_LENGTH_LIMIT);
        assert_eq!(truncate_note(exact.clone()), exact);
        let long = "é".repeat(NOTE_LENGTH_LIMIT);
        let cut = truncate_note(long);
        assert!(cut.len() <= NOTE_LENGTH_LIMIT, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert!(cut.trim_end_matches("...").chars().all(|c| c == 'é'));
    }
}
