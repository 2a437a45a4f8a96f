//! The attacher's decisions, pure functions over the objects the shell watches
//! (external-attacher's pkg/controller/csi_handler.go, trivial_handler.go, util.go and
//! controller.go): whether this attacher handles a VolumeAttachment, the steps that
//! attach or detach it (patches, the CSI request), whether a PersistentVolume's finalizer
//! may go, and which watch events are worth a sync.
//!
//! A sync is a list of [`Step`]s the shell runs in order, stopping at the first failure
//! (upstream's csiAttach and csiDetach, one call after the other): the order and the
//! requests are the decisions, tested here; the shell only executes them.
//!
//! Differences from upstream: the node id comes from the rekube Node's
//! `csi.volume.kubernetes.io/nodeid` annotation (upstream reads the CSINode; rekube has
//! none, the node agent writes the annotation as kubelet's nodeinfomanager does); there is
//! no CSI migration (in-tree PVs); no ReconcileVA (it needs LIST_VOLUMES_PUBLISHED_NODES,
//! which rekube-csi does not advertise); error messages name their object in rekube's
//! style (lowercase).

use std::collections::BTreeMap;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, PersistentVolumeSpec, SecretReference,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rekube_crds::{Node, PersistentVolume, VolumeAttachment};
use serde_json::{Value, json};

use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use crate::csi::{
    ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest, VolumeCapability,
};

pub use rekube_crds::storage_keys::attacher_finalizer;

/// The VolumeAttachment annotation upstream keeps the node id in, so a detach finds it
/// after the node's own record is gone (`vaNodeIDAnnotation`).
pub const VA_NODE_ID_ANNOTATION: &str = "csi.alpha.kubernetes.io/node-id";
/// The Node annotation mapping driver names to their node ids (kubelet's
/// nodeinfomanager; rekube's node agent writes it).
pub const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";

/// What the attacher is: its driver, its node, and what the driver supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attacher {
    pub driver_name: String,
    pub node_name: String,
    /// PUBLISH_UNPUBLISH_VOLUME: without it the attacher is upstream's trivial handler.
    pub publish_unpublish: bool,
    /// PUBLISH_READONLY: without it ControllerPublishVolume is never asked for read-only.
    pub publish_readonly: bool,
    /// SINGLE_NODE_MULTI_WRITER (the access mode mapping).
    pub single_node_multi_writer: bool,
    /// upstream `--default-fstype` (empty: none).
    pub default_fs_type: String,
}

/// One thing a sync does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The sync fails with this message before anything is called: saved as the
    /// VolumeAttachment's attachError (or detachError) and retried with back-off.
    Fail(String),
    /// A JSON patch on the PersistentVolume adding the attacher's finalizer.
    AddPvFinalizer { pv: String, patch: Value },
    /// A merge patch on the VolumeAttachment's metadata (the finalizer, the node id
    /// annotation), conditional on its resourceVersion.
    PatchVa(Value),
    /// ControllerPublishVolume, with the secrets of `secret` (controllerPublishSecretRef).
    Publish {
        request: ControllerPublishVolumeRequest,
        secret: Option<SecretReference>,
    },
    /// Status attached, the publish context (of the Publish before, if any) as
    /// attachmentMetadata, attachError cleared.
    MarkAttached,
    /// ControllerUnpublishVolume, with the secrets of `secret`.
    Unpublish {
        request: ControllerUnpublishVolumeRequest,
        secret: Option<SecretReference>,
    },
    /// A JSON patch on the VolumeAttachment removing the attacher's finalizer.
    RemoveVaFinalizer(Value),
    /// Status detached: attached false, detachError and attachmentMetadata cleared.
    MarkDetached,
}

/// What a VolumeAttachment needs from this attacher.
#[derive(Debug, Clone, PartialEq)]
pub enum VaSync {
    /// Another attacher's or node's, or nothing to do.
    Nothing,
    /// Attach; failures go to status.attachError.
    Attach(Vec<Step>),
    /// Detach; failures go to status.detachError.
    Detach(Vec<Step>),
}

