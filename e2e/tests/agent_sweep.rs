//! A killed test agent leaves nothing behind, and its sweep touches nothing else: a real
//! `rekube-node-agent run` with a running pod (an emptyDir of `medium: Memory`, its
//! namespace files and `/dev/shm`) is killed with SIGKILL and its `AgentProcess` dropped
//! without the pod being deleted; then none of the container's processes lives, nothing
//! is mounted under the agent's root (which is gone), the pod's cgroups are gone and so
//! is a loop device backed by a file under the root. A second agent, whose node name,
//! root directory and cgroup parent are the first's with a suffix, keeps its running pod;
//! the test's own tmpfs and loop device beside the root, named as the root plus a suffix,
//! stay. And the same with a pod on a CSI volume of the real `rekube-csi`: its staging
//! and publish mounts unmounted, the loop device they held detached.
//!
//! Skipped (with a message) when not root or without Debian's busybox-static.
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, PostParams};
use rekube_crds::Pod;
use rekube_csi::kernel::{Kernel, LinuxKernel};
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::storage::{
    CsiDriverProcess, MIB, create_csi_driver, delete_test_volumes, static_csi_volume_and_claim,
};
use rekube_e2e::sweep::{
    CGROUP_ROOT, cgroup_dirs, loop_backing_file, loops_under, mount_table, mounts_under,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// A pod on `node` whose container writes to an emptyDir in memory and sleeps.
fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo kept > /mem/x && exec sleep 3600"],
                "volumeMounts": [{"name": "mem", "mountPath": "/mem"}]}],
            "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
        },
    }))
    .unwrap()
}

async fn running(pods: &Api<Pod>, name: &str, agent: &AgentProcess) -> Pod {
    wait_until(&format!("pod {name} running"), T, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") if !agent.container_pids(&p, "main").is_empty() => Ok(p),
            other => Err(format!("{other:?} {:?}\n{}", p.status, agent.logs())),
        }
    })
    .await
}

