//! The node's side of controller-managed attach (upstream: the kubelet runs with
//! `enableControllerAttachDetach`, so the attach/detach controller attaches and the
//! kubelet waits): which volumes the node reports in use (Node status `volumesInUse`,
//! volume_manager.go `GetVolumesInUse` / `MarkVolumesAsReportedInUse`), and, before a CSI
//! volume is staged, operation_generator.go's `VerifyControllerAttachedVolume` (the
//! volume reported in use, then listed in the Node's `volumesAttached`) and
//! csi_attacher.go's `WaitForAttach` (its VolumeAttachment attached; the attachment
//! metadata is the publish context NodeStageVolume and NodePublishVolume get).
//!
//! The checks are pure ([`verify_controller_attached_volume`], [`wait_for_attach`]);
//! [`VolumesInUse`] is the one piece of state the volume manager and the node status loop
//! share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use rekube_crds::{CSIDriver, VolumeAttachment};

/// The annotation by which a node says the attach/detach controller attaches its volumes
/// (upstream `volumehelper.ControllerManagedAttachAnnotation`), set at registration.
pub const CONTROLLER_MANAGED_ATTACH_ANNOTATION: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// csiPlugin's `skipAttach` inverted: a driver needs attaching unless its CSIDriver says
/// `attachRequired: false`; no CSIDriver object means attach (upstream's default).
pub fn attach_required(driver: Option<&CSIDriver>) -> bool {
    driver.is_none_or(|d| d.spec.attach_required.unwrap_or(true))
}

/// operation_generator.go's `GenerateError` message without an error:
/// `<prefix> for volume "<volume>" ` (the trailing space is upstream's).
fn volume_message(prefix: &str, volume: &str) -> String {
    format!("{prefix} for volume {volume:?} ")
}

/// `VerifyControllerAttachedVolume` for an attachable volume: it must have been reported
/// in use by the node (so the controller never detaches it under a mount), then be in
/// the Node's `volumesAttached`. `Err`: upstream's message (the pod waits and retries).
pub fn verify_controller_attached_volume(
    volume: &str,
    unique_name: &str,
    reported_in_use: bool,
    volumes_attached: &[String],
) -> Result<(), String> {
    if !reported_in_use {
        return Err(volume_message(
            "Volume has not been added to the list of VolumesInUse in the node's volume status",
            volume,
        ));
    }
    if !volumes_attached.iter().any(|v| v == unique_name) {
        return Err(volume_message(
            "Volume not attached according to node status",
            volume,
        ));
    }
    Ok(())
}

/// csi_attacher.go's `WaitForAttach` over the VolumeAttachment read (`None`: not found),
/// with `verifyAttachmentStatus`: the publish context when attached, else
/// `<operation>.WaitForAttach failed ...` with upstream's reason (`operation`:
/// `MountVolume`, or `MapVolume` for a Block volume).
pub fn wait_for_attach(
    operation: &str,
    volume: &str,
    volume_handle: &str,
    attach_id: &str,
    attachment: Option<&VolumeAttachment>,
) -> Result<HashMap<String, String>, String> {
    let failed = |reason: String| {
        format!("{operation}.WaitForAttach failed for volume {volume:?} : {reason}")
    };
    let Some(attachment) = attachment else {
        return Err(failed(format!(
            "volume {volume_handle} has GET error for volume attachment {attach_id}: volumeattachments.rekube.io {attach_id:?} not found"
        )));
    };
    if attachment.metadata.deletion_timestamp.is_some() {
        return Err(failed("volume attachment is being deleted".into()));
    }
    let status = attachment.status.as_ref();
    if status.is_some_and(|s| s.attached) {
        return Ok(status
            .and_then(|s| s.attachment_metadata.clone())
            .unwrap_or_default()
            .into_iter()
            .collect());
    }
    if let Some(error) = status.and_then(|s| s.attach_error.as_ref()) {
        return Err(failed(error.message.clone().unwrap_or_default()));
    }
    Err(failed(format!(
        "volume {volume_handle} is not attached for volume attachment {attach_id}"
    )))
}

