//! upstream statusupdater/node_status_updater.go: a node's `status.volumesAttached`
//! written from the actual state. Upstream sends a strategic merge patch of the whole
//! list; a rekube Node is a custom resource (JSON merge patch only), where a list is
//! replaced whole, which is the same write. Nothing else of the status is sent: the node
//! agent owns `volumesInUse` and the rest.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::cache::{ActualStateOfWorld, AttachedVolumeStatus, NodeName};

/// upstream `UpdateNodeStatuses`' decision: the nodes whose `volumesAttached` must be
/// written, with the list (their flags cleared; a failed write sets its node's again).
pub fn update_node_statuses(
    asw: &mut ActualStateOfWorld,
) -> BTreeMap<NodeName, Vec<AttachedVolumeStatus>> {
    asw.get_volumes_to_report_attached()
}

/// upstream `UpdateNodeStatusForNode`'s decision: `None` when the node needs no write.
pub fn update_node_status_for_node(
    asw: &mut ActualStateOfWorld,
    node: &str,
) -> Option<Vec<AttachedVolumeStatus>> {
    asw.get_volumes_to_report_attached_for_node(node)
}

/// The merge patch of `nodes/status` setting `volumesAttached` (removed when empty, as
/// upstream's `omitempty` list).
pub fn volumes_attached_patch(volumes: &[AttachedVolumeStatus]) -> Value {
    if volumes.is_empty() {
        return json!({"status": {"volumesAttached": null}});
    }
    let list: Vec<Value> = volumes
        .iter()
        .map(|v| json!({"name": v.name, "devicePath": v.device_path}))
        .collect();
    json!({"status": {"volumesAttached": list}})
}

/// Whether the node's current `volumesAttached` already is `volumes` (no write needed;
/// upstream's PatchNodeStatus sends an empty patch then).
pub fn volumes_attached_equal(
    current: Option<&Vec<k8s_openapi::api::core::v1::AttachedVolume>>,
    volumes: &[AttachedVolumeStatus],
) -> bool {
    let current = current.map(Vec::as_slice).unwrap_or_default();
    current.len() == volumes.len()
        && current
            .iter()
            .zip(volumes)
            .all(|(c, v)| c.name == v.name && c.device_path == v.device_path)
}

#[cfg(test)]
mod tests {
    use super::super::cache::ActualStateOfWorld;
    use super::*;

    fn status(name: &str) -> AttachedVolumeStatus {
        AttachedVolumeStatus {
            name: name.into(),
            device_path: String::new(),
        }
    }

    /// upstream TestNodeStatusUpdater_UpdateNodeStatuses_TwoNodesUpdate: two nodes with a
    /// volume each get one write each, and none the next time.
    #[test]
    fn update_node_statuses_two_nodes_update() {
        let mut asw = ActualStateOfWorld::default();
        asw.mark_volume_as_attached("v1", None, "n1", "");
        asw.mark_volume_as_attached("v2", None, "n2", "");
        let writes = update_node_statuses(&mut asw);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes["n1"], vec![status("v1")]);
        assert_eq!(writes["n2"], vec![status("v2")]);
        assert!(update_node_statuses(&mut asw).is_empty());
    }

    /// upstream TestNodeStatusUpdater_UpdateNodeStatuses_FailureInFirstUpdate: a failed
    /// write marks the node again (the controller calls set_node_status_update_needed), so
    /// only that node is written next time.
    #[test]
    fn update_node_statuses_failure_in_first_update() {
        let mut asw = ActualStateOfWorld::default();
        asw.mark_volume_as_attached("v1", None, "n1", "");
        asw.mark_volume_as_attached("v2", None, "n2", "");
        let writes = update_node_statuses(&mut asw);
        assert_eq!(writes.len(), 2);
        asw.set_node_status_update_needed("n1").unwrap();
        let again = update_node_statuses(&mut asw);
        assert_eq!(again.keys().collect::<Vec<_>>(), ["n1"]);
    }

    /// upstream TestNodeStatusUpdater_UpdateNodeStatusForNode: one node's write, once.
    #[test]
    fn update_node_status_for_node() {
        let mut asw = ActualStateOfWorld::default();
        asw.mark_volume_as_attached("v1", None, "n1", "");
        asw.mark_volume_as_attached("v2", None, "n2", "");
        assert_eq!(
            asw.get_volumes_to_report_attached_for_node("n1"),
            Some(vec![status("v1")])
        );
        assert_eq!(asw.get_volumes_to_report_attached_for_node("n1"), None);
        assert_eq!(
            asw.get_volumes_to_report_attached().len(),
            1,
            "n2 still needs its write"
        );
    }

    #[test]
    fn the_patch_touches_volumes_attached_only() {
        assert_eq!(
            volumes_attached_patch(&[status("kubernetes.io/csi/d^h")]),
            json!({"status": {"volumesAttached": [{"name": "kubernetes.io/csi/d^h", "devicePath": ""}]}})
        );
        assert_eq!(
            volumes_attached_patch(&[]),
            json!({"status": {"volumesAttached": null}})
        );
        let current: Vec<k8s_openapi::api::core::v1::AttachedVolume> =
            serde_json::from_value(json!([{"name": "a", "devicePath": ""}])).unwrap();
        assert!(volumes_attached_equal(Some(&current), &[status("a")]));
        assert!(!volumes_attached_equal(Some(&current), &[]));
        assert!(volumes_attached_equal(None, &[]));
    }
}
