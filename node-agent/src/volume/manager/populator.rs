//! The desired state of world populator (pkg/kubelet/volumemanager/populator/
//! desired_state_of_world_populator.go), the seed's `populatorLoop`: every 100 ms (and at
//! once when a pod is synced) `find_and_add_new_pods` adds the volumes of the node's pods
//! that may run and have not been processed since their last sync (a pod's sync asks for
//! it again: `ReprocessPod`, so that configMap, secret, downwardAPI and projected volumes
//! are set up again), and `find_and_remove_deleted_pods` removes the volumes of the pods
//! gone from the node or whose containers are known stopped (upstream:
//! `ShouldPodRuntimeBeRemoved`, then the runtime asked whether a container still runs;
//! here the pod worker says so once it stopped them).
//!
//! [`PodSource`] is what the populator reads: upstream's pod manager and pod state
//! provider in one, fed by the pod workers. Pure, table-tested; the shell
//! ([`VolumeManager::populator_loop_func`]) reads claims and volumes as the node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rekube_crds::Pod;

use super::desired_state_of_world::DesiredStateOfWorld;
use super::expand::ClaimExpansion;
use super::{ObjectReader, VolumeManager, claim_volume_spec};
use crate::volume::claim;
use crate::volume::plugins::VolumeSpec;

/// How soon a pod whose volumes could not all be added is processed again (upstream
/// retries at each 100 ms pass; this spares the apiserver a claim read per pod every
/// 100 ms while a claim binds: the pod's wait polls at the same period).
pub const PROCESS_RETRY: Duration = Duration::from_millis(300);

/// One pod of the node, as the populator sees it.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub pod: Arc<Pod>,
    /// Its volumes were added since its last sync (`processedPods`).
    pub processed: bool,
    /// Its containers are to stop (deleted, finished, evicted): none of its volumes is
    /// added any more (`ShouldPodContainersBeTerminating`).
    pub terminating: bool,
    /// Its containers are stopped: its volumes go (`ShouldPodRuntimeBeRemoved` and no
    /// container running).
    pub terminated: bool,
    /// Not processed again before this (a failed processing).
    pub retry_at: Option<Instant>,
    /// The claims of its CSI filesystem volumes (`checkVolumeFSResize`), as read at its
    /// last processing; `expand`: not yet handed to the reconciler since.
    pub expansions: Vec<(String, ClaimExpansion)>,
    pub expand: bool,
}

/// The node's pods, fed by the pod workers (upstream's pod manager and pod state
/// provider).
#[derive(Debug, Default)]
pub struct PodSource {
    pods: BTreeMap<String, PodEntry>,
    /// Every pod source has been seen once (upstream's `sourcesReady.AllReady()`: the
    /// first full list of the node's pods).
    pub sources_ready: bool,
    /// The populator added the pods after the sources were ready (`HasAddedPods`).
    pub has_added_pods: bool,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Whether the pod's containers are to stop: deleted, or in a terminal phase.
pub fn should_pod_containers_be_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

impl PodSource {
    /// The pod as the API has it now (a watch event): known to the populator before its
    /// worker syncs it, so that nothing of a running pod is torn down meanwhile.
    pub fn update_pod(&mut self, pod: Arc<Pod>) {
        let uid = uid_of(&pod);
        let terminating = should_pod_containers_be_terminating(&pod);
        // A pod first seen terminating (deleted or finished while the agent was down) has
        // no container running and never gets a volume: not one of the source's pods.
        if terminating && !self.pods.contains_key(&uid) {
            return;
        }
        let entry = self.pods.entry(uid).or_insert_with(|| PodEntry {
            pod: Arc::clone(&pod),
            processed: false,
            terminating,
            terminated: false,
            retry_at: None,
            expansions: Vec::new(),
            expand: false,
        });
        entry.pod = pod;
        entry.terminating |= terminating;
    }

