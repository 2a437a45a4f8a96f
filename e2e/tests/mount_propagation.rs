//! volumeMounts' mountPropagation on a real `rekube-node-agent run` (as root), ported from
//! test/e2e/node/mount_propagation.go (v1.36.3) "Mount propagation should propagate
//! mounts within defined scopes": four privileged pods share a hostPath directory under
//! the agent's root directory (upstream's `/var/lib/kubelet/<namespace>`, on the
//! kubelet's rshared root), master (Bidirectional), slave (HostToContainer), private
//! (None) and default (unset); each mounts a tmpfs on its own subdirectory, the host
//! mounts one too, and each sees exactly the mounts upstream's matrix says, the agent's
//! mount namespace the master's and the host's. After the mounts are undone and the pods
//! deleted, no mount is left under the directory, none of the containers' (overlay,
//! /proc, /dev, /sys) ever reached the host, and nothing of the pods is left.
//!
//! And containerd's checks of a volume's source (`ensureSharedOrSlave`, `ensureShared`):
//! HostToContainer and Bidirectional volumes on a private host mount are refused with
//! CreateContainerError and containerd's message; None works there.
//!
//! `kubectl exec` is nsenter into the container ([`AgentProcess::exec_shell`]: rekube's
//! Pods have no exec subresource); upstream's hostExec is this test process, on the host.
//! One difference from upstream's setup: containerd creates a missing hostPath
//! directory, rekube's runtime does not, so the test makes it first.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::{Api, PostParams};
use rekube_crds::Pod;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// upstream's `preparePod`: busybox making `/mnt/test/<name>` and sleeping, privileged,
/// the hostPath `host_dir` at /mnt/test with `propagation`.
fn prepare_pod(name: &str, node: &str, propagation: Option<&str>, host_dir: &Path) -> Pod {
    let mut mount = json!({"name": "host", "mountPath": "/mnt/test"});
    if let Some(p) = propagation {
        mount["mountPropagation"] = json!(p);
    }
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "cntr", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", format!("mkdir /mnt/test/{name}; sleep 3600")],
                "volumeMounts": [mount],
                "securityContext": {"privileged": true},
            }],
            "volumes": [{"name": "host", "hostPath": {"path": host_dir}}],
            // speed up termination of the pod
            "terminationGracePeriodSeconds": 1,
        },
    }))
    .unwrap()
}

/// `podClient.CreateSync`: created, then Running (with its container's ID).
async fn create_sync(pods: &Api<Pod>, pod: Pod) -> Pod {
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until(&format!("pod {name} running"), T, || async {
        let p = pods.get(&name).await.map_err(|e| e.to_string())?;
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let started = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|l| l.iter().all(|c| c.container_id.is_some()));
        if running && started {
            Ok(p)
        } else {
            Err(format!("{:?}", p.status))
        }
    })
    .await
}

/// Runs `cmd` on the host (upstream's hostExec), failing the test when it fails.
fn host(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host's mounts (mount point, filesystem type, source) under `dir`, `dir` itself
/// left out.
fn host_mounts_under(dir: &Path) -> Vec<(PathBuf, String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let point = PathBuf::from(fields[4]);
            (point.starts_with(dir) && point != dir).then(|| {
                (
                    point,
                    fields[dash + 1].to_string(),
                    fields[dash + 2].to_string(),
                )
            })
        })
        .collect()
}

/// The host's (top) mount at `point`: its ID, its parent's, and whether it is shared.
fn host_mount_at(point: &Path) -> Option<(u32, u32, bool)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            (Path::new(fields[4]) == point).then(|| {
                (
                    fields[0].parse().unwrap(),
                    fields[1].parse().unwrap(),
                    fields[6..dash].iter().any(|o| o.starts_with("shared:")),
                )
            })
        })
}

