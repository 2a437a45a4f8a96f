//! What the storage tests share: the rekube-csi binary, the notes of an object's events, and the test's
//! PersistentVolumes removed at its end (cluster-scoped, with the protection finalizer that
//! the test's controllers may no longer be there to take off).
use std::path::PathBuf;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use rekube_crds::PersistentVolume;
use serde_json::json;

use crate::TestNamespace;
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
