//! Pod volumes (issue 13; upstream's pkg/volume and the kubelet's volume manager): the
//! volume plugins that set a pod's volumes up on the node and tear them down
//! ([`emptydir`], [`hostpath`], [`configmap`], [`secret`], [`downwardapi`]), the
//! [`atomic_writer`] that writes the projected ones, where they live on disk
//! ([`pod_dirs`]), which plugin takes which volume ([`plugins`]), the kubelet's volume
//! manager ([`manager`]: desired and actual state of world, reconciler) and subPath
//! mounts that cannot escape their volume ([`subpath`]), the csi plugin's node side
//! ([`csi`]: a PersistentVolume's CSI driver staging and publishing it; [`csi_block`]: the
//! same in volumeMode Block), the mapping of a block volume's device for a pod
//! ([`volume_path_handler`]) and the kubelet's token manager for projected service account
//! tokens ([`token_manager`]).

pub mod atomic_writer;
pub mod claim;
pub mod cluster_trust_bundle;
pub mod configmap;
pub mod csi;
pub mod csi_block;
pub mod csi_registry;
pub mod downwardapi;
pub mod emptydir;
pub mod hostpath;
pub mod local;
pub mod manager;
pub mod plugins;
pub mod pod_certificate;
pub mod pod_certificate_manager;
pub mod pod_dirs;
pub mod projected;
pub mod secret;
pub mod subpath;
pub mod token_manager;
pub mod volume_path_handler;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::KeyToPath;

/// One file of a projected volume (upstream's `FileProjection`): its bytes, its mode, and
/// the user to own it (fsUser) if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
    pub fs_user: Option<u32>,
}

/// A projected volume's files by their path relative to the volume.
pub type Payload = BTreeMap<String, FileProjection>;

impl FileProjection {
    /// A file of `data` with `mode` (the API's int32 mode bits), owned by no fsUser.
    pub fn new(data: Vec<u8>, mode: i32) -> Self {
        FileProjection {
            data,
            mode: mode as u32,
            fs_user: None,
        }
    }
}

/// What configMap and secret volumes' `MakePayload` share: without `mappings`, one file per
/// key named after it with `default_mode`; with them, one file per item at its path with
/// its own mode or `default_mode`, a missing key skipped when `optional`. `Err` names the
/// missing key (each plugin words the error).
pub fn key_to_path_payload(
    mappings: &[KeyToPath],
    keys: &BTreeMap<String, Vec<u8>>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    if mappings.is_empty() {
        return Ok(keys
            .iter()
            .map(|(name, data)| {
                (
                    name.clone(),
                    FileProjection::new(data.clone(), default_mode),
                )
            })
            .collect());
    }
    let mut payload = Payload::new();
    for ktp in mappings {
        match keys.get(&ktp.key) {
            Some(data) => {
                let mode = ktp.mode.unwrap_or(default_mode);
                payload.insert(ktp.path.clone(), FileProjection::new(data.clone(), mode));
            }
            None if optional => {}
            None => return Err(ktp.key.clone()),
        }
    }
    Ok(payload)
}

/// apimachinery's `aggregate.Error()`: one message as it is, several as `[a, b]`, repeats
/// dropped.
pub fn aggregate_message(messages: impl IntoIterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for m in messages {
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    match seen.len() {
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}