/// The volumes the node has in use, and which of them the Node's status already lists
/// (each volume's `ReportedInUse`). The volume manager sets the first; the node status
/// loop reads it, posts it, and marks what it posted.
#[derive(Debug, Default)]
pub struct VolumesInUse {
    state: Mutex<InUse>,
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct InUse {
    /// What the volume manager's states want or have set up.
    in_use: BTreeSet<String>,
    /// What an earlier agent left set up, by pod UID, until the states account for it.
    reconstructed: BTreeMap<String, Vec<String>>,
    reported: BTreeSet<String>,
}

impl InUse {
    fn all(&self) -> BTreeSet<String> {
        self.in_use
            .iter()
            .chain(self.reconstructed.values().flatten())
            .cloned()
            .collect()
    }
}

impl VolumesInUse {
    /// Changes the state; the status loop is woken when the volumes in use changed
    /// (upstream waits for the next periodic status update, up to 10 s: kubernetes#28141).
    fn update(&self, change: impl FnOnce(&mut InUse)) {
        let mut state = self.state.lock().unwrap();
        let before = state.all();
        change(&mut state);
        if state.all() != before {
            self.changed.notify_one();
        }
    }

    /// The volumes the states want or have set up now.
    pub fn set(&self, in_use: BTreeSet<String>) {
        self.update(|s| s.in_use = in_use);
    }

    /// The volumes an earlier agent left set up, by pod UID
    /// ([`super::csi_volumes_on_disk`]): in use until [`Self::forget_reconstructed`].
    pub fn reconstruct(&self, found: BTreeMap<String, Vec<String>>) {
        if !found.is_empty() {
            tracing::info!(
                pods = found.len(),
                "CSI volumes of an earlier run in use until set up again or torn down"
            );
        }
        self.update(|s| s.reconstructed = found);
    }

    /// The pod's volumes are set up again or torn down: the states account for them.
    pub fn forget_reconstructed(&self, uid: &str) {
        self.update(|s| {
            s.reconstructed.remove(uid);
        });
    }

    /// `GetVolumesInUse`, sorted.
    pub fn get(&self) -> Vec<String> {
        self.state.lock().unwrap().all().into_iter().collect()
    }

    /// `MarkVolumesAsReportedInUse`: what the Node's status now lists.
    pub fn mark_volumes_as_reported_in_use(&self, reported: &[String]) {
        self.state.lock().unwrap().reported = reported.iter().cloned().collect();
    }

    pub fn is_reported_in_use(&self, unique_name: &str) -> bool {
        self.state.lock().unwrap().reported.contains(unique_name)
    }

