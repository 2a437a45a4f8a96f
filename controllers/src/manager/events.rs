//! Events, as upstream's controllers record them (type, reason, message), published as
//! events.k8s.io/v1 Events by kube's recorder. A failure to record is logged, never fatal.
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

#[derive(Clone)]
pub struct EventRecorder {
    recorder: Recorder,
}

impl EventRecorder {
    /// `component` as upstream names its controllers' event sources (`deployment-controller`).
    pub fn new(client: Client, component: &str) -> Self {
        let reporter = Reporter {
            controller: component.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        EventRecorder {
            recorder: Recorder::new(client, reporter),
        }
    }

    pub async fn normal(&self, object: &ObjectReference, reason: &str, message: String) {
        self.publish(object, EventType::Normal, reason, message)
            .await
    }

    pub async fn warning(&self, object: &ObjectReference, reason: &str, message: String) {
        self.publish(object, EventType::Warning, reason, message)
            .await
    }

    async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(message),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(object = ?object.name, reason, error = %e, "recording event");
        }
    }
}