/// The host's tmpfs mounts whose source is one of `sources` (the names a test gave its
/// tmpfs), anywhere.
fn tmpfs_on_host(sources: &[String]) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.iter().position(|f| *f == "-").is_some_and(|dash| {
                fields.get(dash + 1) == Some(&"tmpfs")
                    && fields
                        .get(dash + 2)
                        .is_some_and(|s| sources.iter().any(|x| x == s))
            })
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn should_propagate_mounts_within_defined_scopes() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::privileged("mount-propagation").await;
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);

    // hostDir: the directory shared via HostPath among all pods, under the agent's root
    // directory as upstream's is under /var/lib/kubelet.
    // Registered: the agent has made its root directory rshared (before anything else,
    // as the kubelet's setupDataDirs; a mount made under it before would be hidden by the
    // bind).
    agent.wait_node_ready(&ns.client, T).await;
    let host_dir = agent.root.join(&ns.name);
    std::fs::create_dir_all(&host_dir).unwrap();
    // A host mount under the agent's rshared root directory before the pods: the
    // master's container detaches its old root, whose mounts are the host's peers under
    // an rshared rootfs; made rslave first (runc's pivotRoot), the detach does not
    // unmount the host's.
    let sentinel = agent.root.join("e2e-sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    let st = sentinel.display();
    host(&format!(
        "mount -t tmpfs e2e-mount-propagation-sentinel {st:?}"
    ));
    let sentinel_guard = Unmount(sentinel.clone());

    let master = create_sync(
        &pods,
        prepare_pod("master", &node, Some("Bidirectional"), &host_dir),
    )
    .await;
    let slave = create_sync(
        &pods,
        prepare_pod("slave", &node, Some("HostToContainer"), &host_dir),
    )
    .await;
    let private = create_sync(
        &pods,
        prepare_pod("private", &node, Some("None"), &host_dir),
    )
    .await;
    let default = create_sync(&pods, prepare_pod("default", &node, None, &host_dir)).await;
    // The agent's root directory is still its own shared mount, the sentinel on it.
    let root_mount = host_mount_at(&agent.root).expect("the root directory's own mount");
    assert!(
        root_mount.2,
        "the root directory's mount is shared: {root_mount:?}"
    );
    let sentinel_mount = host_mount_at(&sentinel).expect("the sentinel is still mounted");
    assert_eq!(
        sentinel_mount.1, root_mount.0,
        "the sentinel is still on the root directory's mount"
    );
    drop(sentinel_guard);
    let all = [&master, &slave, &private, &default];
    let name = |p: &Pod| p.metadata.name.clone().unwrap();
    let pod_names: Vec<String> = all.iter().map(|p| name(p)).collect();

    // Check that the pods see directories of each other. This just checks that they have
    // the same HostPath, not the mount propagation. (Each makes its own directory after
    // it starts: waited for.)
    for pod in all {
        for dir in &pod_names {
            let cmd = format!("test -d /mnt/test/{dir}");
            wait_until(&format!("{dir} in pod {}", name(pod)), T, || async {
                match agent.exec_shell(pod, "cntr", &cmd) {
                    (_, _, true) => Ok(()),
                    (out, err, false) => Err(format!("{out} {err}")),
                }
            })
            .await;
        }
    }

    // The host's mount table as the containers were started: what they mount for
    // themselves stays in their namespaces. The one mount of theirs on the host is the
    // master's rootfs directory, a private bind of its own (runc's
    // rootfsParentMountPrivate needs it), not the overlay.
    let containers_dir = agent.root.join("containers");
    let rootfs_mounts = host_mounts_under(&containers_dir);
    assert_eq!(rootfs_mounts.len(), 1, "{rootfs_mounts:?}");
    assert!(rootfs_mounts[0].0.ends_with("rootfs"), "{rootfs_mounts:?}");
    assert!(
        !["overlay", "proc", "sysfs", "tmpfs", "devpts", "mqueue"]
            .contains(&rootfs_mounts[0].1.as_str()),
        "{rootfs_mounts:?}"
    );

    // Each pod mounts one tmpfs to /mnt/test/<podname> and puts a file there.
    for pod in all {
        let n = name(pod);
        let cmd = format!(
            "mount -t tmpfs e2e-mount-propagation-{n} /mnt/test/{n}; echo {n} > /mnt/test/{n}/file"
        );
        let (out, err, ok) = agent.exec_shell(pod, "cntr", &cmd);
        assert!(ok, "pod {n}: {cmd}: {out} {err}");
    }

    // The host mounts one tmpfs to testdir/host and puts a file there so we can check
    // mount propagation from the host to pods.
    let hd = host_dir.display();
    host(&format!(
        "mkdir {hd:?}/host; mount -t tmpfs e2e-mount-propagation-host {hd:?}/host; echo host > {hd:?}/host/file"
    ));

    // Now check that mounts are propagated to the right containers: pod name -> the
    // mounts visible in the pod.
    let expected: [(&str, &[&str]); 4] = [
        // Master sees only its own mount and not the slave's one.
        ("master", &["master", "host"]),
        // Slave sees master's mount + itself.
        ("slave", &["master", "slave", "host"]),
        // Private sees only its own mount
        ("private", &["private"]),
        // Default (=private) sees only its own mount
        ("default", &["default"]),
    ];
    let mut dir_names = pod_names.clone();
    dir_names.push("host".into());
    let mut failures = Vec::new();
    for (pod_name, mounts) in expected {
        let pod = all.iter().find(|p| name(p) == pod_name).unwrap();
        let visible: BTreeSet<&str> = mounts.iter().copied().collect();
        for mount_name in &dir_names {
            let cmd = format!("cat /mnt/test/{mount_name}/file");
            let (stdout, stderr, ok) = agent.exec_shell(pod, "cntr", &cmd);
            eprintln!(
                "pod {pod_name} mount {mount_name}: stdout: {stdout:?}, stderr: {stderr:?} ok: {ok}"
            );
            let msg = format!("When checking pod {pod_name} and directory {mount_name}");
            if visible.contains(mount_name.as_str()) {
                if !ok || stdout != *mount_name {
                    failures.push(format!(
                        "{msg}: expected {mount_name:?}, got {stdout:?} ({stderr})"
                    ));
                }
            } else if ok {
                // We *expect* cat to return error here
                failures.push(format!("{msg}: expected an error, got {stdout:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The agent's mount namespace (upstream: the kubelet's, through nsenter): the master's
    // and the host's mounts are there, the slave's, private's and default's are not.
    let agent_ns = format!("nsenter -t {} -m", agent.pid().unwrap());
    for mount_name in ["host", "master"] {
        let output = host(&format!("{agent_ns} cat \"{hd}/{mount_name}/file\""));
        assert_eq!(
            output, mount_name,
            "host container namespace should see mount contents from {mount_name}"
        );
    }
    for pod_name in ["slave", "private", "default"] {
        host(&format!("{agent_ns} test ! -e \"{hd}/{pod_name}/file\""));
    }

    // upstream's DeferCleanup, last first: the host's mount, then each pod's.
    host(&format!("umount {hd:?}/host"));
    for pod in all.iter().rev() {
        let n = name(pod);
        let (out, err, ok) = agent.exec_shell(pod, "cntr", &format!("umount /mnt/test/{n}"));
        assert!(ok, "pod {n}: umount: {out} {err}");
    }
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    // No mount is left under the test directory, of this test's tmpfs anywhere on the
    // host, or of the containers under the agent's state directory.
    assert_eq!(host_mounts_under(&host_dir), vec![]);
    let sources: Vec<String> = dir_names
        .iter()
        .map(|n| format!("e2e-mount-propagation-{n}"))
        .collect();
    assert_eq!(tmpfs_on_host(&sources), Vec::<String>::new());
    assert_eq!(host_mounts_under(&containers_dir), vec![]);
    host(&format!("rm -rf {hd:?}"));
}

/// containerd's `ensureSharedOrSlave` and `ensureShared`: a HostToContainer or a
/// Bidirectional volume whose source is on a private host mount is not created
/// (CreateContainerError, containerd's message); a private (None) one runs.
#[tokio::test]
async fn propagation_from_a_private_host_mount_is_refused() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::privileged("mount-propagation-private").await;
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    let node = agent.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    // A private mount of the test's own, whatever the host's / is.
    let dir = std::env::temp_dir().join(format!("rekube-e2e-private-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let source = format!("e2e-{}", ns.name);
    host(&format!(
        "mount -t tmpfs {source} {d:?} && mount --make-private {d:?}"
    ));
    let guard = Unmount(dir.clone());

    for (name, propagation) in [("slave", "HostToContainer"), ("master", "Bidirectional")] {
        pods.create(
            &PostParams::default(),
            &prepare_pod(name, &node, Some(propagation), &dir),
        )
        .await
        .unwrap();
    }
    let private = create_sync(&pods, prepare_pod("private", &node, Some("None"), &dir)).await;
    let (out, err, ok) = agent.exec_shell(&private, "cntr", "test -d /mnt/test/private");
    assert!(ok, "{out} {err}");

    for (name, kind) in [("slave", "a shared or slave"), ("master", "a shared")] {
        let want = format!("path \"{d}\" is mounted on \"{d}\" but it is not {kind} mount");
        wait_until(&format!("pod {name} refused"), T, || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            let waiting = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|l| l.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.clone());
            match waiting {
                Some(w)
                    if w.reason.as_deref() == Some("CreateContainerError")
                        && w.message.as_deref().is_some_and(|m| m.contains(&want)) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    drop(guard);
    assert!(!dir.exists());
    assert_eq!(tmpfs_on_host(&[source]), Vec::<String>::new());
}

/// Unmounts the test's own mount and removes its directory, also when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::empty());
        let _ = std::fs::remove_dir(&self.0);
    }
}
