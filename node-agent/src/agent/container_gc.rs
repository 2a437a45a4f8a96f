//! The agent's container garbage collection (upstream kubelet `StartGarbageCollection`
//! with `ContainerGCPeriod`, kuberuntime_gc.go `GarbageCollect`): the decisions are
//! [`crate::kubelet::container_gc`]; this removes what they name. A removed instance
//! loses its cgroup, its rootfs (overlay upper, work and mount directories under the
//! state directory), its CRI log files (`<n>.log` and its rotated files, upstream's
//! `logPath*`), its probe results and its record in the pod's runtime status.
//!
//! Two passes: every pod sync starts with one over that pod (the per-container limit,
//! so a crash-looping container keeps at most one dead instance besides the running
//! one), and every [`CONTAINER_GC_PERIOD`] one over every pod with the whole policy (the
//! node-wide `--maximum-dead-containers` too). Sandbox records that are neither ready,
//! nor the pod's newest, nor referenced by a container go as upstream's `evictSandboxes`
//! (the sandbox itself was removed when it stopped). A deleted pod's containers, sandbox
//! and logs are removed by `sync_terminated_pod`, so GC sees only pods that exist.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::sync_pod::{PodState, RealSyncer};
use crate::kubelet::container_gc::{
    ContainerGcPolicy, Eviction, GcContainer, GcSandbox, PodStateProvider, evict_containers,
    evict_sandboxes,
};
use crate::kubelet::runtime_status::PodRuntimeStatus;

/// Upstream `ContainerGCPeriod`.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub containers: usize,
    pub sandboxes: usize,
}

/// The pods GC sees are the agent's live pods: none deleted, none terminated (a
/// terminated pod's containers stay until it is deleted, as upstream's regular GC).
struct LivePods;

impl PodStateProvider for LivePods {
    fn is_pod_deleted(&self, _uid: &str) -> bool {
        false
    }
    fn is_pod_terminated(&self, _uid: &str) -> bool {
        false
    }
}

fn gc_containers(uid: &str, status: &PodRuntimeStatus) -> Vec<GcContainer> {
    status
        .containers
        .iter()
        .map(|c| GcContainer {
            id: c.id.clone(),
            pod_uid: uid.to_string(),
            name: c.name.clone(),
            created_at: c.created_at,
            state: c.state,
            attempt: u32::try_from(c.restart_count).unwrap_or(0),
            sandbox_id: c.sandbox_id.clone(),
        })
        .collect()
}

fn gc_sandboxes(uid: &str, status: &PodRuntimeStatus) -> Vec<GcSandbox> {
    status
        .sandboxes
        .iter()
        .map(|s| GcSandbox {
            id: s.id.clone(),
            pod_uid: uid.to_string(),
            created_at: s.created_at,
            state: s.state,
            attempt: s.attempt,
        })
        .collect()
}

/// Upstream `removeContainerLog` (the log manager's `Clean`): the log file and its
/// rotated files, `<log>*`.
fn remove_container_logs(log: &Path) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(name))
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

impl RealSyncer {
    /// Removes the evicted containers of one pod (its lock held): a container whose
    /// process still runs is left alone unless it is in an unknown state (killed first);
    /// one whose removal fails stays for the next pass.
    async fn remove_evicted(&self, st: &mut PodState, evictions: &[Eviction]) -> usize {
        let mut removed = Vec::new();
        for e in evictions {
            let Some(c) = st.containers.get(&e.id).cloned() else {
                continue;
            };
            if c.exit().is_none() {
                if !e.kill_first {
                    continue;
                }
                if let Err(err) = self.runtime.stop_container(&c, Duration::ZERO).await {
                    tracing::warn!(container = %e.id, error = %err, "failed to stop container before removal");
                    continue;
                }
            }
            if let Some(log) = c.log_path()
                && let Err(err) = remove_container_logs(log)
            {
                tracing::warn!(container = %e.id, log = %log.display(), error = %err, "failed to remove container log");
            }
            if let Err(err) = self.runtime.remove_container(&c).await {
                tracing::warn!(container = %e.id, error = %err, "failed to remove container");
                continue;
            }
            st.containers.remove(&e.id);
            st.status
                .lock()
                .unwrap()
                .containers
                .retain(|s| s.id != e.id);
            removed.push(e.id.clone());
        }
        self.prober.forget_containers(&removed);
        removed.len()
    }

