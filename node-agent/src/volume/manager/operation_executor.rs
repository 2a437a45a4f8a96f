//! The reconciler's operations carried out (pkg/volume/util/operationexecutor and
//! nestedpendingoperations): at each pass of the reconciler loop the pure
//! [`super::reconciler::reconcile`] says what to do; the operations are grouped by pod,
//! one task per pod at a time (its unmounts, then its mounts, then its volumes'
//! expansion), none for a volume in back-off after a failure (upstream's exponential
//! back-off: 500 ms doubling to 2 min 2 s), each failure the pod's event
//! (`FailedMount`, `FailedMapVolume`) as upstream's operation generator records it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::actual_state_of_world::MountedVolume;
use super::expand::{INITIAL_RETRY, MAX_RETRY};
use super::reconciler::{Operation, reconcile};
use super::{
    FAILED_MAP_VOLUME, FailedVolume, ObjectReader, VolumeManager, fetch_objects,
    mount_failed_message,
};
use crate::flowcontrol::Backoff;
use crate::volume::plugins::{self, PersistentSource, SetUpContext, VolumeSpec};
use crate::volume::pod_dirs::CSI_PLUGIN;

/// The operations in flight and the failed ones' back-off.
#[derive(Debug)]
pub struct Operations {
    /// The pods with a task running.
    pending: BTreeSet<String>,
    /// By unique volume name.
    backoff: Backoff<Instant>,
    /// The last failed unmount of each pod (what its cleanup reports).
    unmount_errors: BTreeMap<String, String>,
}

impl Default for Operations {
    fn default() -> Self {
        Operations {
            pending: BTreeSet::new(),
            backoff: Backoff::new(INITIAL_RETRY, MAX_RETRY),
            unmount_errors: BTreeMap::new(),
        }
    }
}

fn volume_of(op: &Operation) -> (&str, &str) {
    match op {
        Operation::Unmount(m) => (&m.pod_uid, &m.volume_name),
        Operation::Mount { volume, .. } => (&volume.pod_uid, &volume.volume_name),
    }
}

/// The back-off key of an operation: its kind and volume (upstream's
/// nestedpendingoperations starts a fresh back-off when the operation on a volume changes,
/// so an unmount does not wait out the back-off of the mount that failed before it).
pub fn operation_key(op: &Operation) -> String {
    match op {
        Operation::Unmount(m) => format!("unmount {}", m.volume_name),
        Operation::Mount { volume, .. } => format!("mount {}", volume.volume_name),
    }
}

impl Operations {
    /// The operations to start now, by pod: not for a pod with a task running
    /// (`IsOperationPending`), not for a volume in back-off; a pod with no operation but
    /// its volumes' expansion to check (`expand`) gets a task too.
    pub fn start(
        &mut self,
        ops: Vec<Operation>,
        expand: &BTreeSet<String>,
        now: Instant,
    ) -> BTreeMap<String, Vec<Operation>> {
        self.backoff.gc(now);
        let mut by_pod: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
        for op in ops {
            let (pod, _) = volume_of(&op);
            if self.pending.contains(pod)
                || self
                    .backoff
                    .is_in_back_off_since_update(&operation_key(&op), now)
            {
                continue;
            }
            by_pod.entry(pod.to_string()).or_default().push(op);
        }
        for pod in expand {
            if !self.pending.contains(pod) {
                by_pod.entry(pod.clone()).or_default();
            }
        }
        self.pending.extend(by_pod.keys().cloned());
        by_pod
    }

    /// A task of `pod` ended: each operation's back-off ([`operation_key`]) moved on
    /// (failed) or reset.
    pub fn finish(&mut self, pod: &str, ok: &[String], failed: &[String], now: Instant) {
        self.pending.remove(pod);
        for v in ok {
            self.backoff.reset(v);
        }
        for v in failed {
            self.backoff.next(v, now, now);
        }
    }

    pub fn is_pending(&self, pod: &str) -> bool {
        self.pending.contains(pod)
    }

    pub fn set_unmount_error(&mut self, pod: &str, error: Option<String>) {
        match error {
            Some(e) => {
                self.unmount_errors.insert(pod.to_string(), e);
            }
            None => {
                self.unmount_errors.remove(pod);
            }
        }
    }

    pub fn unmount_error(&self, pod: &str) -> Option<&String> {
        self.unmount_errors.get(pod)
    }
}

/// What one pod's task came to, by [`operation_key`].
#[derive(Default)]
struct Outcome {
    ok: Vec<String>,
    failed: Vec<String>,
    unmount_error: Option<String>,
}