fn va_name(va: &VolumeAttachment) -> &str {
    va.metadata.name.as_deref().unwrap_or_default()
}

/// Whether the attachment is this attacher's: its driver, its node.
pub fn is_ours(attacher: &Attacher, va: &VolumeAttachment) -> bool {
    va.spec
        .as_ref()
        .is_some_and(|s| s.attacher == attacher.driver_name && s.node_name == attacher.node_name)
}

fn attached(va: &VolumeAttachment) -> bool {
    va.status.as_ref().is_some_and(|s| s.attached)
}

fn has_finalizer(finalizers: Option<&Vec<String>>, name: &str) -> bool {
    finalizers.is_some_and(|f| f.iter().any(|x| x == name))
}

/// The node id of `driver` on `node_name` from the Node's annotation (upstream's
/// getNodeID over the CSINode).
pub fn node_id_from_node(
    node: Option<&Node>,
    node_name: &str,
    driver: &str,
) -> Result<String, String> {
    let node = node.ok_or_else(|| format!("node {node_name:?} not found"))?;
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_ID_ANNOTATION))
        .and_then(|v| serde_json::from_str::<BTreeMap<String, String>>(v).ok())
        .and_then(|ids| ids.get(driver).cloned())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            format!("node {node_name:?} has no node id of driver {driver:?} in its {NODE_ID_ANNOTATION} annotation")
        })
}

/// The PersistentVolumeSpec an attachment is of: its PV's, or its inline spec
/// (upstream's getProcessedPVSpec, without migration). `pv` is the PV the source names.
fn volume_spec<'a>(
    va: &'a VolumeAttachment,
    pv: Option<&'a PersistentVolume>,
    attaching: bool,
) -> Result<(Option<&'a PersistentVolume>, &'a PersistentVolumeSpec), String> {
    let name = va_name(va);
    let source = va.spec.as_ref().map(|s| &s.source);
    let pv_name = source.and_then(|s| s.persistent_volume_name.as_deref());
    let inline = source.and_then(|s| s.inline_volume_spec.as_ref());
    match (pv_name, inline) {
        (Some(_), Some(_)) => Err(format!(
            "volumeattachment {name}: both inlineVolumeSpec and persistentVolumeName in its source"
        )),
        (None, None) => Err(format!(
            "volumeattachment {name}: neither inlineVolumeSpec nor persistentVolumeName in its source"
        )),
        (Some(pv_name), None) => {
            let pv = pv.ok_or_else(|| format!("persistentvolume {pv_name:?} not found"))?;
            if attaching && pv.metadata.deletion_timestamp.is_some() {
                return Err(format!(
                    "persistentvolume {pv_name:?} is marked for deletion"
                ));
            }
            let spec = pv
                .spec
                .as_ref()
                .ok_or_else(|| format!("persistentvolume {pv_name:?}: not a csi volume"))?;
            Ok((Some(pv), spec))
        }
        (None, Some(spec)) => {
            if spec.csi.is_none() {
                return Err(format!(
                    "volumeattachment {name}: its inline volume spec has no csi source"
                ));
            }
            Ok((None, spec))
        }
    }
}

fn csi_source<'a>(
    spec: &'a PersistentVolumeSpec,
    pv: Option<&PersistentVolume>,
) -> Result<&'a CSIPersistentVolumeSource, String> {
    spec.csi.as_ref().ok_or_else(|| {
        format!(
            "persistentvolume {:?}: not a csi volume",
            pv.and_then(|p| p.metadata.name.as_deref())
                .unwrap_or_default()
        )
    })
}

