//! What the storage tests share: the rekube-csi binary and its processes, the notes of an
//! object's events, and the test's PersistentVolumes and VolumeAttachments removed at its
//! end (cluster-scoped, with the protection or attacher finalizer that the test's
//! controllers may no longer be there to take off).
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use rekube_crds::{PersistentVolume, VolumeAttachment};
use serde_json::json;

use crate::TestNamespace;
use crate::agent::terminate_child;
use crate::nodes::SCOPE_LABEL;

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
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
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
