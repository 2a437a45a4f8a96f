//! Pure image-pull decisions, as upstream's pkg/kubelet/images/image_manager.go makes
//! them: the pull policy (`imagePullPrecheck`, `shouldPullImage`), the per pod+image
//! pull backoff (client-go's `flowcontrol.Backoff` as the kubelet configures it: 10 s
//! doubling to 300 s, no jitter), and the waiting reasons and messages upstream writes
//! into containerStatuses and events, verbatim.
//!
//! Time is a parameter (`now`), so every decision is table-testable.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::reference::{DEFAULT_TAG, Reference};

/// The kubelet's image pull backoff: initial period and cap (pkg/kubelet: `backOffPeriod`,
/// `MaxContainerBackOff`).
pub const IMAGE_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const IMAGE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Why a policy string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown imagePullPolicy {0:?}: expected Always, IfNotPresent or Never")]
    UnknownPolicy(String),
}

/// `spec.containers[].imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The apiserver's default: Always for `:latest` (or no tag), else IfNotPresent
    /// (a digest counts as a tag that is not latest).
    pub fn default_for(image: &Reference) -> Self {
        if image.digest().is_none() && image.tag().is_none_or(|t| t == DEFAULT_TAG) {
            Self::Always
        } else {
            Self::IfNotPresent
        }
    }
}

impl FromStr for PullPolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Always" => Ok(Self::Always),
            "IfNotPresent" => Ok(Self::IfNotPresent),
            "Never" => Ok(Self::Never),
            other => Err(PolicyError::UnknownPolicy(other.to_string())),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        })
    }
}

/// upstream `shouldPullImage`: pull when Always, or IfNotPresent and absent.
pub fn should_pull_image(policy: PullPolicy, image_present: bool) -> bool {
    match policy {
        PullPolicy::Never => false,
        PullPolicy::Always => true,
        PullPolicy::IfNotPresent => !image_present,
    }
}

/// What to do before any pull (upstream `imagePullPrecheck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precheck {
    /// The image is there and the policy lets us use it.
    UsePresent,
    /// Go to the registry (subject to backoff).
    Pull,
    /// Never, and absent: ErrImageNeverPull.
    NeverPullAbsent,
}

pub fn image_pull_precheck(policy: PullPolicy, image_present: bool) -> Precheck {
    match (policy, image_present) {
        (PullPolicy::Never, false) => Precheck::NeverPullAbsent,
        _ if should_pull_image(policy, image_present) => Precheck::Pull,
        _ => Precheck::UsePresent,
    }
}

/// Waiting reasons a container gets from the image manager (pkg/kubelet/images/types.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageReason {
    /// General image pull error.
    ErrImagePull,
    /// The last pull failed and the kubelet is backing off.
    ImagePullBackOff,
    /// Absent on the node with imagePullPolicy Never.
    ErrImageNeverPull,
    /// The image name does not parse.
    InvalidImageName,
    /// The image could not be inspected.
    ImageInspectError,
}

impl ImageReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::ErrImageNeverPull => "ErrImageNeverPull",
            Self::InvalidImageName => "InvalidImageName",
            Self::ImageInspectError => "ImageInspectError",
        }
    }
}

impl fmt::Display for ImageReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Event reasons (pkg/kubelet/events).
pub const EVENT_PULLING: &str = "Pulling";
pub const EVENT_PULLED: &str = "Pulled";
pub const EVENT_FAILED: &str = "Failed";
pub const EVENT_BACK_OFF: &str = "BackOff";
pub const EVENT_NEVER_PULL: &str = "ErrImageNeverPull";
pub const EVENT_INSPECT_FAILED: &str = "InspectFailed";

/// Upstream's texts. `image` is the container's `image` field as written (`%q`).
pub fn msg_never_pull(image: &str) -> String {
    format!("Container image {image:?} is not present with pull policy of Never")
}

pub fn msg_already_present(image: &str) -> String {
    format!("Container image {image:?} already present on machine")
}

/// The ImagePullBackOff message, with the previous pull's error when there was one
/// (`Back-off pulling image "x": ErrImagePull: <cause>`, Kubernetes 1.32+).
pub fn msg_back_off(image: &str, previous_error: Option<&str>) -> String {
    match previous_error {
        Some(prev) => format!("Back-off pulling image {image:?}: {prev}"),
        None => format!("Back-off pulling image {image:?}"),
    }
}

pub fn msg_pulling(image: &str) -> String {
    format!("Pulling image {image:?}")
}

pub fn msg_failed_to_pull(image: &str, err: &str) -> String {
    format!("Failed to pull image {image:?}: {err}")
}

pub fn msg_pulled(image: &str, took: Duration, size: u64) -> String {
    let took = Duration::from_millis(took.as_millis() as u64);
    format!(
        "Successfully pulled image {image:?} in {took:?} ({took:?} including waiting). Image size: {size} bytes."
    )
}