impl VolumeManager {
    /// One pass of the reconciler loop (`reconcile`): the operations decided on the
    /// states, started on tasks of their own.
    pub(super) fn reconcile_pass<R: ObjectReader + Send + Sync + 'static>(
        self: &Arc<Self>,
        reader: &Arc<R>,
    ) {
        let (ready, active, expand) = {
            let source = self.pods.lock().unwrap();
            let expand: BTreeSet<String> = source
                .active()
                .into_iter()
                .filter(|uid| source.get(uid).is_some_and(|e| e.expand))
                .collect();
            (
                source.sources_ready && source.has_added_pods,
                source.active(),
                expand,
            )
        };
        let ops: Vec<Operation> = {
            let state = self.state.lock().unwrap();
            reconcile(&state.0, &state.1, ready, &active)
        }
        .into_iter()
        // No mount for a pod whose containers are stopped (the populator drops it next).
        .filter(|op| matches!(op, Operation::Unmount(_)) || active.contains(volume_of(op).0))
        .collect();
        let started = self
            .operations
            .lock()
            .unwrap()
            .start(ops, &expand, Instant::now());
        for (uid, ops) in started {
            let (this, reader) = (Arc::clone(self), Arc::clone(reader));
            tokio::spawn(async move {
                let keys: Vec<String> = ops.iter().map(operation_key).collect();
                let run = this.run_pod_operations(&uid, ops, reader.as_ref());
                // A panic ends the task, not the pod's operations: they count as failed.
                let outcome =
                    futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run))
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!(pod_uid = %uid, "a volume operation panicked");
                            Outcome {
                                failed: keys,
                                ..Outcome::default()
                            }
                        });
                let done = !outcome.ok.is_empty() || !outcome.failed.is_empty();
                {
                    let mut operations = this.operations.lock().unwrap();
                    operations.finish(&uid, &outcome.ok, &outcome.failed, Instant::now());
                    operations.set_unmount_error(&uid, outcome.unmount_error);
                }
                this.update_volumes_in_use();
                this.notify_changed();
                // Success may have left more to do (a remount asked meanwhile); a failure's
                // back-off, or a volume waiting to be reported in use, ends on the loop's
                // next passes.
                if done {
                    this.reconciler_wake.notify_one();
                }
            });
        }
    }

    /// One pod's operations: unmounts first (upstream's order), then mounts (attach-wait,
    /// device mount (stage), mount (publish); a Block volume's map), then its CSI
    /// filesystem volumes' expansion (at mount, or in use). Failures are the pod's events.
    async fn run_pod_operations<R: ObjectReader>(
        &self,
        uid: &str,
        ops: Vec<Operation>,
        reader: &R,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let pod = self.pods.lock().unwrap().get(uid).map(|e| {
            let pod = Arc::clone(&e.pod);
            (pod, e.expansions.clone())
        });
        if let Some(e) = self.pods.lock().unwrap().get_mut(uid) {
            e.expand = false;
        }
        let mut failed: Vec<FailedVolume> = Vec::new();
        let mut mounted_now = HashSet::new();
        // Operation keys by the volume's name in the pod spec, for the back-off.
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for op in ops {
            let key = operation_key(&op);
            match op {
                Operation::Unmount(m) => match self.unmount_volume(&m).await {
                    Ok(()) => outcome.ok.push(key),
                    Err(e) => {
                        tracing::warn!(pod_uid = %uid, volume = %m.outer_volume_spec_name, error = %e, "unmounting a volume");
                        outcome.failed.push(key);
                        outcome.unmount_error = Some(e);
                    }
                },
                Operation::Mount { volume, .. } => {
                    let Some((pod, expansions)) = &pod else {
                        outcome.failed.push(key);
                        continue;
                    };
                    let name = volume.outer_volume_spec_name.clone();
                    names.insert(name.clone(), key);
                    let expanding = expansions.iter().any(|(n, _)| *n == name);
                    // upstream's `waitForVolumeAttach`: an attachable volume not yet
                    // reported in use starts no operation (no event, no back-off); the
                    // node status reports it at once and a later pass mounts it.
                    if self.awaits_in_use_report(&volume.spec, reader).await {
                        self.update_volumes_in_use();
                        continue;
                    }
                    let result = if matches!(volume.spec, VolumeSpec::Block { .. }) {
                        self.map_volume(&volume, reader)
                            .await
                            .map_err(|message| FailedVolume {
                                volume: name.clone(),
                                reason: FAILED_MAP_VOLUME,
                                message,
                            })
                    } else {
                        self.mount_volume(pod, &volume, expanding, reader)
                            .await
                            .map_err(|message| FailedVolume::mount(name.clone(), message))
                    };
                    match result {
                        Ok(()) => {
                            mounted_now.insert(name);
                        }
                        Err(f) => failed.push(f),
                    }
                    self.update_volumes_in_use();
                }
            }
        }
        // Their filesystems grown to their PersistentVolumes' size: at mount, or in use;
        // a volume grown at mount is set up for its pod from then on.
        if let Some((pod, expansions)) = &pod
            && !expansions.is_empty()
        {
            self.expand_pod_volumes(pod, expansions, &mounted_now, reader, &mut failed)
                .await;
            let done: Vec<String> = {
                let dsw = &self.state.lock().unwrap().0;
                dsw.pod_volumes(uid)
                    .filter(|v| {
                        expansions
                            .iter()
                            .any(|(n, _)| *n == v.outer_volume_spec_name)
                    })
                    .filter(|v| !self.expansion_failed_at_mount(uid, &v.outer_volume_spec_name))
                    .map(|v| v.volume_name.clone())
                    .collect()
            };
            let mut state = self.state.lock().unwrap();
            for v in done {
                state.1.mark_volume_mount_as_certain(&v);
            }
        }
        for name in &mounted_now {
            if !failed.iter().any(|f| &f.volume == name) {
                outcome.ok.extend(names.get(name).cloned());
            }
        }
        if let Some((pod, _)) = &pod {
            for f in failed {
                outcome.failed.extend(names.get(&f.volume).cloned());
                self.push_event(
                    crate::agent::events::pod_ref(pod),
                    true,
                    f.reason,
                    f.message,
                );
            }
        }
        outcome
    }

    /// Whether `spec` is a CSI volume whose driver needs attaching and that the node has
    /// not reported in use yet (`VolumeToMount.ReportedInUse`): the attach/detach
    /// controller attaches only what a node reports.
    async fn awaits_in_use_report<R: ObjectReader>(&self, spec: &VolumeSpec, reader: &R) -> bool {
        let source = match spec {
            VolumeSpec::Persistent {
                source: PersistentSource::Csi(source),
                ..
            }
            | VolumeSpec::Block {
                source: crate::volume::plugins::BlockSource::Csi(source),
                ..
            } => source,
            _ => return false,
        };
        let unique = rekube_crds::storage_keys::csi_unique_volume_name(
            &source.driver,
            &source.volume_handle,
        );
        if self.in_use.is_reported_in_use(&unique) {
            return false;
        }
        // An unreadable CSIDriver is the mount's own error to report.
        matches!(
            reader.csi_driver(&source.driver).await,
            Ok(driver) if super::attach::attach_required(driver.as_ref())
        )
    }

    /// `UnmountVolume` (and, after a CSI volume's last user, `UnmountDevice`); the volume
    /// recorded unmounted only once done.
    async fn unmount_volume(&self, m: &MountedVolume) -> Result<(), String> {
        if m.block {
            return self.unmap_volume(m).await;
        }
        if m.plugin_name == CSI_PLUGIN {
            return self.tear_down_csi(m).await;
        }
        plugins::tear_down(
            &self.dirs,
            self.sys.as_ref(),
            &m.pod_uid,
            &m.plugin_name,
            &m.outer_volume_spec_name,
            &m.path,
        )
        .map_err(|e| {
            format!(
                "UnmountVolume.TearDown failed for volume \"{}\" : {e}",
                m.outer_volume_spec_name
            )
        })?;
        self.state
            .lock()
            .unwrap()
            .1
            .mark_volume_as_unmounted(&m.volume_name);
        Ok(())
    }

    /// `MountVolume` of a filesystem volume: a CSI one through its driver once attached
    /// (`WaitForAttach`, then stage and publish), the others through their plugin with the
    /// objects they project. `Err`: the event's message.
    async fn mount_volume<R: ObjectReader>(
        &self,
        pod: &rekube_crds::Pod,
        volume: &super::desired_state_of_world::VolumeToMount,
        expanding: bool,
        reader: &R,
    ) -> Result<(), String> {
        let uid = volume.pod_uid.as_str();
        let name = &volume.outer_volume_spec_name;
        if let VolumeSpec::Persistent {
            pv_name,
            read_only,
            source: PersistentSource::Csi(source),
        } = &volume.spec
        {
            let read_only = *read_only || source.read_only;
            let publish_context = self
                .verify_attached(reader, "MountVolume", pv_name, source)
                .await?;
            return self
                .set_up_csi(
                    volume,
                    uid,
                    pv_name,
                    read_only,
                    source,
                    publish_context,
                    expanding,
                )
                .await;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut objects = fetch_objects(reader, &namespace, &volume.spec)
            .await
            .map_err(|e| mount_failed_message(name, &e))?;
        if let VolumeSpec::Projected(source) = &volume.spec {
            objects.service_account_tokens = self.service_account_tokens(reader, pod, source).await;
        }
        // Listed afresh at each set-up (every sync of a running pod), so an edited bundle
        // reaches the pod at its next sync (upstream's manager: its informer's events).
        if let VolumeSpec::Projected(source) = &volume.spec
            && super::super::cluster_trust_bundle::has_cluster_trust_bundle_source(source)
        {
            objects.cluster_trust_bundles = reader.cluster_trust_bundles().await.into();
        }
        // Stepped at each set-up (every sync of a running pod): a refreshed credential
        // reaches the pod at its next sync.
        if let VolumeSpec::Projected(source) = &volume.spec
            && source
                .sources
                .iter()
                .flatten()
                .any(|s| s.pod_certificate.is_some())
        {
            objects.pod_certificates = self
                .pod_certificates
                .credentials(reader, pod, name, source)
                .await;
        }
        let ctx = SetUpContext {
            dirs: &self.dirs,
            sys: self.sys.as_ref(),
            node_allocatable_memory: self
                .node_allocatable
                .get("memory")
                .map(|q| crate::kubelet::quantity::amount(q).value())
                .unwrap_or(0),
        };
        let path = plugins::set_up(
            &ctx,
            pod,
            name,
            &volume.spec,
            &objects,
            &self.node_allocatable,
        )
        .map_err(|e| mount_failed_message(name, &e.to_string()))?;
        self.state
            .lock()
            .unwrap()
            .1
            .mark_volume_as_mounted(MountedVolume {
                volume_name: volume.volume_name.clone(),
                pod_uid: uid.to_string(),
                outer_volume_spec_name: name.clone(),
                plugin_name: volume.spec.plugin_name().to_string(),
                path,
                block: false,
                read_only: volume.spec.read_only(),
                remount_required: false,
                device: None,
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::manager::desired_state_of_world::VolumeToMount;

    fn mount(pod: &str, volume: &str) -> Operation {
        Operation::Mount {
            volume: VolumeToMount {
                volume_name: format!("kubernetes.io/empty-dir/{pod}-{volume}"),
                pod_uid: pod.into(),
                outer_volume_spec_name: volume.into(),
                spec: VolumeSpec::EmptyDir {
                    medium: None,
                    size_limit_bytes: None,
                },
            },
            remount: false,
        }
    }

    fn started(by_pod: &BTreeMap<String, Vec<Operation>>) -> Vec<String> {
        by_pod
            .iter()
            .flat_map(|(pod, ops)| {
                if ops.is_empty() {
                    return vec![format!("{pod}: expand")];
                }
                ops.iter()
                    .map(|op| format!("{pod}: {}", volume_of(op).1))
                    .collect()
            })
            .collect()
    }

    /// One task per pod at a time; a failed volume waits out its back-off (500 ms, then
    /// 1 s, ...) while the pod's other volumes go on; success resets it; a pod with only
    /// its expansion to check gets a task too.
    #[test]
    fn operations_start_per_pod_with_back_off() {
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut o = Operations::default();
        let all = || vec![mount("a", "x"), mount("a", "y"), mount("b", "x")];
        let none = BTreeSet::new();
        assert_eq!(
            started(&o.start(all(), &none, t0)),
            [
                "a: kubernetes.io/empty-dir/a-x",
                "a: kubernetes.io/empty-dir/a-y",
                "b: kubernetes.io/empty-dir/b-x"
            ]
        );
        assert!(o.start(all(), &none, t0).is_empty(), "both pods pending");
        o.finish(
            "a",
            &["mount kubernetes.io/empty-dir/a-y".into()],
            &["mount kubernetes.io/empty-dir/a-x".into()],
            t0,
        );
        assert!(!o.is_pending("a") && o.is_pending("b"));
        assert_eq!(
            started(&o.start(all(), &none, t0 + ms(100))),
            ["a: kubernetes.io/empty-dir/a-y"],
            "a-x in back-off"
        );
        o.finish("a", &[], &[], t0 + ms(100));
        assert_eq!(
            started(&o.start(all(), &none, t0 + ms(500))),
            [
                "a: kubernetes.io/empty-dir/a-x",
                "a: kubernetes.io/empty-dir/a-y"
            ]
        );
        o.finish(
            "a",
            &[],
            &["mount kubernetes.io/empty-dir/a-x".into()],
            t0 + ms(600),
        );
        assert_eq!(
            started(&o.start(vec![mount("a", "x")], &none, t0 + ms(1500))),
            Vec::<String>::new(),
            "doubled to 1 s"
        );
        assert_eq!(
            started(&o.start(vec![mount("a", "x")], &none, t0 + ms(1600))),
            ["a: kubernetes.io/empty-dir/a-x"]
        );
        o.finish(
            "a",
            &["mount kubernetes.io/empty-dir/a-x".into()],
            &[],
            t0 + ms(1700),
        );
        o.finish("b", &[], &[], t0 + ms(1700));
        assert_eq!(
            started(&o.start(vec![], &BTreeSet::from(["b".to_string()]), t0 + ms(1700))),
            ["b: expand"]
        );
    }
}