/// csi-lib-utils accessmodes.ToCSIAccessMode over a PV's access modes.
pub fn csi_access_mode(modes: &[String], single_node_multi_writer: bool) -> Result<Mode, String> {
    let has = |m: &str| modes.iter().any(|x| x == m);
    let distinct = modes
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if has("ReadWriteOncePod") {
        if distinct > 1 {
            return Err("kubernetes does not support use of ReadWriteOncePod with other access modes on the same persistentvolume".into());
        }
        return Ok(if single_node_multi_writer {
            Mode::SingleNodeSingleWriter
        } else {
            Mode::SingleNodeWriter
        });
    }
    if has("ReadWriteMany") {
        return Ok(Mode::MultiNodeMultiWriter);
    }
    match (has("ReadOnlyMany"), has("ReadWriteOnce")) {
        (true, true) => Err(
            "csi does not support ReadOnlyMany and ReadWriteOnce on the same persistentvolume"
                .into(),
        ),
        (true, false) => Ok(Mode::MultiNodeReaderOnly),
        (false, true) => Ok(if single_node_multi_writer {
            Mode::SingleNodeMultiWriter
        } else {
            Mode::SingleNodeWriter
        }),
        (false, false) => Err(format!("unsupported access mode combination {modes:?}")),
    }
}

/// upstream GetVolumeCapabilities: block for a Block volume, else mount with the PV's
/// fsType (or the default) and mount options; the access mode from its access modes.
pub fn volume_capability(
    spec: &PersistentVolumeSpec,
    single_node_multi_writer: bool,
    default_fs_type: &str,
) -> Result<VolumeCapability, String> {
    let csi = spec.csi.as_ref().ok_or("csi volume source is missing")?;
    let access_type = if spec.volume_mode.as_deref() == Some("Block") {
        AccessType::Block(BlockVolume {})
    } else {
        let fs_type = csi
            .fs_type
            .clone()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| default_fs_type.to_string());
        AccessType::Mount(MountVolume {
            fs_type,
            mount_flags: spec.mount_options.clone().unwrap_or_default(),
            ..Default::default()
        })
    };
    let mode = csi_access_mode(
        spec.access_modes.as_deref().unwrap_or_default(),
        single_node_multi_writer,
    )?;
    Ok(VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(access_type),
    })
}

/// upstream addFinalizerPatch: a JSON patch adding `finalizer`, with a test of the list
/// when it is absent or empty (so a concurrent first finalizer is not lost).
pub fn add_finalizer_patch(existing: Option<&Vec<String>>, finalizer: &str) -> Value {
    match existing {
        None => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ]),
        Some(list) if list.is_empty() => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": []},
            {"op": "replace", "path": "/metadata/finalizers", "value": [finalizer]},
        ]),
        Some(_) => json!([
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ]),
    }
}

/// upstream removeFinalizerPatch: a JSON patch removing `finalizer` at its index, after a
/// test that it is still there; none when it is not in the list.
pub fn remove_finalizer_patch(existing: Option<&Vec<String>>, finalizer: &str) -> Option<Value> {
    let index = existing?.iter().position(|f| f == finalizer)?;
    let path = format!("/metadata/finalizers/{index}");
    Some(json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]))
}

/// The current status' `attached`, which a status patch carries along (the field is
/// required, and a rekube VolumeAttachment may have no status yet).
fn attached_value(va: &VolumeAttachment) -> bool {
    attached(va)
}

