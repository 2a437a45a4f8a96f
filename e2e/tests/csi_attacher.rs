//! The attach step with rekube-csi (docs/volumes.md, "CSI attach"): the real driver serving with
//! `--attach-required` on a socket in a temporary directory and its attacher
//! (`rekube-csi attacher`, external-attacher's role, node-local) for one node of the test
//! whose `csi.volume.kubernetes.io/nodeid` annotation names the driver's node id. The test
//! plays the attach/detach controller: it makes a local-disk volume with CreateVolume, a
//! PersistentVolume of it and a VolumeAttachment; the attacher publishes it (the image on
//! a real loop device, whose path is the attachment's metadata), and unpublishes it when
//! the attachment is deleted (the loop device gone, the finalizers off, the attachment
//! gone). An attachment of a volume the driver does not know gets the driver's NOT_FOUND
//! as its attachError. Without `--attach-required` the attacher is upstream's trivial
//! one. The same scenario with the upstream peer: external-attacher v4.13.0's
//! csi-attacher (built by `e2e/scripts/build-kubernetes.sh external-attacher`) against
//! `rekube-csi --attach-required` on storage.k8s.io VolumeAttachments, its CSINode and a
//! core PersistentVolume, the same loop device and the same attachError. Nothing is left:
//! no loop device, image, process or object.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::storage_keys::{attacher_finalizer, attachment_name};
use rekube_crds::testing::{cache_dir, missing_prerequisite};
use rekube_crds::{PersistentVolume, VolumeAttachment};
use rekube_csi::csi;
use rekube_csi::kernel::{Kernel, LinuxKernel};
use rekube_e2e::nodes::{self, NodeShape, SCOPE_LABEL};
use rekube_e2e::storage::{
    CsiProcess, MIB, delete_test_attachments, delete_test_volumes, loops_under,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const DRIVER: &str = "csi.rekube.io";

/// What a failed test would leave: the test's attachments and volumes (finalizers
/// stripped) and the loop devices on its images, removed when it panics.
struct Leftovers<'a> {
    ns: &'a TestNamespace,
    dir: PathBuf,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (device, _) in loops_under(&self.dir) {
            let _ = LinuxKernel.loop_detach(&device);
        }
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                delete_test_attachments(self.ns).await;
                delete_test_volumes(self.ns).await;
            })
        });
    }
}

/// The driver (with `--attach-required` or not) and its attacher for node `node` of the
/// test, in `dir`.
fn start(dir: &Path, node: &str, attach_required: bool) -> (CsiProcess, CsiProcess) {
    let socket = dir.join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let mut args = vec![
        format!("--endpoint={endpoint}"),
        format!("--node-id={node}"),
        format!("--state-dir={}", dir.join("state").display()),
        "--capacity=1Gi".into(),
    ];
    if attach_required {
        args.push("--attach-required".into());
    }
    let driver = CsiProcess::start(&args, dir.join("driver.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "rekube-csi did not listen: {}",
            driver.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let attacher = CsiProcess::start(
        &[
            "attacher".into(),
            format!("--endpoint={endpoint}"),
            format!("--node-name={node}"),
        ],
        dir.join("attacher.log"),
    );
    (driver, attacher)
}

/// The test's node with the driver's node id in its annotation, as the node agent
/// writes it; its name.
async fn node_with_driver(ns: &TestNamespace) -> String {
    let name = nodes::create_node(ns, "n", &NodeShape::default()).await;
    let node_ids = json!({ DRIVER: name }).to_string();
    Api::<rekube_crds::Node>::all(ns.client.clone())
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations":
                {"csi.volume.kubernetes.io/nodeid": node_ids}}})),
        )
        .await
        .unwrap();
    name
}

/// A PersistentVolume of the driver's volume `handle` (labelled as the test's); its name.
async fn persistent_volume(ns: &TestNamespace, name: &str, handle: &str) -> String {
    let pv = ns
        .create(
            json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem",
                "csi": {"driver": DRIVER, "volumeHandle": handle, "fsType": "ext4",
                    "volumeAttributes": {"type": "local-disk"}}}}),
        )
        .await
        .unwrap();
    pv["metadata"]["name"].as_str().unwrap().to_string()
}