    /// `ReprocessPod`: the pod is synced and to run: its volumes are processed again now.
    pub fn reprocess_pod(&mut self, pod: Arc<Pod>) {
        let uid = uid_of(&pod);
        self.update_pod(pod);
        if let Some(e) = self.pods.get_mut(&uid) {
            e.processed = false;
            e.retry_at = None;
        }
    }

    /// The pod's containers are stopped and will not run again: its volumes may go.
    pub fn pod_terminated(&mut self, uid: &str) {
        if let Some(e) = self.pods.get_mut(uid) {
            e.terminating = true;
            e.terminated = true;
        }
    }

    /// The pod is gone from the node (cleaned up).
    pub fn remove_pod(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    pub fn get(&self, uid: &str) -> Option<&PodEntry> {
        self.pods.get(uid)
    }

    pub fn get_mut(&mut self, uid: &str) -> Option<&mut PodEntry> {
        self.pods.get_mut(uid)
    }

    /// The pods whose containers may run: their volumes are never unmounted.
    pub fn active(&self) -> BTreeSet<String> {
        self.pods
            .iter()
            .filter(|(_, e)| !e.terminated)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// `findAndAddNewPods`' choice: the pods to process at `now` (not terminating, not
    /// processed since their last sync, not waiting for a retry).
    pub fn pods_to_process(&self, now: Instant) -> Vec<Arc<Pod>> {
        self.pods
            .values()
            .filter(|e| !e.terminating && !e.processed)
            .filter(|e| e.retry_at.is_none_or(|at| now >= at))
            .map(|e| Arc::clone(&e.pod))
            .collect()
    }

    /// `findAndRemoveDeletedPods`' choice: the pods of the desired state that are gone
    /// from the node or whose containers are stopped.
    pub fn pods_to_remove(&self, dsw: &DesiredStateOfWorld) -> Vec<String> {
        dsw.pods()
            .filter(|uid| self.pods.get(*uid).is_none_or(|e| e.terminated))
            .map(str::to_string)
            .collect()
    }
}

/// What processing one pod's volumes came to (`processPodVolumes`).
pub struct Processed {
    /// The volumes with their specs, by name in the pod spec.
    pub specs: Vec<(String, VolumeSpec)>,
    /// `(volume, error)`: not added (`AddErrorToPod`).
    pub errors: Vec<(String, String)>,
    pub expansions: Vec<(String, ClaimExpansion)>,
}

impl VolumeManager {
    /// One pass of the populator loop: `findAndAddNewPods`, then
    /// `findAndRemoveDeletedPods`. Wakes the reconciler when the desired state changed.
    pub(super) async fn populator_loop_func<R: ObjectReader>(&self, reader: &R) {
        let (to_process, sources_ready) = {
            let source = self.pods.lock().unwrap();
            (source.pods_to_process(Instant::now()), source.sources_ready)
        };
        let mut changed = false;
        for pod in to_process {
            let processed = process_pod_volumes(&pod, reader).await;
            self.add_processed_pod(&pod, processed);
            changed = true;
        }
        if sources_ready {
            self.pods.lock().unwrap().has_added_pods = true;
        }
        let removed = {
            let source = self.pods.lock().unwrap();
            let mut state = self.state.lock().unwrap();
            let removed = source.pods_to_remove(&state.0);
            for uid in &removed {
                state.0.delete_pod(uid);
            }
            removed
        };
        for uid in &removed {
            self.forget_pod_expansions(uid);
        }
        if changed || !removed.is_empty() {
            self.update_volumes_in_use();
            self.reconciler_wake.notify_one();
            self.notify_changed();
        }
    }

    /// The result of `processPodVolumes` into the desired state: the volumes added (those
    /// added before and failing now kept), the errors recorded, the pod marked processed
    /// when every volume was added (its remount-requiring volumes then set up again:
    /// `MarkRemountRequired`; else tried again after [`PROCESS_RETRY`]).
    fn add_processed_pod(&self, pod: &Arc<Pod>, processed: Processed) {
        let uid = uid_of(pod);
        let mut source = self.pods.lock().unwrap();
        let Some(entry) = source.get_mut(&uid) else {
            return;
        };
        if entry.terminating {
            return;
        }
        let mut state = self.state.lock().unwrap();
        let (dsw, asw) = &mut *state;
        let ok = processed.errors.is_empty();
        // A volume added before and not processed now stays (upstream's failed
        // processing does not undo an earlier AddPodToVolume).
        let mut specs = processed.specs;
        for (volume, _) in &processed.errors {
            if let Some(v) = dsw
                .pod_volumes(&uid)
                .find(|v| &v.outer_volume_spec_name == volume)
            {
                specs.push((volume.clone(), v.spec.clone()));
            }
        }
        dsw.add_pod(&uid, specs);
        if ok {
            // Only once every volume was added, its earlier errors forgotten (upstream's
            // `MarkRemountRequired` and `PopPodErrors` after a complete processing): a
            // pod whose processing fails is not set up again at each retry.
            asw.mark_remount_required(&uid, |plugin| {
                dsw.pod_volumes(&uid)
                    .any(|v| v.spec.plugin_name() == plugin && v.spec.requires_remount())
            });
            dsw.pop_pod_errors(&uid);
        }
        for (volume, error) in &processed.errors {
            dsw.add_error_to_pod(&uid, volume, error);
        }
        entry.processed = ok;
        entry.retry_at = (!ok).then(|| Instant::now() + PROCESS_RETRY);
        entry.expand = !processed.expansions.is_empty();
        entry.expansions = processed.expansions;
    }
}

/// `processPodVolumes`: each volume of the pod that a container mounts or maps resolved
/// to its spec (a claim to its bound PersistentVolume, read as the node:
/// `createVolumeSpec`); what cannot be is an error of the pod, upstream's text. A volume
/// no container uses is left alone, as upstream's.
pub async fn process_pod_volumes<R: ObjectReader>(pod: &Pod, reader: &R) -> Processed {
    let mut out = Processed {
        specs: Vec::new(),
        errors: Vec::new(),
        expansions: Vec::new(),
    };
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        // A volume no container mounts or maps is not the pod's to set up.
        if claim::mounts_and_devices(pod, &v.name) == (false, false) {
            continue;
        }
        if let Some(claim_ref) = claim::claim_ref(pod, v) {
            match claim_volume_spec(reader, pod, v, &claim_ref).await {
                Ok((spec, expansion)) => {
                    out.specs.push((v.name.clone(), spec));
                    out.expansions
                        .extend(expansion.map(|e| (v.name.clone(), e)));
                }
                Err(e) => out.errors.push((v.name.clone(), e)),
            }
            continue;
        }
        match VolumeSpec::of(v) {
            Ok(spec) => out.specs.push((v.name.clone(), spec)),
            // AddPodToVolume's error when no plugin matches the spec.
            Err(e) => out.errors.push((
                v.name.clone(),
                format!(
                    "failed to get Plugin from volumeSpec for volume {:?} err={e}",
                    v.name
                ),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, extra: serde_json::Value) -> Arc<Pod> {
        let mut p = json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "cache", "emptyDir": {}}]}
        });
        for (k, v) in extra.as_object().unwrap() {
            if p[k].is_null() {
                p[k] = json!({});
            }
            p[k].as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
        }

