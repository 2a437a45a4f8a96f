//! upstream populator/desired_state_of_world_populator.go: the periodic repair of the
//! desired state from the pod cache, for pod events the handlers missed.
use std::sync::Arc;

use rekube_crds::Pod;

use super::cache::DesiredStateOfWorld;
use super::util::{
    Listers, determine_volume_action, is_attachable, is_pod_terminated, pod_ref,
    process_pod_volumes,
};

/// upstream `findAndRemoveDeletedPods`: pods of the desired state that are gone from the
/// cache, replaced by another pod of the same name (another UID), or terminated are
/// removed; so are volumes that stopped being attachable (their CSIDriver now says
/// `attachRequired: false`).
pub fn find_and_remove_deleted_pods(dsw: &mut DesiredStateOfWorld, listers: &dyn Listers) {
    for (uid, to_add) in dsw.get_pod_to_add() {
        if let Some(pod) = listers.pod(&to_add.pod.namespace, &to_add.pod.name)
            && determine_volume_action(&pod, true)
            && pod_ref(&pod).uid == uid
        {
            continue;
        }
        tracing::debug!(pod = %format!("{}/{}", to_add.pod.namespace, to_add.pod.name), "removing pod from the desired state: it is gone from the pod cache");
        dsw.delete_pod(&uid, &to_add.volume_name, &to_add.node_name);
    }
    for v in dsw.get_volumes_to_attach() {
        if is_attachable(&v.volume_spec, listers) {
            continue;
        }
        tracing::info!(volume = %v.volume_name, "volume changed from attachable to non-attachable");
        for pod in &v.scheduled_pods {
            dsw.delete_pod(&pod.uid, &v.volume_name, &v.node_name);
        }
    }
}

/// upstream `findAndAddActivePods`: every pod not terminated, through
/// [`process_pod_volumes`].
pub fn find_and_add_active_pods(
    pods: &[Arc<Pod>],
    dsw: &mut DesiredStateOfWorld,
    listers: &dyn Listers,
) {
    for pod in pods {
        if is_pod_terminated(pod) {
            continue;
        }
        process_pod_volumes(pod, true, dsw, listers);
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::*;
    use super::*;
    use serde_json::json;

    /// upstream TestFindAndAddActivePods_FindAndRemoveDeletedPods: a pod added, deleted
    /// from the cache (removed from the desired state), then back (added again).
    #[test]
    fn find_and_add_active_pods_find_and_remove_deleted_pods() {
        let mut l = FakeListers::default();
        l.add_bound_csi_claim("ns", "c", "pv", "d");
        let p = pod(
            "ns",
            "dswp-test-pod",
            "mynode",
            json!([claim_volume("v", "c")]),
        );
        l.add_pod(p.clone());
        let mut dsw = DesiredStateOfWorld::default();
        dsw.add_node("mynode");
        let name = "kubernetes.io/csi/d^pv-handle";
        find_and_add_active_pods(&[Arc::new(p.clone())], &mut dsw, &l);
        assert!(dsw.volume_exists(name, "mynode"));
        assert!(dsw.get_pod_to_add().contains_key("dswp-test-pod-uid"));
        // Deleted from the informer: removed.
        l.pods.clear();
        find_and_remove_deleted_pods(&mut dsw, &l);
        assert!(!dsw.volume_exists(name, "mynode"));
        assert!(dsw.get_pod_to_add().is_empty());
        // Added back.
        l.add_pod(p.clone());
        find_and_add_active_pods(&[Arc::new(p.clone())], &mut dsw, &l);
        assert!(dsw.volume_exists(name, "mynode"));
        // Replaced by a pod of the same name (another UID): the old one goes.
        let mut replaced = p.clone();
        replaced.metadata.uid = Some("new-uid".into());
        l.add_pod(replaced);
        find_and_remove_deleted_pods(&mut dsw, &l);
        assert!(!dsw.volume_exists(name, "mynode"));
        // A terminated pod is not added, and is removed.
        let mut done = p.clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        find_and_add_active_pods(&[Arc::new(done.clone())], &mut dsw, &l);
        assert!(!dsw.volume_exists(name, "mynode"));
        find_and_add_active_pods(&[Arc::new(p.clone())], &mut dsw, &l);
        l.add_pod(done);
        find_and_remove_deleted_pods(&mut dsw, &l);
        assert!(!dsw.volume_exists(name, "mynode"));
    }

    /// upstream TestFindAndRemoveNonattachableVolumes: a volume whose driver stops needing
    /// attach leaves the desired state.
    #[test]
    fn find_and_remove_nonattachable_volumes() {
        let mut l = FakeListers::default();
        l.add_bound_csi_claim("ns", "c", "pv", "d");
        let p = pod("ns", "p", "mynode", json!([claim_volume("v", "c")]));
        l.add_pod(p.clone());
        let mut dsw = DesiredStateOfWorld::default();
        dsw.add_node("mynode");
        find_and_add_active_pods(&[Arc::new(p)], &mut dsw, &l);
        assert_eq!(dsw.get_volumes_to_attach().len(), 1);
        find_and_remove_deleted_pods(&mut dsw, &l);
        assert_eq!(dsw.get_volumes_to_attach().len(), 1, "still attachable");
        l.add_driver("d", Some(false));
        find_and_remove_deleted_pods(&mut dsw, &l);
        assert!(dsw.get_volumes_to_attach().is_empty());
    }
}
