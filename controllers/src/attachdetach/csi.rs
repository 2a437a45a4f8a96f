//! The attach/detach controller's half of upstream's CSI plugin (pkg/volume/csi/
//! csi_attacher.go): `Attach` creates the VolumeAttachment `csi-<sha256>` for the driver's
//! attacher and waits for `status.attached`; `Detach` deletes it and waits until it is
//! gone. The waits read the VolumeAttachment informer's cache, as upstream's
//! `waitForVolumeAttachmentWithLister` does.
use std::time::Duration;

use rekube_crds::VolumeAttachment;
use rekube_crds::storage_keys::attachment_name;
use serde_json::json;

/// upstream csiTimeout: how long Attach and Detach wait for the attacher.
pub const CSI_TIMEOUT: Duration = Duration::from_secs(120);

/// The VolumeAttachment upstream's Attach creates for `pv` (driver, handle) on `node`.
pub fn new_volume_attachment(driver: &str, handle: &str, pv: &str, node: &str) -> VolumeAttachment {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "VolumeAttachment",
        "metadata": {"name": attachment_name(handle, driver, node)},
        "spec": {"attacher": driver, "nodeName": node, "source": {"persistentVolumeName": pv}},
    }))
    .expect("a VolumeAttachment")
}

/// upstream `verifyAttachmentStatus`: `Ok(true)` attached, `Ok(false)` not yet, `Err` the
/// attacher's error (or the object gone or going).
pub fn verify_attachment_status(va: Option<&VolumeAttachment>) -> Result<bool, String> {
    let Some(va) = va else {
        return Err("volume attachment has been deleted".into());
    };
    if va.metadata.deletion_timestamp.is_some() {
        return Err("volume attachment is being deleted".into());
    }
    let status = va.status.as_ref();
    if status.is_some_and(|s| s.attached) {
        return Ok(true);
    }
    match status.and_then(|s| s.attach_error.as_ref()) {
        Some(e) => Err(e.message.clone().unwrap_or_default()),
        None => Ok(false),
    }
}

/// upstream `verifyDetachmentStatus`: `Ok(true)` once the object is gone, `Err` the
/// attacher's detach error.
pub fn verify_detachment_status(va: Option<&VolumeAttachment>) -> Result<bool, String> {
    let Some(va) = va else { return Ok(true) };
    match va.status.as_ref().and_then(|s| s.detach_error.as_ref()) {
        Some(e) => Err(e.message.clone().unwrap_or_default()),
        None => Ok(false),
    }
}

/// upstream's timeout error of `waitForVolumeAttachDetachStatusWithLister`.
pub fn timeout_message(driver: &str, operation: &str, handle: &str) -> String {
    format!(
        "timed out waiting for external-attacher of {driver} CSI driver to {} volume {handle}",
        operation.to_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn va(status: serde_json::Value, deleting: bool) -> VolumeAttachment {
        let mut v = new_volume_attachment("d", "h", "pv", "n");
        v.status = serde_json::from_value(status).unwrap();
        if deleting {
            v.metadata.deletion_timestamp =
                Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
        }
        v
    }

    #[test]
    fn the_attachment_is_upstreams() {
        let v = new_volume_attachment("csi.rekube.io", "vol-1", "pv-1", "node-a");
        assert_eq!(
            v.metadata.name.as_deref(),
            Some(attachment_name("vol-1", "csi.rekube.io", "node-a").as_str())
        );
        let spec = v.spec.unwrap();
        assert_eq!(spec.attacher, "csi.rekube.io");
        assert_eq!(spec.node_name, "node-a");
        assert_eq!(spec.source.persistent_volume_name.as_deref(), Some("pv-1"));
    }

    /// upstream TestAttacherWithCSIDriver / TestAttacherWaitForVolumeAttachment's
    /// status cases.
    #[test]
    fn attachment_status_table() {
        assert_eq!(
            verify_attachment_status(None),
            Err("volume attachment has been deleted".into())
        );
        assert_eq!(
            verify_attachment_status(Some(&va(json!({"attached": true}), true))),
            Err("volume attachment is being deleted".into())
        );
        assert_eq!(
            verify_attachment_status(Some(&va(json!({"attached": true}), false))),
            Ok(true)
        );
        assert_eq!(
            verify_attachment_status(Some(&va(json!(null), false))),
            Ok(false)
        );
        assert_eq!(
            verify_attachment_status(Some(&va(
                json!({"attached": false, "attachError": {"message": "no such disk"}}),
                false
            ))),
            Err("no such disk".into())
        );
        assert_eq!(verify_detachment_status(None), Ok(true));
        assert_eq!(
            verify_detachment_status(Some(&va(json!({"attached": true}), true))),
            Ok(false)
        );
        assert_eq!(
            verify_detachment_status(Some(&va(
                json!({"attached": true, "detachError": {"message": "busy"}}),
                true
            ))),
            Err("busy".into())
        );
        assert_eq!(
            timeout_message("d", "Attach", "h"),
            "timed out waiting for external-attacher of d CSI driver to attach volume h"
        );
    }
}
