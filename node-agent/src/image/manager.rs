//! The image manager the runtime calls before creating a container: upstream's
//! `EnsureImageExists` (pkg/kubelet/images/image_manager.go) over the [`Store`], the
//! puller and the pure decisions of [`super::policy`]. It returns what the container
//! status needs (imageID, or the waiting reason and message) and the events upstream
//! would record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::credentials::RegistryCredential;
use super::policy::{
    self, Backoff, EVENT_BACK_OFF, EVENT_FAILED, EVENT_INSPECT_FAILED, EVENT_NEVER_PULL,
    EVENT_PULLED, EVENT_PULLING, ImageReason, Precheck, PullPolicy,
};
use super::pull::pull_image;
use super::reference::Reference;
use super::store::{Image, Store};

/// The time source for backoff (a fake one in tests).
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// An event to record on the pod (type Normal unless `warning`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The image is there: what the container status reports.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub image: Image,
    /// containerStatuses.imageID.
    pub image_ref: String,
    pub events: Vec<ImageEvent>,
}

/// The container waits: reason (ErrImagePull, ImagePullBackOff, ErrImageNeverPull, …)
/// and upstream's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct EnsureError {
    pub reason: ImageReason,
    pub message: String,
    pub events: Vec<ImageEvent>,
}

struct State {
    backoff: Backoff,
    /// upstream `prevPullErrMsg`: the last failure per backoff key.
    prev_pull_err: HashMap<String, String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            backoff: policy::image_backoff(),
            prev_pull_err: HashMap::new(),
        }
    }
}

/// Pull policy, backoff and pulls for one node.
pub struct ImageManager {
    store: Store,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl ImageManager {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes sure the container's `image` is present as `policy` requires.
    pub async fn ensure_image_exists(
        &self,
        pod_uid: &str,
        image: &str,
        policy: PullPolicy,
        credentials: &[RegistryCredential],
    ) -> Result<Ensured, EnsureError> {
        let fail = |reason, message: String, warning, event: &'static str| EnsureError {
            reason,
            events: vec![ImageEvent {
                warning,
                reason: event,
                message: message.clone(),
            }],
            message,
        };
        let reference = Reference::parse(image).map_err(|e| {
            fail(
                ImageReason::InvalidImageName,
                policy::msg_invalid_name(image, &e.to_string()),
                true,
                EVENT_INSPECT_FAILED,
            )
        })?;
        let present = self.store.get(&reference).map_err(|e| {
            fail(
                ImageReason::ImageInspectError,
                format!("Failed to inspect image {image:?}: {e}"),
                true,
                EVENT_INSPECT_FAILED,
            )
        })?;
        match (
            policy::image_pull_precheck(policy, present.is_some()),
            present,
        ) {
            (Precheck::UsePresent, Some(found)) => {
                let _ = self.store.touch(&found.id, SystemTime::now());
                return Ok(Ensured {
                    image_ref: found.image_ref(),
                    image: found,
                    events: vec![ImageEvent {
                        warning: false,
                        reason: EVENT_PULLED,
                        message: policy::msg_already_present(image),
                    }],
                });
            }
            (Precheck::NeverPullAbsent, _) | (Precheck::UsePresent, None) => {
                return Err(fail(
                    ImageReason::ErrImageNeverPull,
                    policy::msg_never_pull(image),
                    true,
                    EVENT_NEVER_PULL,
                ));
            }
            (Precheck::Pull, _) => {}
        }

        let key = policy::backoff_key(pod_uid, image);
        {
            let mut state = self.state.lock().expect("image manager state");
            if state
                .backoff
                .is_in_back_off_since_update(&key, self.clock.now())
            {
                let message =
                    policy::msg_back_off(image, state.prev_pull_err.get(&key).map(String::as_str));
                return Err(EnsureError {
                    reason: ImageReason::ImagePullBackOff,
                    events: vec![ImageEvent {
                        warning: false,
                        reason: EVENT_BACK_OFF,
                        message: policy::msg_back_off(image, None),
                    }],
                    message,
                });
            }
            state.prev_pull_err.remove(&key);
        }
        let mut events = vec![ImageEvent {
            warning: false,
            reason: EVENT_PULLING,
            message: policy::msg_pulling(image),
        }];
        let started = Instant::now();
        match pull_image(&self.store, &reference, credentials).await {
            Ok(pulled) => {
                events.push(ImageEvent {
                    warning: false,
                    reason: EVENT_PULLED,
                    message: policy::msg_pulled(image, started.elapsed(), pulled.size),
                });
                self.state
                    .lock()
                    .expect("image manager state")
                    .backoff
                    .gc(self.clock.now());
                Ok(Ensured {
                    image_ref: pulled.image_ref(),
                    image: pulled,
                    events,
                })
            }
            Err(e) => {
                let message = e.to_string();
                events.push(ImageEvent {
                    warning: true,
                    reason: EVENT_FAILED,
                    message: policy::msg_failed_to_pull(image, &message),
                });
                let mut state = self.state.lock().expect("image manager state");
                let now = self.clock.now();
                state.backoff.next(&key, now, now);
                state.prev_pull_err.insert(
                    key,
                    policy::previous_pull_error(ImageReason::ErrImagePull, &message),
                );
                Err(EnsureError {
                    reason: ImageReason::ErrImagePull,
                    message,
                    events,
                })
            }
        }
    }
}