/// Whether process `pid` lives (a zombie is dead: only its exit status is left).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 2..].chars().next())
                .map(|state| state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The kinds of mounts under an agent's root that the sweep must remove, all there.
fn assert_pod_mounts(root: &Path, what: &str) {
    let mounts = mounts_under(root);
    for want in ["kubernetes.io~empty-dir/mem", "/run/netns/", "/shm"] {
        assert!(
            mounts.iter().any(|m| m.contains(want)),
            "{what}: no mount with {want:?} under {}: {mounts:#?}",
            root.display()
        );
    }
}

/// The test's own state beside the doomed agent's root, removed when the test ends.
struct Beside {
    dir: PathBuf,
    device: Option<PathBuf>,
}

impl Drop for Beside {
    fn drop(&mut self) {
        if let Some(device) = self.device.take() {
            let _ = LinuxKernel.loop_detach(&device);
        }
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[tokio::test]
async fn a_killed_agent_is_swept_when_dropped_and_nothing_else_is() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("agent-sweep").await;
    let mut doomed = AgentProcess::start_real(&ns, "n", &[]);
    // The same names with a suffix: a sweep matching by string prefix would take its
    // root, its mounts and its cgroups too.
    let other = AgentProcess::start_real(&ns, "n2", &[]);
    assert!(
        other
            .root
            .to_string_lossy()
            .starts_with(&*doomed.root.to_string_lossy())
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    pods.create(&pp, &pod("doomed", &doomed.node_name))
        .await
        .unwrap();
    pods.create(&pp, &pod("kept", &other.node_name))
        .await
        .unwrap();
    let doomed_pod = running(&pods, "doomed", &doomed).await;
    let kept_pod = running(&pods, "kept", &other).await;

    // What the doomed agent made: the sweep has something to remove.
    let footprint = doomed.footprint();
    let root = doomed.root.clone();
    let uid = doomed_pod.metadata.uid.clone().unwrap();
    let pids = doomed.container_pids(&doomed_pod, "main");
    assert_pod_mounts(&root, "the doomed agent");
    let pod_cgroups: Vec<PathBuf> = cgroup_dirs(
        Path::new(CGROUP_ROOT),
        &format!("{}/pod{uid}", footprint.cgroup_parent),
    )
    .into_iter()
    .filter(|d| d.exists())
    .collect();
    assert!(!pod_cgroups.is_empty(), "the pod's cgroups");
    // A loop device on a file under the root (as the agent's block volume maps hold
    // theirs), and the test's own: a tmpfs beside the root, named as the root plus a
    // suffix, with a loop device on a file in it.
    let image = root.join("sweep-test/disk.img");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let inside = LinuxKernel.loop_attach(&image, false).unwrap();
    let mut beside = Beside {
        dir: PathBuf::from(format!("{}-beside", root.display())),
        device: None,
    };
    std::fs::create_dir_all(&beside.dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &beside.dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .unwrap();
    let beside_image = beside.dir.join("disk.img");
    std::fs::File::create(&beside_image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let beside_device = LinuxKernel.loop_attach(&beside_image, false).unwrap();
    beside.device = Some(beside_device.clone());

    // The agent dies as in a crash; its container lives on without it.
    doomed.kill();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "the container outlives the kill"
    );
    assert!(!footprint.leftovers().is_empty());
    // The test ends for this agent without deleting its pod.
    drop(doomed);

    // Nothing of the doomed agent is left.
    wait_until(
        "the container's processes gone",
        Duration::from_secs(10),
        || async {
            let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
    assert!(!root.exists(), "{} removed", root.display());
    assert_eq!(mounts_under(&root), Vec::<String>::new());
    assert_eq!(loops_under(&root), Vec::new());
    assert_eq!(
        loop_backing_file(&inside),
        None,
        "{} detached",
        inside.display()
    );
    for d in pod_cgroups {
        assert!(!d.exists(), "{} removed", d.display());
    }
    for d in cgroup_dirs(Path::new(CGROUP_ROOT), &footprint.cgroup_parent) {
        assert!(!d.exists(), "{} removed", d.display());
    }

    // And nothing else: the test's mount and loop device beside the root, and the other
    // agent with its running pod.
    assert!(
        mount_table().iter().any(|m| m.mount_point == beside.dir),
        "the test's tmpfs at {} kept",
        beside.dir.display()
    );
    assert_eq!(
        loop_backing_file(&beside_device),
        Some(beside_image.clone())
    );
    assert!(beside_image.exists());
    let kept_pids = other.container_pids(&kept_pod, "main");
    assert!(!kept_pids.is_empty() && kept_pids.iter().all(|p| alive(*p)));
    assert_pod_mounts(&other.root, "the other agent");
    let (out, err, ok) = other.exec_shell(&kept_pod, "main", "cat /mem/x");
    assert!(ok && out == "kept", "{out} {err}");

    delete_all_pods_and_check_leftovers(&pods, &other, T).await;
}

/// The failure that left a machine dirty before the sweep (a csi_attach run that failed
/// with its pod running): a pod on a CSI local-disk volume of the real `rekube-csi`
/// (staged: ext4 on a loop device of the driver's image, mounted under the agent's root;
/// published into the pod's volume directory) and an emptyDir in memory; the agent killed
/// with SIGKILL and dropped without the pod being deleted. Then the staging and publish
/// mounts, the namespace files and `/dev/shm` are unmounted, the loop device the staging
/// mount held is detached, the container is dead, and the driver still serves.
#[tokio::test]
async fn a_killed_agents_csi_volume_is_swept_when_dropped() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("agent-sweep-csi").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );
    let node = ns.cluster_name("n");
    let dir = std::env::temp_dir().join(format!("rekube-e2e-csi-{}", ns.name));
    let driver_name = create_csi_driver(&ns, false).await;
    let driver = CsiDriverProcess::start(&dir, &driver_name, &node, &[]);
    let handle = driver
        .create_local_disk(&format!("pvc-{}", ns.name), 64 * MIB)
        .await;
    let mut agent = AgentProcess::start_real(&ns, "n", &["--csi-driver", &driver.agent_flag()]);
    static_csi_volume_and_claim(&ns, &driver_name, &handle, &node).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let mut spec = pod("doomed", &node);
    let volumes = spec.spec.as_mut().unwrap();
    volumes.containers[0]
        .volume_mounts
        .get_or_insert_default()
        .push(serde_json::from_value(json!({"name": "disk", "mountPath": "/disk"})).unwrap());
    volumes.volumes.get_or_insert_default().push(
        serde_json::from_value(
            json!({"name": "disk", "persistentVolumeClaim": {"claimName": "data"}}),
        )
        .unwrap(),
    );
    pods.create(&PostParams::default(), &spec).await.unwrap();
    let doomed_pod = running(&pods, "doomed", &agent).await;

    let footprint = agent.footprint();
    let root = agent.root.clone();
    let pids = agent.container_pids(&doomed_pod, "main");
    assert_pod_mounts(&root, "the agent");
    let ext4: Vec<String> = mount_table()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&root) && m.fs_type == "ext4")
        .map(|m| format!("{} {}", m.mount_point.display(), m.source))
        .collect();
    assert!(
        ext4.iter()
            .any(|m| m.contains("globalmount") && m.contains("/dev/loop"))
            && ext4.iter().any(|m| m.contains("kubernetes.io~csi")),
        "staged and published: {ext4:#?}"
    );
    let image_loops = loops_under(&driver.state);
    assert_eq!(image_loops.len(), 1, "the staged image's loop device");

    agent.kill();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "the container outlives the kill"
    );
    drop(agent);

    wait_until(
        "the container's processes gone",
        Duration::from_secs(10),
        || async {
            let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
    assert!(!root.exists(), "{} removed", root.display());
    assert_eq!(
        loops_under(&driver.state),
        Vec::new(),
        "the loop device the staging mount held"
    );
    // The driver is the test's, not the agent's: it still answers.
    driver
        .controller()
        .await
        .delete_volume(rekube_csi::csi::DeleteVolumeRequest {
            volume_id: handle,
            secrets: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume: {e}\n{}", driver.logs()));
    delete_test_volumes(&ns).await;
}
