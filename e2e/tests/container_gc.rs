//! Container garbage collection by a real `rekube-node-agent run` (as root): a pod whose
//! container exits at once, restartPolicy Always, crash-loops 50 times (the
//! CrashLoopBackOff cap set to 1 s with `--crash-loop-back-off-max-container-restart-period`)
//! while its footprint stays bounded: never more than two instances (the running or
//! newest dead one and the one kept before it, upstream's
//! `--maximum-dead-containers-per-container 1`) have a state directory (overlay dirs),
//! cgroups or log files; the agent's disk usage under its root directory, its open file
//! descriptors and its RSS after 50 restarts are within a small bound of what they were
//! after 5; the status keeps counting restarts and shows the last termination.
//!
//! Skipped (with a message) when not root or without Debian's busybox-static.
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::Pod;
use rekube_e2e::TestNamespace;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, wait_pods_released};
use serde_json::json;

/// Bytes allocated to everything under `dir` (st_blocks, as `du`).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}

fn count_entries(dir: &Path, keep: impl Fn(&std::fs::DirEntry) -> bool) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| keep(e)).count())
        .unwrap_or(0)
}

/// The most container cgroups under the pod's cgroup in any hierarchy.
fn container_cgroups(parent: &str, uid: &str) -> usize {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs: Vec<PathBuf> = vec![root.join(parent).join(format!("pod{uid}"))];
    if let Ok(hierarchies) = std::fs::read_dir(root) {
        for h in hierarchies.flatten() {
            dirs.push(h.path().join(parent).join(format!("pod{uid}")));
        }
    }
    dirs.iter()
        .map(|d| count_entries(d, |e| e.path().is_dir()))
        .max()
        .unwrap_or(0)
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn open_fds(pid: u32) -> usize {
    count_entries(Path::new(&format!("/proc/{pid}/fd")), |_| true)
}

/// What the test watches of the agent and the crash-looping container.
#[derive(Debug, Clone, Copy, Default)]
struct Footprint {
    /// Container state directories (overlay upper, work, rootfs) under `<root>/containers`.
    instances: usize,
    /// Container cgroups under the pod's cgroup.
    cgroups: usize,
    /// The container's log files (`<n>.log` and rotated ones).
    logs: usize,
    disk: u64,
    fds: usize,
    rss: u64,
}

struct Watch<'a> {
    agent: &'a AgentProcess,
    uid: String,
    log_dir: PathBuf,
}

impl Watch<'_> {
    fn read(&self) -> Footprint {
        let pid = self.agent.pid().expect("the agent runs");
        Footprint {
            instances: count_entries(&self.agent.root.join("containers"), |e| e.path().is_dir()),
            cgroups: container_cgroups(&self.agent.cgroup_parent(), &self.uid),
            logs: count_entries(&self.log_dir, |_| true),
            disk: disk_usage(&self.agent.root),
            fds: open_fds(pid),
            rss: rss_bytes(pid),
        }
    }
}

async fn restart_count(pods: &Api<Pod>, name: &str) -> Result<(Pod, i32), String> {
    let p = pods.get(name).await.map_err(|e| e.to_string())?;
    let n = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count);
    Ok((p, n))
}

/// Samples the footprint every 200 ms until the container's restartCount reaches
/// `target`; returns the largest counts seen on the way and the last reading.
async fn crash_loop_until(
    pods: &Api<Pod>,
    watch: &Watch<'_>,
    target: i32,
    timeout: Duration,
) -> (Footprint, Footprint, Pod) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut most = Footprint::default();
    loop {
        let now = watch.read();
        most.instances = most.instances.max(now.instances);
        most.cgroups = most.cgroups.max(now.cgroups);
        most.logs = most.logs.max(now.logs);
        let (p, n) = restart_count(pods, "crash")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if n >= target {
            return (most, watch.read(), p);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for restartCount {target} (at {n}); status {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_crash_looping_pod_keeps_a_bounded_footprint() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("container-gc").await;
    let agent = AgentProcess::start_real(
        &ns,
        "n",
        &["--crash-loop-back-off-max-container-restart-period", "1s"],
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "crash"},
        "spec": {
            "nodeName": agent.node_name, "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo crashing; exit 1"]}],
        }
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let watch = Watch {
        agent: &agent,
        log_dir: agent.pod_log_dir(&ns.name, "crash", &uid).join("c"),
        uid: uid.clone(),
    };

    let (most_early, early, _) = crash_loop_until(&pods, &watch, 5, Duration::from_secs(120)).await;
    let (most, late, p) = crash_loop_until(&pods, &watch, 50, Duration::from_secs(400)).await;
    eprintln!(
        "after 5 restarts: {early:?} (most {most_early:?}); after 50: {late:?} (most {most:?})"
    );

    // At most the newest instance and the dead one kept before it, at every sample.
    for (what, n) in [
        (
            "state directories",
            most.instances.max(most_early.instances),
        ),
        ("container cgroups", most.cgroups.max(most_early.cgroups)),
        ("log files", most.logs.max(most_early.logs)),
    ] {
        assert!((1..=2).contains(&n), "{what}: at most {n} at once");
    }
    // Flat: the disk under the agent's root (images, state, logs), its descriptors and
    // memory. Without GC, 45 more instances would add 45 pidfds and 45 overlay
    // directory sets and log files (> 500 KiB).
    assert!(
        late.disk <= early.disk + 128 * 1024,
        "disk under {}: {} bytes after 5 restarts, {} after 50",
        agent.root.display(),
        early.disk,
        late.disk
    );
    assert!(
        late.fds <= early.fds + 8,
        "open descriptors: {} after 5 restarts, {} after 50",
        early.fds,
        late.fds
    );
    assert!(
        late.rss <= early.rss + 8 * 1024 * 1024,
        "RSS: {} bytes after 5 restarts, {} after 50",
        early.rss,
        late.rss
    );

    // The status still counts every restart and shows the last termination.
    let cs = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(cs.restart_count >= 50, "{cs:?}");
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .unwrap_or_else(|| panic!("no lastState.terminated: {cs:?}"));
    assert_eq!(last.exit_code, 1, "{cs:?}");
    // The kept dead instance's log is there (what `kubectl logs --previous` reads); the
    // first instances' logs are gone.
    let logs: Vec<u32> = std::fs::read_dir(&watch.log_dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    assert!(
        logs.iter().any(|n| *n >= 49) && logs.iter().all(|n| *n >= 48),
        "log files {logs:?}"
    );
    // The lowest-numbered file is always a dead instance's (GC keeps one).
    let kept = logs.iter().min().unwrap();
    let text = agent.container_log(&ns.name, "crash", &uid, "c", *kept);
    assert!(text.contains(" stdout F crashing"), "{text:?}");

    // Deleting the pod leaves nothing.
    pods.delete("crash", &DeleteParams::default())
        .await
        .unwrap();
    wait_pods_released(&pods, Duration::from_secs(60)).await;
    agent.wait_no_leftovers(Duration::from_secs(10)).await;
    assert_eq!(
        count_entries(&agent.root.join("containers"), |_| true),
        0,
        "state directories left"
    );
}