    /// Resolves when the volumes in use changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::storage::v1::{CSIDriverSpec, VolumeAttachmentStatus, VolumeError};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn driver(attach_required: Option<bool>) -> CSIDriver {
        CSIDriver {
            spec: CSIDriverSpec {
                attach_required,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// csi_attacher_test.go's `TestAttacherWithCSIDriver` / csi_plugin_test.go's
    /// `TestPluginCanAttach` expectations: attach unless the driver says it is not needed.
    #[test]
    fn a_driver_needs_attach_unless_its_csidriver_says_not() {
        assert!(attach_required(None));
        assert!(attach_required(Some(&driver(None))));
        assert!(attach_required(Some(&driver(Some(true)))));
        assert!(!attach_required(Some(&driver(Some(false)))));
    }

    #[test]
    fn verify_controller_attached_volume_as_upstream() {
        let attached = vec!["kubernetes.io/csi/d^h".to_string()];
        assert_eq!(
            verify_controller_attached_volume("pv1", "kubernetes.io/csi/d^h", false, &attached),
            Err("Volume has not been added to the list of VolumesInUse in the node's volume status for volume \"pv1\" ".into())
        );
        assert_eq!(
            verify_controller_attached_volume("pv1", "kubernetes.io/csi/d^h", true, &[]),
            Err("Volume not attached according to node status for volume \"pv1\" ".into())
        );
        assert_eq!(
            verify_controller_attached_volume("pv1", "kubernetes.io/csi/d^h", true, &attached),
            Ok(())
        );
    }

    fn attachment(status: Option<VolumeAttachmentStatus>, deleting: bool) -> VolumeAttachment {
        let mut va = VolumeAttachment {
            status,
            ..Default::default()
        };
        if deleting {
            va.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        }
        va
    }

    /// csi_attacher_test.go's `TestAttacherWaitForAttach` / `verifyAttachmentStatus` cases.
    #[test]
    fn wait_for_attach_follows_the_attachment_status() {
        let prefix = "MountVolume.WaitForAttach failed for volume \"pv1\" : ";
        let attached = VolumeAttachmentStatus {
            attached: true,
            attachment_metadata: Some(BTreeMap::from([("devicePath".into(), "/dev/loop3".into())])),
            ..Default::default()
        };
        let failed = VolumeAttachmentStatus {
            attached: false,
            attach_error: Some(VolumeError {
                message: Some("no such volume".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        type Case = (
            &'static str,
            Option<VolumeAttachment>,
            Result<HashMap<String, String>, String>,
        );
        let cases: Vec<Case> = vec![
            (
                "attached: the metadata is the publish context",
                Some(attachment(Some(attached.clone()), false)),
                Ok(HashMap::from([("devicePath".into(), "/dev/loop3".into())])),
            ),
            (
                "attached without metadata",
                Some(attachment(
                    Some(VolumeAttachmentStatus {
                        attached: true,
                        ..Default::default()
                    }),
                    false,
                )),
                Ok(HashMap::new()),
            ),
            (
                "not attached yet",
                Some(attachment(None, false)),
                Err(format!(
                    "{prefix}volume h is not attached for volume attachment va1"
                )),
            ),
            (
                "the attacher's error",
                Some(attachment(Some(failed), false)),
                Err(format!("{prefix}no such volume")),
            ),
            (
                "being deleted, even if attached",
                Some(attachment(Some(attached), true)),
                Err(format!("{prefix}volume attachment is being deleted")),
            ),
            (
                "no attachment",
                None,
                Err(format!(
                    "{prefix}volume h has GET error for volume attachment va1: volumeattachments.rekube.io \"va1\" not found"
                )),
            ),
        ];
        for (name, va, want) in cases {
            assert_eq!(
                wait_for_attach("MountVolume", "pv1", "h", "va1", va.as_ref()),
                want,
                "{name}"
            );
        }
        // A Block volume's wait is MapVolume's.
        assert_eq!(
            wait_for_attach("MapVolume", "pv1", "h", "va1", None).unwrap_err(),
            "MapVolume.WaitForAttach failed for volume \"pv1\" : volume h has GET error for volume attachment va1: volumeattachments.rekube.io \"va1\" not found"
        );
    }

    #[test]
    fn volumes_in_use_are_reported_once_posted() {
        let v = VolumesInUse::default();
        v.set(BTreeSet::from(["b".to_string(), "a".to_string()]));
        assert_eq!(v.get(), vec!["a".to_string(), "b".to_string()]);
        assert!(!v.is_reported_in_use("a"));
        v.mark_volumes_as_reported_in_use(&["a".to_string()]);
        assert!(v.is_reported_in_use("a"));
        assert!(!v.is_reported_in_use("b"));
        v.mark_volumes_as_reported_in_use(&[]);
        assert!(!v.is_reported_in_use("a"));
        // An earlier run's volume stays in use until its pod is accounted for.
        v.reconstruct(BTreeMap::from([(
            "uid-1".to_string(),
            vec!["c".to_string()],
        )]));
        v.set(BTreeSet::new());
        assert_eq!(v.get(), vec!["c".to_string()]);
        v.forget_reconstructed("uid-1");
        assert_eq!(v.get(), Vec::<String>::new());
    }
}
