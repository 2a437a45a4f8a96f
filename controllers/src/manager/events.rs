//! Events, as upstream's controllers record them (type, reason, message), published as
//! events.k8s.io/v1 Events by kube's recorder. As upstream's EventBroadcaster, recording
//! never blocks a sync: events go through a bounded queue to a background task, and are
//! dropped (and counted in the log) when it is full. A failure to publish is logged.
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

/// upstream's EventBroadcaster queue length (maxQueuedEvents).
const QUEUE: usize = 1000;

#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventRecorder {
    /// `component` as upstream names its controllers' event sources (`deployment-controller`).
    /// Must be called inside the runtime: it starts the publishing task.
    pub fn new(client: Client, component: &str) -> Self {
        let reporter = Reporter {
            controller: component.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        let recorder = Recorder::new(client, reporter);
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(QUEUE);
        tokio::spawn(async move {
            while let Some((object, event)) = rx.recv().await {
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

    fn record(&self, object: &ObjectReference, type_: EventType, reason: &str, message: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(message),
            action: reason.into(),
            secondary: None,
        };
        if self.tx.try_send((object.clone(), event)).is_err() {
            tracing::warn!(object = ?object.name, reason, "event queue full; event dropped");
        }
    }
}