/// The VolumeAttachment the attach/detach controller would make for `pv` (its handle) on
/// `node`, labelled as the test's.
async fn volume_attachment(
    ns: &TestNamespace,
    pv: &str,
    handle: &str,
    node: &str,
) -> VolumeAttachment {
    let va: VolumeAttachment = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "VolumeAttachment",
        "metadata": {"name": attachment_name(handle, DRIVER, node),
            "labels": {SCOPE_LABEL: ns.name}},
        "spec": {"attacher": DRIVER, "nodeName": node,
            "source": {"persistentVolumeName": pv}},
    }))
    .unwrap();
    Api::<VolumeAttachment>::all(ns.client.clone())
        .create(&PostParams::default(), &va)
        .await
        .unwrap()
}

async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str, log: impl Fn() -> String)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_until(what, T, || async {
        match api.get_opt(name).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}; {}", other.map(|o| o.is_some()), log())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_attach_the_loop_device_and_detach_it_when_deleted() {
    if !nix::unistd::geteuid().is_root() {
        return missing_prerequisite("the attacher test needs root (loop devices)");
    }
    let ns = TestNamespace::new("csi-attach").await;
    let tmp = tempfile::Builder::new()
        .prefix("rekube-e2e-csi-attach-")
        .tempdir()
        .unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let _leftovers = Leftovers {
        ns: &ns,
        dir: dir.clone(),
    };
    let node = node_with_driver(&ns).await;
    let (mut driver, mut attacher) = start(&dir, &node, true);
    let state = dir.join("state");

    // The volume, as the provisioner would make it.
    let mut controller = csi::controller_client::ControllerClient::new(
        rekube_csi::client::connect(&dir.join("csi.sock"))
            .await
            .unwrap(),
    );
    let created = controller
        .create_volume(csi::CreateVolumeRequest {
            name: format!("pvc-{}", ns.name),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 64 * MIB,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![csi::VolumeCapability {
                access_mode: Some(csi::volume_capability::AccessMode {
                    mode: csi::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
                access_type: Some(csi::volume_capability::AccessType::Mount(
                    csi::volume_capability::MountVolume {
                        fs_type: "ext4".into(),
                        ..Default::default()
                    },
                )),
            }],
            parameters: [("type".to_string(), "local-disk".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreateVolume: {e}\n{}", driver.log()))
        .into_inner()
        .volume
        .unwrap();
    let handle = created.volume_id;
    let image = state.join(format!("images/{handle}.img"));
    assert!(image.is_file());
    let pv_name = persistent_volume(&ns, "pv", &handle).await;

    // The attach/detach controller's VolumeAttachment: the attacher attaches it.
    let attachments: Api<VolumeAttachment> = Api::all(ns.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let started = Instant::now();
    let va = volume_attachment(&ns, &pv_name, &handle, &node).await;
    let va_name = va.metadata.name.clone().unwrap();
    let attached = wait_until("the attachment attached", T, || async {
        let va = attachments.get(&va_name).await.map_err(|e| e.to_string())?;
        let status = va.status.clone().unwrap_or_default();
        status
            .attached
            .then_some(va)
            .ok_or_else(|| format!("{status:?}; attacher: {}", attacher.log()))
    })
    .await;
    let attach_time = started.elapsed();
    let status = attached.status.clone().unwrap();
    assert_eq!(status.attach_error, None);
    let metadata = status.attachment_metadata.unwrap_or_default();
    let device = PathBuf::from(metadata.get("devicePath").expect("a devicePath"));
    assert_eq!(metadata.len(), 1, "{metadata:?}");
    // A real loop device, backed by the volume's image.
    assert!(
        std::os::unix::fs::FileTypeExt::is_block_device(
            &std::fs::metadata(&device).unwrap().file_type()
        ),
        "{} is no block device",
        device.display()
    );
    assert_eq!(loops_under(&dir), vec![(device.clone(), image.clone())]);
    let finalizer = attacher_finalizer(DRIVER);
    assert_eq!(
        attached.metadata.finalizers.clone().unwrap_or_default(),
        vec![finalizer.clone()]
    );
    assert_eq!(
        attached
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get("csi.alpha.kubernetes.io/node-id"),
        Some(&node)
    );
    // (A PV protection controller of a test running beside may add its own.)
    let pv = volumes.get(&pv_name).await.unwrap();
    assert!(
        pv.metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&finalizer),
        "the attacher's finalizer on the PV: {:?}",
        pv.metadata.finalizers
    );
    // While attached the driver refuses to delete the volume.
    let refused = controller
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: handle.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");

    // A volume the driver does not know: the driver's NOT_FOUND in attachError.
    let ghost_handle = "rk-0000000000000000";
    let ghost_pv = persistent_volume(&ns, "ghost", ghost_handle).await;
    let ghost = volume_attachment(&ns, &ghost_pv, ghost_handle, &node).await;
    let ghost_name = ghost.metadata.name.clone().unwrap();
    let message = wait_until("the ghost's attachError", T, || async {
        let va = attachments
            .get(&ghost_name)
            .await
            .map_err(|e| e.to_string())?;
        let status = va.status.unwrap_or_default();
        assert!(!status.attached, "the ghost attached: {status:?}");
        status
            .attach_error
            .and_then(|e| e.message)
            .ok_or_else(|| format!("no attachError; attacher: {}", attacher.log()))
    })
    .await;
    assert_eq!(
        message,
        format!("rpc error: code = NotFound desc = volume {ghost_handle}: not found")
    );

    // Deleted: ControllerUnpublishVolume (the loop device goes), the finalizer off, gone.
    let deleted = Instant::now();
    attachments
        .delete(&va_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&attachments, &va_name, "the attachment gone", || {
        attacher.log()
    })
    .await;
    let detach_time = deleted.elapsed();
    assert_eq!(loops_under(&dir), vec![], "the loop device detached");
    assert!(
        !Path::new("/sys/block")
            .join(device.file_name().unwrap())
            .join("loop/backing_file")
            .exists(),
        "{} still bound",
        device.display()
    );
    // The ghost goes too: unpublishing an unknown volume is done at once (the spec's OK).
    attachments
        .delete(&ghost_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&attachments, &ghost_name, "the ghost gone", || {
        attacher.log()
    })
    .await;

    // The PVs deleted: no attachment names them, the attacher takes its finalizer off.
    for name in [&pv_name, &ghost_pv] {
        volumes
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in [&pv_name, &ghost_pv] {
        wait_until("the attacher's PV finalizer removed", T, || async {
            let finalizers = volumes
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|p| p.metadata.finalizers)
                .unwrap_or_default();
            (!finalizers.contains(&finalizer))
                .then_some(())
                .ok_or_else(|| format!("{finalizers:?}; attacher: {}", attacher.log()))
        })
        .await;
    }
    // What a PV protection controller of a test beside may have added.
    delete_test_volumes(&ns).await;
    for name in [&pv_name, &ghost_pv] {
        wait_gone(&volumes, name, "the PV gone", String::new).await;
    }
    controller
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: handle.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume: {e}\n{}", driver.log()));
    assert!(!image.exists());
    println!(
        "attachment created to attached: {:.2}s; deleted to gone: {:.2}s",
        attach_time.as_secs_f64(),
        detach_time.as_secs_f64()
    );

    drop(controller);
    assert!(attacher.stop(), "attacher did not stop on SIGTERM");
    assert!(driver.stop(), "driver did not stop on SIGTERM");
    assert!(!dir.join("csi.sock").exists(), "socket left");
    assert_eq!(loops_under(&dir), vec![]);
    for sub in ["volumes", "images", "hostpath"] {
        let left: Vec<_> = std::fs::read_dir(state.join(sub))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(left, Vec::<PathBuf>::new(), "{sub} left in the state dir");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_attach_required_the_attacher_is_trivial() {
    if !nix::unistd::geteuid().is_root() {
        return missing_prerequisite("the attacher test needs root (loop devices)");
    }
    let ns = TestNamespace::new("csi-attach-trivial").await;
    let tmp = tempfile::Builder::new()
        .prefix("rekube-e2e-csi-attach-")
        .tempdir()
        .unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let _leftovers = Leftovers {
        ns: &ns,
        dir: dir.clone(),
    };
    let node = node_with_driver(&ns).await;
    let (mut driver, mut attacher) = start(&dir, &node, false);
    // No volume needed: the trivial attacher reads neither the PV nor the Node.
    let handle = "rk-0000000000000001";
    let pv_name = persistent_volume(&ns, "pv", handle).await;
    let va = volume_attachment(&ns, &pv_name, handle, &node).await;
    let name = va.metadata.name.clone().unwrap();
    let attachments: Api<VolumeAttachment> = Api::all(ns.client.clone());
    let attached = wait_until("the attachment attached", T, || async {
        let va = attachments.get(&name).await.map_err(|e| e.to_string())?;
        let status = va.status.clone().unwrap_or_default();
        status
            .attached
            .then_some(va)
            .ok_or_else(|| format!("{status:?}; attacher: {}", attacher.log()))
    })
    .await;
    let status = attached.status.unwrap();
    assert_eq!(status.attachment_metadata, None);
    assert_eq!(attached.metadata.finalizers, None, "no finalizer");
    assert_eq!(loops_under(&dir), vec![], "nothing attached");
    attachments
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&attachments, &name, "the attachment gone", || {
        attacher.log()
    })
    .await;
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let pv = volumes.get(&pv_name).await.unwrap();
    assert!(
        !pv.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f.starts_with("external-attacher/")),
        "no attacher finalizer on the PV"
    );
    delete_test_volumes(&ns).await;
    wait_gone(&volumes, &pv_name, "the PV gone", String::new).await;
    assert!(attacher.stop(), "attacher did not stop on SIGTERM");
    assert!(driver.stop(), "driver did not stop on SIGTERM");
}

const EXTERNAL_ATTACHER_VERSION: &str = "v4.13.0";

/// external-attacher's csi-attacher: REKUBE_CSI_ATTACHER, or the one
/// `e2e/scripts/build-kubernetes.sh external-attacher` caches.
fn external_attacher() -> Option<PathBuf> {
    let path = std::env::var_os("REKUBE_CSI_ATTACHER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir().join(format!("bin/csi-attacher-{EXTERNAL_ATTACHER_VERSION}"))
        });
    path.is_file().then_some(path)
}

/// The upstream objects of the peer test (core PersistentVolumes and storage.k8s.io
/// VolumeAttachments labelled as the test's, its CSINode), finalizers stripped and
/// deleted, and the loop devices on its images detached, when it panics.
struct UpstreamLeftovers<'a> {
    ns: &'a TestNamespace,
    csi_node: String,
    dir: PathBuf,
}

impl UpstreamLeftovers<'_> {
    async fn remove(&self) {
        use k8s_openapi::api::core::v1::PersistentVolume as CorePv;
        use k8s_openapi::api::storage::v1::{CSINode, VolumeAttachment as CoreVa};
        let lp =
            kube::api::ListParams::default().labels(&format!("{SCOPE_LABEL}={}", self.ns.name));
        let strip = kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}}));
        let pp = kube::api::PatchParams::default();
        let vas: Api<CoreVa> = Api::all(self.ns.client.clone());
        for va in vas.list(&lp).await.map(|l| l.items).unwrap_or_default() {
            let name = va.metadata.name.unwrap_or_default();
            let _ = vas.patch(&name, &pp, &strip).await;
            let _ = vas.delete(&name, &DeleteParams::default()).await;
        }
        let pvs: Api<CorePv> = Api::all(self.ns.client.clone());
        for pv in pvs.list(&lp).await.map(|l| l.items).unwrap_or_default() {
            let name = pv.metadata.name.unwrap_or_default();
            let _ = pvs.patch(&name, &pp, &strip).await;
            let _ = pvs.delete(&name, &DeleteParams::default()).await;
        }
        let _ = Api::<CSINode>::all(self.ns.client.clone())
            .delete(&self.csi_node, &DeleteParams::default())
            .await;
    }
}