    /// Drops the pod's sandbox records upstream's `evictSandboxes` would remove.
    fn remove_dead_sandboxes(&self, uid: &str, st: &PodState) -> usize {
        let mut status = st.status.lock().unwrap();
        let gone = evict_sandboxes(
            &gc_sandboxes(uid, &status),
            &gc_containers(uid, &status),
            &LivePods,
            false,
        );
        status.sandboxes.retain(|s| !gone.contains(&s.id));
        gone.len()
    }

    /// One pod's pass, its lock held: the per-container limit and the minimum age (the
    /// node-wide limit is the periodic pass's).
    pub(super) async fn collect_pod_garbage(&self, uid: &str, st: &mut PodState) -> GcReport {
        let policy = ContainerGcPolicy {
            max_containers: -1,
            ..self.config.container_gc
        };
        let containers = gc_containers(uid, &st.status.lock().unwrap());
        let evictions = evict_containers(
            &policy,
            &containers,
            &LivePods,
            true,
            false,
            Timestamp::now(),
        );
        GcReport {
            containers: self.remove_evicted(st, &evictions).await,
            sandboxes: self.remove_dead_sandboxes(uid, st),
        }
    }

    /// The node's pass (upstream `GarbageCollect`): every pod's containers under the
    /// whole policy, then each pod's dead sandbox records.
    pub async fn garbage_collect_containers(&self) -> GcReport {
        let states: Vec<(String, Arc<tokio::sync::Mutex<PodState>>)> = self
            .pods
            .lock()
            .unwrap()
            .iter()
            .map(|(uid, s)| (uid.clone(), Arc::clone(s)))
            .collect();
        let mut all = Vec::new();
        for (uid, state) in &states {
            let st = state.lock().await;
            all.extend(gc_containers(uid, &st.status.lock().unwrap()));
        }
        let owner: HashMap<&str, &str> = all
            .iter()
            .map(|c| (c.id.as_str(), c.pod_uid.as_str()))
            .collect();
        let evictions = evict_containers(
            &self.config.container_gc,
            &all,
            &LivePods,
            true,
            false,
            Timestamp::now(),
        );
        let mut report = GcReport::default();
        for (uid, state) in &states {
            let mine: Vec<Eviction> = evictions
                .iter()
                .filter(|e| owner.get(e.id.as_str()) == Some(&uid.as_str()))
                .cloned()
                .collect();
            let mut st = state.lock().await;
            report.containers += self.remove_evicted(&mut st, &mine).await;
            report.sandboxes += self.remove_dead_sandboxes(uid, &st);
        }
        report
    }
}

/// Runs the node's pass every `period` until `stop` turns true.
pub async fn run(syncer: Arc<RealSyncer>, period: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        let report = syncer.garbage_collect_containers().await;
        if report != GcReport::default() {
            tracing::info!(
                containers = report.containers,
                sandboxes = report.sandboxes,
                "container garbage collection"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's `logPath*`: the live file and its rotated (and gzipped) files go,
    /// another instance's `10.log` does not.
    #[test]
    fn container_logs_are_removed_with_their_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "1.log",
            "1.log.20261128-080000",
            "1.log.20261128-070000.gz",
            "10.log",
            "2.log",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        remove_container_logs(&dir.path().join("1.log")).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["10.log", "2.log"]);
        // A directory that is gone already is not an error.
        remove_container_logs(&dir.path().join("gone").join("0.log")).unwrap();
    }
}
