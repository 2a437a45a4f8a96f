//! What the storage tests share: the rekube-csi binary, a driver process of it
//! ([`CsiDriverProcess`], with the test's own driver name and CSIDriver object, its
//! sidecars and registrar) and any other CSI process ([`CsiProcess`]), the notes of an
//! object's events, and the test's PersistentVolumes and VolumeAttachments removed at its
//! end (cluster-scoped, with the protection or attacher finalizer that the test's
//! controllers may no longer be there to take off).
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use rekube_crds::{PersistentVolume, VolumeAttachment};
use serde_json::json;

use crate::TestNamespace;
use crate::agent::terminate_child;
use crate::nodes::SCOPE_LABEL;
pub use crate::sweep::{loops_under, mounts_under};

/// rekube-csi's default driver name; a test's driver is named
/// `TestNamespace::cluster_name(CSI_DRIVER)` so that tests run side by side, each with
/// its own CSIDriver object.
pub const CSI_DRIVER: &str = "csi.rekube.io";

/// Creates the test's CSIDriver for its driver (`attachRequired` as given; upstream's
/// default is true) and returns the driver's name, the object's name.
pub async fn create_csi_driver(ns: &TestNamespace, attach_required: bool) -> String {
    create_csi_driver_with_capacity(ns, attach_required, false).await
}

/// As [`create_csi_driver`], saying whether the driver publishes its capacity
/// (`storageCapacity: true`: its provisioner runs with `--enable-capacity`, and the
/// scheduler checks claims against the CSIStorageCapacity objects).
pub async fn create_csi_driver_with_capacity(
    ns: &TestNamespace,
    attach_required: bool,
    storage_capacity: bool,
) -> String {
    let created = ns
        .create(json!({
            "apiVersion": rekube_crds::API_VERSION, "kind": "CSIDriver",
            "metadata": {"name": CSI_DRIVER},
            "spec": {"attachRequired": attach_required, "storageCapacity": storage_capacity},
        }))
        .await
        .expect("creating the test's CSIDriver");
    created["metadata"]["name"].as_str().unwrap().to_string()
}