        Arc::new(serde_json::from_value(p).unwrap())
    }

    fn empty_dir() -> VolumeSpec {
        VolumeSpec::EmptyDir {
            medium: None,
            size_limit_bytes: None,
        }
    }

    fn uids(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| uid_of(p)).collect()
    }

    /// findAndAddNewPods' choice: new and reprocessed pods, not the processed ones, not
    /// terminating ones (deleted or finished), not before a failed pod's retry.
    #[test]
    fn pods_to_process() {
        let now = Instant::now();
        let mut source = PodSource::default();
        source.update_pod(pod("new", json!({})));
        source.update_pod(pod("done", json!({})));
        source.get_mut("done").unwrap().processed = true;
        source.update_pod(pod("deleted", json!({})));
        source.get_mut("deleted").unwrap().processed = true;
        source.update_pod(pod(
            "deleted",
            json!({"metadata": {"deletionTimestamp": "2026-12-05T00:00:00Z"}}),
        ));
        source.reprocess_pod(pod(
            "deleted",
            json!({"metadata": {"deletionTimestamp": "2026-12-05T00:00:00Z"}}),
        ));
        // First seen finished (while the agent was down): not a pod of the source.
        source.update_pod(pod("finished", json!({"status": {"phase": "Succeeded"}})));
        assert!(source.get("finished").is_none());
        source.update_pod(pod("failed-once", json!({})));
        source.get_mut("failed-once").unwrap().retry_at = Some(now + PROCESS_RETRY);
        assert_eq!(uids(&source.pods_to_process(now)), ["new"]);
        assert_eq!(
            uids(&source.pods_to_process(now + PROCESS_RETRY)),
            ["failed-once", "new"]
        );
        // A sync asks for its pod again; an API update alone does not.
        source.update_pod(pod("done", json!({})));
        assert_eq!(uids(&source.pods_to_process(now)), ["new"]);
        source.reprocess_pod(pod("done", json!({})));
        assert_eq!(uids(&source.pods_to_process(now)), ["done", "new"]);
        // Once terminating, never added again, even when its object loses the mark.
        source.update_pod(pod("deleted", json!({})));
        assert!(!uids(&source.pods_to_process(now)).contains(&"deleted".to_string()));
    }

    /// findAndRemoveDeletedPods' choice: pods gone from the node or whose containers are
    /// stopped; a terminating pod whose containers may still run keeps its volumes.
    #[test]
    fn pods_to_remove() {
        let mut dsw = DesiredStateOfWorld::default();
        for uid in ["running", "stopping", "stopped", "gone"] {
            dsw.add_pod(uid, vec![("cache".into(), empty_dir())]);
        }
        let mut source = PodSource::default();
        source.update_pod(pod("running", json!({})));
        source.update_pod(pod("stopping", json!({})));
        source.update_pod(pod(
            "stopping",
            json!({"metadata": {"deletionTimestamp": "2026-12-05T00:00:00Z"}}),
        ));
        source.update_pod(pod("stopped", json!({})));
        source.pod_terminated("stopped");
        assert_eq!(source.pods_to_remove(&dsw), ["gone", "stopped"]);
        assert_eq!(
            source.active(),
            BTreeSet::from(["running".to_string(), "stopping".to_string()])
        );
        source.remove_pod("running");
        assert_eq!(source.pods_to_remove(&dsw), ["gone", "running", "stopped"]);
    }

    /// processPodVolumes: a volume no plugin has is the pod's error, with upstream's text,
    /// and the other volumes are added; a volume no container mounts is left alone.
    #[tokio::test]
    async fn unsupported_volumes_are_errors_of_the_pod() {
        let p = pod(
            "u",
            json!({"spec": {
                "containers": [{"name": "c", "image": "busybox", "volumeMounts": [
                    {"name": "cache", "mountPath": "/cache"},
                    {"name": "share", "mountPath": "/share"},
                    {"name": "data", "mountPath": "/data"}]}],
                "volumes": [
                {"name": "unused", "emptyDir": {}},
                {"name": "cache", "emptyDir": {}},
                {"name": "share", "nfs": {"server": "10.0.0.1", "path": "/x"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "missing"}}
            ]}}),
        );
        let out = process_pod_volumes(&p, &super::populator_tests::FakeReader::default()).await;
        assert_eq!(
            out.specs
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["cache"]
        );
        assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
        assert_eq!(out.errors[0].0, "share");
        assert_eq!(
            out.errors[0].1,
            "failed to get Plugin from volumeSpec for volume \"share\" err=no volume plugin \
             matched: nfs volumes are not supported by rekube-node-agent yet"
        );
        assert_eq!(out.errors[1].0, "data");
        assert!(
            out.errors[1]
                .1
                .contains("failed to fetch PVC from API server"),
            "{}",
            out.errors[1].1
        );
    }
}

#[cfg(test)]
#[path = "populator_tests.rs"]
mod populator_tests;