/// markAsAttached's status patch: attached, `metadata` as attachmentMetadata (stale keys
/// removed), attachError cleared.
pub fn mark_attached_patch(va: &VolumeAttachment, metadata: &HashMap<String, String>) -> Value {
    let old = va
        .status
        .as_ref()
        .and_then(|s| s.attachment_metadata.as_ref());
    let metadata = if metadata.is_empty() {
        Value::Null
    } else {
        let mut m = serde_json::Map::new();
        for k in old.into_iter().flat_map(|o| o.keys()) {
            m.insert(k.clone(), Value::Null);
        }
        for (k, v) in metadata {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        Value::Object(m)
    };
    json!({"status": {"attached": true, "attachmentMetadata": metadata, "attachError": null}})
}

/// markAsDetached's status patch.
pub fn mark_detached_patch() -> Value {
    json!({"status": {"attached": false, "detachError": null, "attachmentMetadata": null}})
}

/// saveAttachError's status patch.
pub fn attach_error_patch(va: &VolumeAttachment, message: &str, now: &Time) -> Value {
    json!({"status": {
        "attached": attached_value(va),
        "attachError": {"message": message, "time": now},
    }})
}

/// saveDetachError's status patch.
pub fn detach_error_patch(va: &VolumeAttachment, message: &str, now: &Time) -> Value {
    json!({"status": {
        "attached": attached_value(va),
        "detachError": {"message": message, "time": now},
    }})
}

/// What a VolumeAttachment needs (upstream's SyncNewOrUpdatedVolumeAttachment, of the
/// trivial handler without PUBLISH_UNPUBLISH_VOLUME, else of the CSI handler). `pv` is the
/// PersistentVolume its source names (if it exists), `node` this attacher's Node.
pub fn sync_va(
    attacher: &Attacher,
    va: &VolumeAttachment,
    pv: Option<&PersistentVolume>,
    node: Option<&Node>,
) -> VaSync {
    if !is_ours(attacher, va) {
        return VaSync::Nothing;
    }
    if !attacher.publish_unpublish {
        // trivialHandler: attached, nothing else (no finalizer, nothing to detach).
        return if attached(va) {
            VaSync::Nothing
        } else {
            VaSync::Attach(vec![Step::MarkAttached])
        };
    }
    if va.metadata.deletion_timestamp.is_none() {
        if attached(va) {
            return VaSync::Nothing;
        }
        VaSync::Attach(attach_steps(attacher, va, pv, node))
    } else {
        let finalizer = attacher_finalizer(&attacher.driver_name);
        if !has_finalizer(va.metadata.finalizers.as_ref(), &finalizer) {
            return VaSync::Nothing;
        }
        VaSync::Detach(detach_steps(attacher, va, pv, node))
    }
}

/// upstream csiAttach, then markAsAttached.
fn attach_steps(
    attacher: &Attacher,
    va: &VolumeAttachment,
    pv: Option<&PersistentVolume>,
    node: Option<&Node>,
) -> Vec<Step> {
    let finalizer = attacher_finalizer(&attacher.driver_name);
    let mut steps = Vec::new();
    let (pv, spec) = match volume_spec(va, pv, true) {
        Ok(v) => v,
        Err(e) => return vec![Step::Fail(e)],
    };
    if let Some(pv) = pv
        && !has_finalizer(pv.metadata.finalizers.as_ref(), &finalizer)
    {
        steps.push(Step::AddPvFinalizer {
            pv: pv.metadata.name.clone().unwrap_or_default(),
            patch: add_finalizer_patch(pv.metadata.finalizers.as_ref(), &finalizer),
        });
    }
    let prepared = (|| {
        let source = csi_source(spec, pv)?;
        let capability = volume_capability(
            spec,
            attacher.single_node_multi_writer,
            &attacher.default_fs_type,
        )?;
        let node_id = node_id_from_node(node, &attacher.node_name, &attacher.driver_name)?;
        Ok::<_, String>((source, capability, node_id))
    })();
    let (source, capability, node_id) = match prepared {
        Ok(v) => v,
        Err(e) => {
            steps.push(Step::Fail(e));
            return steps;
        }
    };
    let mut metadata = serde_json::Map::new();
    if !has_finalizer(va.metadata.finalizers.as_ref(), &finalizer) {
        let mut finalizers = va.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push(finalizer);
        metadata.insert("finalizers".into(), json!(finalizers));
    }
    if va
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VA_NODE_ID_ANNOTATION))
        != Some(&node_id)
    {
        metadata.insert(
            "annotations".into(),
            json!({ VA_NODE_ID_ANNOTATION: node_id }),
        );
    }
    if !metadata.is_empty() {
        metadata.insert(
            "resourceVersion".into(),
            json!(va.metadata.resource_version),
        );
        steps.push(Step::PatchVa(json!({ "metadata": metadata })));
    }
    steps.push(Step::Publish {
        request: ControllerPublishVolumeRequest {
            volume_id: source.volume_handle.clone(),
            node_id,
            volume_capability: Some(capability),
            readonly: attacher.publish_readonly && source.read_only.unwrap_or(false),
            secrets: HashMap::new(),
            volume_context: source
                .volume_attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        },
        secret: source.controller_publish_secret_ref.clone(),
    });
    steps.push(Step::MarkAttached);
    steps
}