/// A `rekube-csi` driver process ([`CsiProcess`]) on a socket in `dir`, stopped (SIGTERM,
/// then SIGKILL) with its sidecars and its directory removed when dropped.
pub struct CsiDriverProcess {
    driver: Option<CsiProcess>,
    /// Sidecars started for the driver (`rekube-csi provisioner`, ...).
    sidecars: Vec<CsiProcess>,
    pub name: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl CsiDriverProcess {
    /// `rekube-csi --driver-name <name> --node-id <node_id>` with a 256 MiB capacity and
    /// `extra` arguments; returns once its socket exists.
    pub fn start(dir: &Path, name: &str, node_id: &str, extra: &[&str]) -> CsiDriverProcess {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("csi.sock");
        let state = dir.join("state");
        let log = dir.join("driver.log");
        let mut args: Vec<String> = [
            "--endpoint".to_string(),
            format!("unix://{}", socket.display()),
            "--driver-name".into(),
            name.into(),
            "--node-id".into(),
            node_id.into(),
            "--state-dir".into(),
            state.to_string_lossy().into_owned(),
            "--capacity".into(),
            "256Mi".into(),
        ]
        .into();
        args.extend(extra.iter().map(|a| a.to_string()));
        let driver = CsiProcess::start(&args, log.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the driver's socket did not appear: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        CsiDriverProcess {
            driver: Some(driver),
            sidecars: Vec::new(),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            socket,
            state,
            log,
        }
    }

    /// The `--csi-driver` flag of an agent using this driver.
    pub fn agent_flag(&self) -> String {
        format!("{}=unix://{}", self.name, self.socket.display())
    }

    pub async fn controller(
        &self,
    ) -> rekube_csi::csi::controller_client::ControllerClient<tonic::transport::Channel> {
        rekube_csi::csi::controller_client::ControllerClient::new(
            rekube_csi::client::connect(&self.socket).await.unwrap(),
        )
    }

    /// The driver's log and its sidecars'.
    pub fn logs(&self) -> String {
        let mut out = std::fs::read_to_string(&self.log).unwrap_or_default();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.ends_with(".log") && e.path() != self.log {
                out.push_str(&format!("\n--- {file}\n"));
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// `rekube-csi <subcommand> --endpoint <the driver's socket> <args>`, logging to
    /// `<dir>/<subcommand>.log`, stopped with the driver.
    pub fn start_sidecar(&mut self, subcommand: &str, args: &[&str]) {
        self.start_sidecar_with_env(subcommand, args, &[]);
    }

    /// As [`Self::start_sidecar`], with environment variables (the provisioner's NAMESPACE
    /// and POD_NAME for `--enable-capacity`).
    pub fn start_sidecar_with_env(
        &mut self,
        subcommand: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        let mut all = vec![
            subcommand.to_string(),
            "--endpoint".into(),
            format!("unix://{}", self.socket.display()),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let log = self.dir.join(format!("{subcommand}.log"));
        self.sidecars.push(CsiProcess::start_binary_with_env(
            &csi_binary(),
            &all,
            log,
            env,
        ));
    }

    /// The driver's provisioner (external-provisioner's distributed mode) for `node_id`,
    /// its PersistentVolumes labelled `pv_label` (the test's scope).
    pub fn start_provisioner(&mut self, node_id: &str, pv_label: &str) {
        self.start_sidecar(
            "provisioner",
            &["--node-id", node_id, "--pv-label", pv_label],
        );
    }

    /// Stops the sidecars, then the driver.
    pub fn stop(&mut self) {
        for mut process in self.sidecars.drain(..).chain(self.driver.take()) {
            process.stop();
        }
    }
}

impl Drop for CsiDriverProcess {
    /// Stops the processes, then sweeps what a failed test left of the driver's volumes
    /// (mounts under its directory, loop devices of its images: tests assert that nothing
    /// is left before this runs) and removes the directory ([`crate::sweep::sweep_dir`]).
    fn drop(&mut self) {
        self.stop();
        crate::sweep::sweep_dir(&self.dir, &format!("cleanup of CSI driver {}", self.name));
    }
}

/// The rekube-csi binary: REKUBE_CSI_BIN, or the one built beside the test (as
/// [`crate::agent::binary`]).
pub fn csi_binary() -> PathBuf {
    if let Ok(path) = std::env::var("REKUBE_CSI_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target folder")
        .join("rekube-csi");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p rekube-csi`",
        bin.display()
    );
    bin
}

/// What a storage test asserts at its end: no image or record left in the driver's state
/// directory, no loop device backed under `dir` (the test's directory of the driver), and
/// no mount under it nor under the agent's root directory.
pub fn assert_no_storage_left(driver_state: &Path, dir: &Path, agent_root: &Path) {
    assert_eq!(
        files_under(driver_state),
        Vec::<PathBuf>::new(),
        "no image or record left"
    );
    assert_eq!(loops_under(dir), Vec::new(), "no loop device");
    assert_eq!(
        mounts_under(dir),
        Vec::<String>::new(),
        "no mount of the driver's"
    );
    assert_eq!(
        mounts_under(agent_root),
        Vec::<String>::new(),
        "no mount of the agent's"
    );
}

/// The regular files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// The notes of the events of `reason` about the object named `name` (of `kind`, when
/// given) that `api` lists.
pub async fn event_notes(
    api: &Api<Event>,
    kind: Option<&str>,
    name: &str,
    reason: &str,
) -> Vec<String> {
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            let regarding = e.regarding.as_ref();
            e.reason.as_deref() == Some(reason)
                && regarding.and_then(|r| r.name.as_deref()) == Some(name)
                && kind.is_none_or(|k| regarding.and_then(|r| r.kind.as_deref()) == Some(k))
        })
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// Every PersistentVolume labelled as the test's ([`SCOPE_LABEL`]) deleted, its finalizers
/// taken off first.
pub async fn delete_test_volumes(ns: &TestNamespace) {
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let lp = ListParams::default().labels(&format!("{SCOPE_LABEL}={}", ns.name));
    for v in volumes.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        let name = v.metadata.name.clone().unwrap_or_default();
        let _ = volumes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = volumes.delete(&name, &DeleteParams::default()).await;
    }
}

/// Waits (`what`, up to 90 s) until node `node` lists no volume in use nor attached, the
/// VolumeAttachment `va_name` is gone and `driver` has no loop device left: a volume
/// unmounted and detached.
pub async fn wait_unmounted_and_detached(
    ns: &TestNamespace,
    what: &str,
    node: &str,
    va_name: &str,
    driver: &CsiDriverProcess,
) {
    let nodes: Api<rekube_crds::Node> = Api::all(ns.client.clone());
    let attachments: Api<VolumeAttachment> = Api::all(ns.client.clone());
    crate::wait_until(what, Duration::from_secs(90), || async {
        let s = nodes
            .get_status(node)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let va = attachments
            .get_opt(va_name)
            .await
            .map_err(|e| e.to_string())?;
        let loops = loops_under(&driver.state);
        if s.volumes_in_use.is_none()
            && s.volumes_attached.as_ref().is_none_or(|v| v.is_empty())
            && va.is_none()
            && loops.is_empty()
        {
            Ok(())
        } else {
            Err(format!(
                "in use {:?}, attached {:?}, attachment {}, loops {loops:?}\n{}",
                s.volumes_in_use,
                s.volumes_attached,
                va.is_some(),
                driver.logs()
            ))
        }
    })
    .await;
}

/// The end of a static volume's test: claim `claim` deleted and waited for (up to
/// `timeout`), the test's PersistentVolumes deleted, then the driver's volume `handle`
/// (DeleteVolume must succeed).
pub async fn delete_claim_and_volume(
    ns: &TestNamespace,
    driver: &CsiDriverProcess,
    claim: &str,
    handle: String,
    timeout: Duration,
) {
    let claims: Api<rekube_crds::PersistentVolumeClaim> =
        Api::namespaced(ns.client.clone(), &ns.name);
    claims
        .delete(claim, &DeleteParams::default())
        .await
        .unwrap();
    crate::wait_until(&format!("claim {claim} gone"), timeout, || async {
        match claims.get_opt(claim).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.is_some()))),
        }
    })
    .await;
    delete_test_volumes(ns).await;
    driver
        .controller()
        .await
        .delete_volume(rekube_csi::csi::DeleteVolumeRequest {
            volume_id: handle,
            secrets: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume: {e}\n{}", driver.logs()));
}

/// `rekube-csi registrar` (node-driver-registrar's role) for a driver process: it serves
/// the plugin registration API at `<registration dir>/<driver>-reg.sock`. Stopped
/// (SIGTERM, then SIGKILL) when dropped, its socket removed if it was left.
pub struct RegistrarProcess {
    child: Option<Child>,
    /// `<registration dir>/<driver>-reg.sock`.
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl CsiDriverProcess {
    /// `rekube-csi registrar --csi-address <socket> --kubelet-registration-path <socket>
    /// --plugin-registration-path <registration_dir>` (the agent and the driver see the
    /// socket at the same path), logging to `<dir>/<log_name>.log`.
    pub fn start_registrar(&self, registration_dir: &Path, log_name: &str) -> RegistrarProcess {
        let log = self.dir.join(format!("{log_name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(csi_binary())
            .arg("registrar")
            .arg("--csi-address")
            .arg(&self.socket)
            .arg("--kubelet-registration-path")
            .arg(&self.socket)
            .arg("--plugin-registration-path")
            .arg(registration_dir)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("starting rekube-csi registrar: {e}"));
        RegistrarProcess {
            child: Some(child),
            socket: registration_dir.join(format!("{}-reg.sock", self.name)),
            log,
        }
    }
}

impl RegistrarProcess {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status if it ended by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM (then SIGKILL after 10 s); its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        terminate_child(&mut child, Duration::from_secs(10))
    }
}

impl Drop for RegistrarProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A rekube-csi process (the driver, or its provisioner or attacher role; or an upstream
/// sidecar) logging to a file, stopped with SIGTERM (then SIGKILL) when the test ends,
/// pass or fail.
pub struct CsiProcess {
    child: Child,
    log: PathBuf,
}

impl CsiProcess {
    /// Starts [`csi_binary`] with `args` (`RUST_LOG=info`), its stderr to `log`.
    pub fn start(args: &[String], log: PathBuf) -> Self {
        Self::start_binary(&csi_binary(), args, log)
    }

    /// Starts another binary of the CSI machinery (an upstream sidecar) the same way.
    pub fn start_binary(binary: &std::path::Path, args: &[String], log: PathBuf) -> Self {
        Self::start_binary_with_env(binary, args, log, &[])
    }

    /// As [`Self::start_binary`], with environment variables besides `RUST_LOG`.
    pub fn start_binary_with_env(
        binary: &std::path::Path,
        args: &[String],
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Self {
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the rekube-csi log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        CsiProcess { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process; whether it exited by itself after SIGTERM.
    pub fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let status = terminate_child(&mut self.child, Duration::from_secs(10));
        status.is_some_and(|s| s.signal() != Some(nix::libc::SIGKILL))
    }
}

impl Drop for CsiProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every VolumeAttachment labelled as the test's ([`SCOPE_LABEL`]) deleted, its
/// finalizers taken off first (an attacher that is gone cannot).
pub async fn delete_test_attachments(ns: &TestNamespace) {
    let attachments: Api<VolumeAttachment> = Api::all(ns.client.clone());
    let lp = ListParams::default().labels(&format!("{SCOPE_LABEL}={}", ns.name));
    for va in attachments
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = va.metadata.name.clone().unwrap_or_default();
        let _ = attachments
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = attachments.delete(&name, &DeleteParams::default()).await;
    }
}

/// A MiB.
pub const MIB: i64 = 1 << 20;

impl CsiDriverProcess {
    /// The provisioner's part, done by a test: CreateVolume of a `bytes` local-disk
    /// volume named `name` (mount, ext4, SINGLE_NODE_WRITER); its volume handle.
    pub async fn create_local_disk(&self, name: &str, bytes: i64) -> String {
        use rekube_csi::csi::volume_capability::{AccessType, MountVolume};
        let mount = AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        });
        self.create_local_disk_as(name, bytes, mount).await
    }

    /// [`Self::create_local_disk`] for block access (a claim of volumeMode Block).
    pub async fn create_local_block_disk(&self, name: &str, bytes: i64) -> String {
        use rekube_csi::csi::volume_capability::{AccessType, BlockVolume};
        self.create_local_disk_as(name, bytes, AccessType::Block(BlockVolume {}))
            .await
    }

    /// CreateVolume of a local-disk volume with `access_type` (SINGLE_NODE_WRITER); its
    /// volume handle.
    async fn create_local_disk_as(
        &self,
        name: &str,
        bytes: i64,
        access_type: rekube_csi::csi::volume_capability::AccessType,
    ) -> String {
        use rekube_csi::csi;
        let created = self
            .controller()
            .await
            .create_volume(csi::CreateVolumeRequest {
                name: name.to_string(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![csi::VolumeCapability {
                    access_mode: Some(csi::volume_capability::AccessMode {
                        mode: csi::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                    }),
                    access_type: Some(access_type),
                }],
                parameters: [("type".to_string(), "local-disk".to_string())].into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("CreateVolume: {e}\n{}", self.logs()))
            .into_inner()
            .volume
            .expect("CreateVolume answered a volume");
        assert_eq!(created.capacity_bytes, bytes, "the volume's size");
        created.volume_id
    }
}

/// A static 64 MiB PersistentVolume `<ns>-disk` of the driver's local-disk volume
/// `handle` on `node` (Retain, class `manual-<ns>`, the test's scope label), and the claim
/// `data` bound to it (waited for). Returns the PV's name.
pub async fn static_csi_volume_and_claim(
    ns: &TestNamespace,
    driver: &str,
    handle: &str,
    node: &str,
) -> String {
    use rekube_crds::PersistentVolumeClaim;
    let pv_name = ns.cluster_name("disk");
    let class = format!("manual-{}", ns.name);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {SCOPE_LABEL: ns.name}},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "csi": {"driver": driver, "volumeHandle": handle, "fsType": "ext4",
                "volumeAttributes": {"type": "local-disk"}},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        }
    }))
    .unwrap();
    let pp = kube::api::PostParams::default();
    Api::<PersistentVolume>::all(ns.client.clone())
        .create(&pp, &pv)
        .await
        .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": "64Mi"}}},
    }))
    .unwrap();
    claims.create(&pp, &claim).await.unwrap();
    crate::wait_until("claim data bound", Duration::from_secs(60), || async {
        let c = claims.get("data").await.map_err(|e| e.to_string())?;
        match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Bound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    pv_name
}