impl Drop for UpstreamLeftovers<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (device, _) in loops_under(&self.dir) {
            let _ = LinuxKernel.loop_detach(&device);
        }
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(self.remove()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_external_attacher_attaches_with_rekube_csi() {
    use k8s_openapi::api::core::v1::PersistentVolume as CorePv;
    use k8s_openapi::api::storage::v1::{CSINode, VolumeAttachment as CoreVa};
    if !nix::unistd::geteuid().is_root() {
        return missing_prerequisite("the attacher test needs root (loop devices)");
    }
    let Some(upstream) = external_attacher() else {
        return missing_prerequisite(&format!(
            "no csi-attacher {EXTERNAL_ATTACHER_VERSION} in {}: run e2e/scripts/build-kubernetes.sh external-attacher",
            cache_dir().join("bin").display()
        ));
    };
    let ns = TestNamespace::new("csi-attach-upstream").await;
    let tmp = tempfile::Builder::new()
        .prefix("rekube-e2e-csi-attach-")
        .tempdir()
        .unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    // A driver name of the test's own: upstream's attacher handles every attachment of
    // its driver in the cluster.
    let driver_name = format!("{}.csi.rekube.io", ns.name);
    let node = ns.cluster_name("n");
    let leftovers = UpstreamLeftovers {
        ns: &ns,
        csi_node: node.clone(),
        dir: dir.clone(),
    };
    let socket = dir.join("csi.sock");
    let state = dir.join("state");
    let mut driver = CsiProcess::start(
        &[
            format!("--endpoint=unix://{}", socket.display()),
            format!("--node-id={node}"),
            format!("--driver-name={driver_name}"),
            format!("--state-dir={}", state.display()),
            "--capacity=1Gi".into(),
            "--attach-required".into(),
        ],
        dir.join("driver.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "rekube-csi did not listen: {}",
            driver.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_else(|_| {
        cache_dir()
            .join("cluster/admin.kubeconfig")
            .display()
            .to_string()
    });
    let mut attacher = CsiProcess::start_binary(
        &upstream,
        &[
            format!("--csi-address={}", socket.display()),
            format!("--kubeconfig={kubeconfig}"),
            "--v=4".into(),
        ],
        dir.join("csi-attacher.log"),
    );
    // The node's id for the driver, where upstream reads it (kubelet's
    // nodeinfomanager writes it).
    let csi_node: CSINode = serde_json::from_value(json!({
        "metadata": {"name": node},
        "spec": {"drivers": [{"name": driver_name, "nodeID": node}]},
    }))
    .unwrap();
    Api::<CSINode>::all(ns.client.clone())
        .create(&PostParams::default(), &csi_node)
        .await
        .unwrap();

    let mut controller = csi::controller_client::ControllerClient::new(
        rekube_csi::client::connect(&socket).await.unwrap(),
    );
    let handle = controller
        .create_volume(csi::CreateVolumeRequest {
            name: format!("pvc-{}", ns.name),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 64 * MIB,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![csi::VolumeCapability {
                access_mode: Some(csi::volume_capability::AccessMode {
                    mode: csi::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
                access_type: Some(csi::volume_capability::AccessType::Mount(
                    csi::volume_capability::MountVolume::default(),
                )),
            }],
            parameters: [("type".to_string(), "local-disk".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreateVolume: {e}\n{}", driver.log()))
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let image = state.join(format!("images/{handle}.img"));

    let pvs: Api<CorePv> = Api::all(ns.client.clone());
    let vas: Api<CoreVa> = Api::all(ns.client.clone());
    let pp = PostParams::default();
    let make_pv = |name: String, handle: &str| -> CorePv {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {SCOPE_LABEL: ns.name}},
            "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "csi": {"driver": driver_name, "volumeHandle": handle, "fsType": "ext4",
                    "volumeAttributes": {"type": "local-disk"}}},
        }))
        .unwrap()
    };
    let make_va = |pv: &str, handle: &str| -> CoreVa {
        serde_json::from_value(json!({
            "metadata": {"name": attachment_name(handle, &driver_name, &node),
                "labels": {SCOPE_LABEL: ns.name}},
            "spec": {"attacher": driver_name, "nodeName": node,
                "source": {"persistentVolumeName": pv}},
        }))
        .unwrap()
    };
    let pv_name = ns.cluster_name("pv");
    pvs.create(&pp, &make_pv(pv_name.clone(), &handle))
        .await
        .unwrap();
    let started = Instant::now();
    let va_name = vas
        .create(&pp, &make_va(&pv_name, &handle))
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let attached = wait_until("upstream's attachment attached", T, || async {
        let va = vas.get(&va_name).await.map_err(|e| e.to_string())?;
        let status = va.status.clone().unwrap_or_default();
        status
            .attached
            .then_some(va)
            .ok_or_else(|| format!("{status:?}; csi-attacher: {}", attacher.log()))
    })
    .await;
    let attach_time = started.elapsed();
    let metadata = attached
        .status
        .unwrap()
        .attachment_metadata
        .unwrap_or_default();
    let device = PathBuf::from(metadata.get("devicePath").expect("a devicePath"));
    assert_eq!(loops_under(&dir), vec![(device.clone(), image.clone())]);
    let finalizer = attacher_finalizer(&driver_name);
    assert_eq!(
        attached.metadata.finalizers.clone().unwrap_or_default(),
        vec![finalizer.clone()],
        "upstream's finalizer is rekube's attacher_finalizer"
    );
    let pv = pvs.get(&pv_name).await.unwrap();
    assert!(
        pv.metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&finalizer),
        "{:?}",
        pv.metadata.finalizers
    );

    // A volume the driver does not know: upstream saves the same message as rekube's.
    let ghost_handle = "rk-0000000000000000";
    let ghost_pv = ns.cluster_name("ghost");
    pvs.create(&pp, &make_pv(ghost_pv.clone(), ghost_handle))
        .await
        .unwrap();
    let ghost = vas
        .create(&pp, &make_va(&ghost_pv, ghost_handle))
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    let message = wait_until("upstream's attachError", T, || async {
        let va = vas.get(&ghost).await.map_err(|e| e.to_string())?;
        va.status
            .unwrap_or_default()
            .attach_error
            .and_then(|e| e.message)
            .ok_or_else(|| format!("no attachError; csi-attacher: {}", attacher.log()))
    })
    .await;
    assert_eq!(
        message,
        format!("rpc error: code = NotFound desc = volume {ghost_handle}: not found")
    );

    // Deleted: ControllerUnpublishVolume, the loop device gone, the attachment gone.
    let deleted = Instant::now();
    for name in [&va_name, &ghost] {
        vas.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in [&va_name, &ghost] {
        wait_gone(&vas, name, "upstream's attachment gone", || attacher.log()).await;
    }
    let detach_time = deleted.elapsed();
    assert_eq!(loops_under(&dir), vec![], "the loop device detached");
    // The PVs deleted: upstream takes its finalizer off (the apiserver's
    // kubernetes.io/pv-protection stays, no controller of this test removes it).
    for name in [&pv_name, &ghost_pv] {
        pvs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in [&pv_name, &ghost_pv] {
        wait_until("upstream's PV finalizer removed", T, || async {
            let finalizers = pvs
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|p| p.metadata.finalizers)
                .unwrap_or_default();
            (!finalizers.contains(&finalizer))
                .then_some(())
                .ok_or_else(|| format!("{finalizers:?}"))
        })
        .await;
    }
    controller
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: handle.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume: {e}\n{}", driver.log()));
    println!(
        "upstream csi-attacher: attachment created to attached: {:.2}s; deleted to gone: {:.2}s",
        attach_time.as_secs_f64(),
        detach_time.as_secs_f64()
    );
    drop(controller);
    attacher.stop();
    assert!(driver.stop(), "driver did not stop on SIGTERM");
    leftovers.remove().await;
    for name in [&pv_name, &ghost_pv] {
        wait_gone(&pvs, name, "the PV gone", String::new).await;
    }
    assert_eq!(loops_under(&dir), vec![]);
    assert!(!image.exists());
}