/// upstream csiDetach, then markAsDetached.
fn detach_steps(
    attacher: &Attacher,
    va: &VolumeAttachment,
    pv: Option<&PersistentVolume>,
    node: Option<&Node>,
) -> Vec<Step> {
    let prepared = (|| {
        let (pv, spec) = volume_spec(va, pv, false)?;
        let source = csi_source(spec, pv)?;
        let node_id =
            node_id_from_node(node, &attacher.node_name, &attacher.driver_name).or_else(|e| {
                va.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(VA_NODE_ID_ANNOTATION))
                    .cloned()
                    .ok_or(e)
            })?;
        Ok::<_, String>((source, node_id))
    })();
    let (source, node_id) = match prepared {
        Ok(v) => v,
        Err(e) => return vec![Step::Fail(e)],
    };
    let mut steps = vec![Step::Unpublish {
        request: ControllerUnpublishVolumeRequest {
            volume_id: source.volume_handle.clone(),
            node_id,
            // reason (alpha in CSI 1.14) unset, as upstream's v4.13.0 leaves it.
            ..Default::default()
        },
        secret: source.controller_publish_secret_ref.clone(),
    }];
    let finalizer = attacher_finalizer(&attacher.driver_name);
    if let Some(patch) = remove_finalizer_patch(va.metadata.finalizers.as_ref(), &finalizer) {
        steps.push(Step::RemoveVaFinalizer(patch));
    }
    steps.push(Step::MarkDetached);
    steps
}

/// upstream SyncNewOrUpdatedPersistentVolume: the patch removing the attacher's
/// finalizer from a PersistentVolume being deleted that no VolumeAttachment names any
/// more.
pub fn sync_pv<'a>(
    attacher: &Attacher,
    pv: &PersistentVolume,
    mut attachments: impl Iterator<Item = &'a VolumeAttachment>,
) -> Option<Value> {
    pv.metadata.deletion_timestamp.as_ref()?;
    let name = pv.metadata.name.as_deref()?;
    let finalizer = attacher_finalizer(&attacher.driver_name);
    let patch = remove_finalizer_patch(pv.metadata.finalizers.as_ref(), &finalizer)?;
    let named = attachments.any(|va| {
        va.spec
            .as_ref()
            .and_then(|s| s.source.persistent_volume_name.as_deref())
            == Some(name)
    });
    (!named).then_some(patch)
}

/// The PersistentVolume a VolumeAttachment's source names.
pub fn pv_name(va: &VolumeAttachment) -> Option<&str> {
    va.spec
        .as_ref()
        .and_then(|s| s.source.persistent_volume_name.as_deref())
}

/// upstream shouldEnqueueVAChange: every change but one of status.attachError or
/// status.detachError alone (the attacher's own writes, which would break its back-off).
pub fn should_enqueue_va_change(old: &VolumeAttachment, new: &VolumeAttachment) -> bool {
    if old.metadata.resource_version == new.metadata.resource_version {
        return true;
    }
    let errors = |va: &VolumeAttachment| {
        va.status
            .as_ref()
            .map(|s| (s.attach_error.clone(), s.detach_error.clone()))
            .unwrap_or_default()
    };
    let (old_attach, old_detach) = errors(old);
    let (new_attach, new_detach) = errors(new);
    if old_attach.is_none() && old_detach.is_none() && new_attach.is_none() && new_detach.is_none()
    {
        return true;
    }
    let mut sanitized = new.clone();
    sanitized.metadata.resource_version = old.metadata.resource_version.clone();
    sanitized.metadata.managed_fields = old.metadata.managed_fields.clone();
    if let Some(s) = &mut sanitized.status {
        s.attach_error = old_attach;
        s.detach_error = old_detach;
    }
    sanitized != *old
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