pub fn msg_invalid_name(image: &str, err: &str) -> String {
    format!("Failed to apply default image tag {image:?}: {err}")
}

/// What upstream remembers of a failed pull for the next back-off message:
/// `"<reason>: <message>"`.
pub fn previous_pull_error(reason: ImageReason, message: &str) -> String {
    format!("{reason}: {message}")
}

/// The backoff key: pod UID and the image as written (upstream `backOffKey`).
pub fn backoff_key(pod_uid: &str, image: &str) -> String {
    format!("{pod_uid}_{image}")
}

/// The image pull backoff: client-go's `flowcontrol.Backoff` (the agent's one
/// implementation, [`crate::flowcontrol`]) on the monotonic clock.
pub type Backoff = crate::flowcontrol::Backoff<Instant>;

/// The kubelet's image pull backoff: 10 s doubling to 300 s, an entry untouched for twice
/// the cap starting over.
pub fn image_backoff() -> Backoff {
    Backoff::new(IMAGE_BACKOFF_INITIAL, IMAGE_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_pull_image_table() {
        // upstream TestShouldPullImage-style: (policy, present, pull?)
        for (policy, present, want) in [
            (PullPolicy::Always, true, true),
            (PullPolicy::Always, false, true),
            (PullPolicy::IfNotPresent, true, false),
            (PullPolicy::IfNotPresent, false, true),
            (PullPolicy::Never, true, false),
            (PullPolicy::Never, false, false),
        ] {
            assert_eq!(
                should_pull_image(policy, present),
                want,
                "{policy} present={present}"
            );
        }
        for (policy, present, want) in [
            (PullPolicy::Always, true, Precheck::Pull),
            (PullPolicy::IfNotPresent, true, Precheck::UsePresent),
            (PullPolicy::IfNotPresent, false, Precheck::Pull),
            (PullPolicy::Never, true, Precheck::UsePresent),
            (PullPolicy::Never, false, Precheck::NeverPullAbsent),
        ] {
            assert_eq!(
                image_pull_precheck(policy, present),
                want,
                "{policy} present={present}"
            );
        }
    }

    #[test]
    fn policy_parse_and_default() {
        assert_eq!("Never".parse::<PullPolicy>().unwrap(), PullPolicy::Never);
        assert!("never".parse::<PullPolicy>().is_err());
        for (image, want) in [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("busybox:1.36", PullPolicy::IfNotPresent),
            (
                "busybox@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                PullPolicy::IfNotPresent,
            ),
        ] {
            let r = Reference::parse_normalized_named(image).unwrap();
            assert_eq!(PullPolicy::default_for(&r), want, "{image}");
        }
    }

    #[test]
    fn messages_are_upstreams() {
        assert_eq!(
            msg_never_pull("busybox"),
            r#"Container image "busybox" is not present with pull policy of Never"#
        );
        assert_eq!(
            msg_back_off("busybox", None),
            r#"Back-off pulling image "busybox""#
        );
        assert_eq!(
            msg_back_off(
                "busybox",
                Some(&previous_pull_error(ImageReason::ErrImagePull, "boom"))
            ),
            r#"Back-off pulling image "busybox": ErrImagePull: boom"#
        );
        assert_eq!(
            msg_already_present("a:1"),
            r#"Container image "a:1" already present on machine"#
        );
        assert_eq!(
            msg_pulled("a", Duration::from_millis(1234), 5),
            r#"Successfully pulled image "a" in 1.234s (1.234s including waiting). Image size: 5 bytes."#
        );
        assert_eq!(backoff_key("uid-1", "busybox"), "uid-1_busybox");
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_expires() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = image_backoff();
        let id = backoff_key("uid", "busybox");
        assert!(!b.is_in_back_off_since_update(&id, t0));
        // Failures at t, each retried as soon as the backoff allows.
        let mut t = t0;
        let mut seen = Vec::new();
        for _ in 0..8 {
            b.next(&id, t, t);
            let period = b.get(&id);
            seen.push(period.as_secs());
            assert!(b.is_in_back_off_since_update(&id, t));
            assert!(b.is_in_back_off_since_update(&id, t + period - s(1)));
            assert!(!b.is_in_back_off_since_update(&id, t + period));
            t += period;
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        // Quiet for more than twice the cap: starts over at 10 s.
        let later = t + s(601);
        assert!(!b.is_in_back_off_since_update(&id, later));
        b.next(&id, later, later);
        assert_eq!(b.get(&id), s(10));
        // Keys are per pod and image.
        assert!(!b.is_in_back_off_since_update(&backoff_key("other", "busybox"), later));
        // GC forgets what is older than twice the cap.
        b.next("old", t0, t0);
        b.gc(later);
        assert_eq!((b.get("old"), b.len()), (Duration::ZERO, 1));
    }
}
