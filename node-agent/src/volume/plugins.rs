//! The volume plugins a pod's volume goes through (pkg/volume/plugins.go's
//! `VolumePluginMgr.FindPluginBySpec`): which plugin takes a volume of the pod spec, its
//! attributes (read-only, whether it is set up again at every pod sync), and set-up and
//! tear-down through the plugin modules. [`VolumeSpec::of`] is pure; set-up and
//! tear-down touch the node.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, DownwardAPIVolumeSource, HostPathVolumeSource,
    ProjectedVolumeSource, Secret, SecretVolumeSource, Volume,
};
use rekube_crds::Pod;

use super::atomic_writer::{AtomicWriter, AtomicWriterError};
use super::pod_dirs::{
    CONFIG_MAP_PLUGIN, CSI_PLUGIN, DOWNWARD_API_PLUGIN, EMPTY_DIR_PLUGIN, HOST_PATH_PLUGIN,
    LOCAL_PLUGIN, PROJECTED_PLUGIN, PodDirs, SECRET_PLUGIN,
};
use super::{Payload, configmap, downwardapi, emptydir, hostpath, local, projected, secret};
use crate::kubelet::quantity::parse_quantity;
use crate::runtime::syscall::Syscall;

/// A pod volume as its plugin takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeSpec {
    EmptyDir {
        medium: Option<String>,
        size_limit_bytes: Option<i64>,
    },
    HostPath(HostPathVolumeSource),
    ConfigMap(ConfigMapVolumeSource),
    Secret(SecretVolumeSource),
    DownwardApi(DownwardAPIVolumeSource),
    Projected(ProjectedVolumeSource),
    /// The PersistentVolume a pod's claim is bound to ([`super::claim`]): set up by the
    /// plugin of its source; the pod's volume directory is named after the PV (upstream's
    /// inner volume spec name).
    Persistent {
        pv_name: String,
        /// The pod volume's `persistentVolumeClaim.readOnly`.
        read_only: bool,
        source: PersistentSource,
    },
    /// A claim's PersistentVolume in volumeMode Block: mapped as a raw device for the
    /// containers' `volumeDevices` by its plugin's block volume mapper, never mounted.
    Block {
        pv_name: String,
        /// The pod volume's `persistentVolumeClaim.readOnly`.
        read_only: bool,
        source: BlockSource,
    },
}

/// The sources of PersistentVolumes in volumeMode Block the agent maps (the plugins that
/// are upstream `BlockVolumePlugin`s among those the agent has).
#[derive(Debug, Clone, PartialEq)]
pub enum BlockSource {
    /// The local plugin: `path` is a block device of the node.
    Local { path: String },
    /// The csi plugin ([`super::csi_block`]): staged and published by the PV's driver.
    Csi(super::csi::CsiSource),
}

/// The sources of PersistentVolumes the agent mounts.
#[derive(Debug, Clone, PartialEq)]
pub enum PersistentSource {
    /// The hostPath plugin, as for a pod's own hostPath volume.
    HostPath(HostPathVolumeSource),
    /// The local plugin: a directory of the node, bind-mounted.
    Local { path: String },
    /// The csi plugin ([`super::csi`]): staged and published by the PV's CSI driver.
    Csi(super::csi::CsiSource),
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no volume plugin matched: {kind} volumes are not supported by rekube-node-agent yet")]
    Unsupported { kind: &'static str },
    /// A CSI volume is set up by the volume manager through its driver
    /// ([`super::csi::set_up`]), never here.
    #[error("volume {pv:?} is a CSI volume: it is set up and torn down through its driver")]
    NeedsDriver { pv: String },
    /// A Block volume is mapped by the volume manager ([`super::volume_path_handler`]),
    /// never set up here.
    #[error("volume {pv:?} is a block volume: it is mapped for volumeDevices, not mounted")]
    BlockVolume { pv: String },
    #[error("invalid sizeLimit {value:?}: {message}")]
    SizeLimit { value: String, message: String },
    #[error(transparent)]
    EmptyDir(#[from] emptydir::EmptyDirError),
    #[error(transparent)]
    HostPath(#[from] hostpath::HostPathError),
    #[error(transparent)]
    ConfigMap(#[from] configmap::ConfigMapError),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error(transparent)]
    DownwardApi(#[from] downwardapi::DownwardApiError),
    #[error(transparent)]
    Projected(#[from] projected::ProjectedError),
    #[error(transparent)]
    Local(#[from] local::LocalError),
    #[error(transparent)]
    AtomicWriter(#[from] AtomicWriterError),
}

/// The kinds of volume source a pod spec may name (for the "not supported" message).
fn source_kind(v: &Volume) -> &'static str {
    let kinds: [(&'static str, bool); 10] = [
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("csi", v.csi.is_some()),
        ("image", v.image.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("fc", v.fc.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("rbd", v.rbd.is_some()),
    ];
    kinds
        .iter()
        .find(|(_, set)| *set)
        .map_or("this", |(k, _)| k)
}

impl VolumeSpec {
    /// The plugin that takes `volume` (`FindPluginBySpec`), or why none does.
    pub fn of(volume: &Volume) -> Result<VolumeSpec, PluginError> {
        if let Some(e) = &volume.empty_dir {
            let size_limit_bytes = match &e.size_limit {
                Some(q) => Some(
                    parse_quantity(&q.0)
                        .map_err(|err| PluginError::SizeLimit {
                            value: q.0.clone(),
                            message: err.to_string(),
                        })?
                        .value(),
                ),
                None => None,
            };
            return Ok(VolumeSpec::EmptyDir {
                medium: e.medium.clone().filter(|m| !m.is_empty()),
                size_limit_bytes,
            });
        }
        if let Some(h) = &volume.host_path {
            return Ok(VolumeSpec::HostPath(h.clone()));
        }
        if let Some(c) = &volume.config_map {
            return Ok(VolumeSpec::ConfigMap(c.clone()));
        }
        if let Some(s) = &volume.secret {
            return Ok(VolumeSpec::Secret(s.clone()));
        }
        if let Some(d) = &volume.downward_api {
            return Ok(VolumeSpec::DownwardApi(d.clone()));
        }
        if let Some(p) = &volume.projected {
            return Ok(VolumeSpec::Projected(p.clone()));
        }
        Err(PluginError::Unsupported {
            kind: source_kind(volume),
        })
    }

    /// The name of the volume's directory under the pod's (`volumes/<plugin>/<name>`):
    /// the PersistentVolume's for a claim-backed volume (upstream's inner volume spec
    /// name), else the volume's name in the pod spec (`outer`).
    pub fn dir_name(&self, outer: &str) -> String {
        match self {
            VolumeSpec::Persistent { pv_name, .. } | VolumeSpec::Block { pv_name, .. } => {
                pv_name.clone()
            }
            _ => outer.to_string(),
        }
    }

    /// The plugin's name (`GetPluginName`).
    pub fn plugin_name(&self) -> &'static str {
        match self {
            VolumeSpec::EmptyDir { .. } => EMPTY_DIR_PLUGIN,
            VolumeSpec::HostPath(_) => HOST_PATH_PLUGIN,
            VolumeSpec::ConfigMap(_) => CONFIG_MAP_PLUGIN,
            VolumeSpec::Secret(_) => SECRET_PLUGIN,
            VolumeSpec::DownwardApi(_) => DOWNWARD_API_PLUGIN,
            VolumeSpec::Projected(_) => PROJECTED_PLUGIN,
            VolumeSpec::Persistent {
                source: PersistentSource::HostPath(_),
                ..
            } => HOST_PATH_PLUGIN,
            VolumeSpec::Persistent {
                source: PersistentSource::Local { .. },
                ..
            } => LOCAL_PLUGIN,
            VolumeSpec::Persistent {
                source: PersistentSource::Csi(_),
                ..
            }
            | VolumeSpec::Block {
                source: BlockSource::Csi(_),
                ..
            } => CSI_PLUGIN,
            VolumeSpec::Block {
                source: BlockSource::Local { .. },
                ..
            } => LOCAL_PLUGIN,
        }
    }

    /// `RequiresRemount`: set up again at every sync of the pod, so that a changed
    /// ConfigMap, Secret or pod label reaches the running pod.
    pub fn requires_remount(&self) -> bool {
        matches!(
            self,
            VolumeSpec::ConfigMap(_)
                | VolumeSpec::Secret(_)
                | VolumeSpec::DownwardApi(_)
                | VolumeSpec::Projected(_)
        )
    }

    /// The mounter's `ReadOnly` attribute: containers always mount these read-only.
    pub fn read_only(&self) -> bool {
        match self {
            VolumeSpec::Persistent {
                read_only,
                source: PersistentSource::Csi(csi),
                ..
            } => *read_only || csi.read_only,
            VolumeSpec::Persistent { read_only, .. } => *read_only,
            VolumeSpec::Block {
                read_only,
                source: BlockSource::Csi(csi),
                ..
            } => *read_only || csi.read_only,
            VolumeSpec::Block { read_only, .. } => *read_only,
            _ => self.requires_remount(),
        }
    }

    /// The ConfigMaps and Secrets the volume projects (read before set-up).
    pub fn objects(&self) -> Vec<(ObjectKind, String)> {
        match self {
            VolumeSpec::ConfigMap(c) => vec![(ObjectKind::ConfigMap, c.name.clone())],
            VolumeSpec::Secret(s) => vec![(
                ObjectKind::Secret,
                s.secret_name.clone().unwrap_or_default(),
            )],
            VolumeSpec::Projected(p) => {
                let (config_maps, secrets) = projected::objects(p);
                config_maps
                    .into_iter()
                    .map(|n| (ObjectKind::ConfigMap, n))
                    .chain(secrets.into_iter().map(|n| (ObjectKind::Secret, n)))
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    ConfigMap,
    Secret,
}

/// The API objects a volume projects, read by the shell before set-up, by name (a name
/// missing here: not found).
#[derive(Debug, Clone, Default)]
pub struct VolumeObjects {
    pub config_maps: std::collections::BTreeMap<String, ConfigMap>,
    pub secrets: std::collections::BTreeMap<String, Secret>,
    /// A projected volume's serviceAccountToken sources' tokens (requested by the shell
    /// through the token manager).
    pub service_account_tokens: projected::Tokens,
    /// The ClusterTrustBundles a projected volume's clusterTrustBundle sources choose
    /// from (listed by the shell as the node).
    pub cluster_trust_bundles: super::cluster_trust_bundle::Bundles,
    /// A projected volume's podCertificate sources' credentials (had issued by the shell
    /// through the podcertificate manager).
    pub pod_certificates: super::pod_certificate::Credentials,
}

/// What set-up needs of the node.
pub struct SetUpContext<'a> {
    pub dirs: &'a PodDirs,
    pub sys: &'a dyn Syscall,
    /// The node's allocatable memory in bytes (the tmpfs size when nothing smaller is set).
    pub node_allocatable_memory: i64,
}

/// Sets the pod's volume `name` up (`Mounter.SetUp`): the path containers mount.
pub fn set_up(
    ctx: &SetUpContext<'_>,
    pod: &Pod,
    name: &str,
    spec: &VolumeSpec,
    objects: &VolumeObjects,
    node_allocatable: &std::collections::BTreeMap<
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    >,
) -> Result<PathBuf, PluginError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = ctx.dirs.pod_volume_dir(uid, spec.plugin_name(), name);
    let ready = ctx.dirs.pod_plugin_dir(uid, spec.plugin_name(), name);
    let memory = |size_limit: Option<i64>| {
        emptydir::calculate_empty_dir_memory_size(
            ctx.node_allocatable_memory,
            size_limit,
            emptydir::pod_memory_limit(pod),
        )
    };
    match spec {
        VolumeSpec::HostPath(source)
        | VolumeSpec::Persistent {
            source: PersistentSource::HostPath(source),
            ..
        } => return Ok(hostpath::set_up(source)?),
        VolumeSpec::Persistent {
            pv_name,
            read_only,
            source: PersistentSource::Local { path },
        } => {
            let dir = ctx.dirs.pod_volume_dir(uid, LOCAL_PLUGIN, pv_name);
            local::set_up(pv_name, path, &dir, *read_only, ctx.sys)?;
            return Ok(dir);
        }
        VolumeSpec::Persistent {
            pv_name,
            source: PersistentSource::Csi(_),
            ..
        } => {
            return Err(PluginError::NeedsDriver {
                pv: pv_name.clone(),
            });
        }
        VolumeSpec::Block { pv_name, .. } => {
            return Err(PluginError::BlockVolume {
                pv: pv_name.clone(),
            });
        }
        VolumeSpec::EmptyDir {
            medium,
            size_limit_bytes,
        } => {
            emptydir::set_up(
                &dir,
                &ready,
                medium.as_deref(),
                memory(*size_limit_bytes),
                ctx.sys,
            )?;
            return Ok(dir);
        }
        // configMap volumes are on the node's disk, secrets and downwardAPI in memory
        // (upstream wraps an emptyDir of that medium).
        VolumeSpec::ConfigMap(_) => emptydir::set_up(&dir, &ready, None, 0, ctx.sys)?,
        VolumeSpec::Secret(_) | VolumeSpec::DownwardApi(_) | VolumeSpec::Projected(_) => {
            emptydir::set_up(&dir, &ready, Some("Memory"), memory(None), ctx.sys)?
        }
    }
    let payload: Payload = match spec {
        VolumeSpec::ConfigMap(source) => {
            configmap::payload_for(source, objects.config_maps.get(&source.name))?
        }
        VolumeSpec::Secret(source) => secret::payload_for(
            source,
            objects
                .secrets
                .get(source.secret_name.as_deref().unwrap_or_default()),
        )?,
        VolumeSpec::Projected(source) => projected::collect_data(
            source,
            pod,
            &objects.config_maps,
            &objects.secrets,
            &objects.service_account_tokens,
            &objects.cluster_trust_bundles,
            &objects.pod_certificates,
            node_allocatable,
        )?,
        VolumeSpec::DownwardApi(source) => downwardapi::collect_data(
            source.items.as_deref().unwrap_or_default(),
            pod,
            node_allocatable,
            source.default_mode,
        )?,
        _ => unreachable!("handled above"),
    };
    let context = format!(
        "pod {}/{} volume {name}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    AtomicWriter::new(&dir, &context)?.write(&payload, None)?;
    Ok(dir)
}

/// Tears the volume down (`Unmounter.TearDown`): hostPath leaves the node's path alone; a
/// local volume is unmounted from `path`, where its set-up put it.
pub fn tear_down(
    dirs: &PodDirs,
    sys: &dyn Syscall,
    uid: &str,
    plugin: &str,
    name: &str,
    path: &std::path::Path,
) -> Result<(), PluginError> {
    if plugin == HOST_PATH_PLUGIN {
        return Ok(());
    }
    if plugin == LOCAL_PLUGIN {
        return Ok(local::tear_down(path, sys)?);
    }
    if plugin == CSI_PLUGIN {
        return Err(PluginError::NeedsDriver {
            pv: name.to_string(),
        });
    }
    let dir = dirs.pod_volume_dir(uid, plugin, name);
    let ready = dirs.pod_plugin_dir(uid, plugin, name);
    emptydir::tear_down(&dir, &ready, sys)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(json: serde_json::Value) -> Volume {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn plugins_by_source() {
        let cases = [
            (
                serde_json::json!({"name": "a", "emptyDir": {}}),
                EMPTY_DIR_PLUGIN,
                false,
            ),
            (
                serde_json::json!({"name": "a", "hostPath": {"path": "/x"}}),
                HOST_PATH_PLUGIN,
                false,
            ),
            (
                serde_json::json!({"name": "a", "configMap": {"name": "c"}}),
                CONFIG_MAP_PLUGIN,
                true,
            ),
            (
                serde_json::json!({"name": "a", "secret": {"secretName": "s"}}),
                SECRET_PLUGIN,
                true,
            ),
            (
                serde_json::json!({"name": "a", "downwardAPI": {"items": []}}),
                DOWNWARD_API_PLUGIN,
                true,
            ),
            (
                serde_json::json!({"name": "a", "projected": {"sources": []}}),
                PROJECTED_PLUGIN,
                true,
            ),
        ];
        for (v, plugin, remount) in cases {
            let spec = VolumeSpec::of(&volume(v.clone())).unwrap();
            assert_eq!(spec.plugin_name(), plugin, "{v}");
            assert_eq!(spec.requires_remount(), remount, "{v}");
            assert_eq!(spec.read_only(), remount, "{v}");
        }
        let spec = VolumeSpec::of(&volume(
            serde_json::json!({"name": "a", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}),
        ))
        .unwrap();
        assert_eq!(
            spec,
            VolumeSpec::EmptyDir {
                medium: Some("Memory".into()),
                size_limit_bytes: Some(64 << 20)
            }
        );
    }

    #[test]
    fn unsupported_sources_are_named() {
        let err = VolumeSpec::of(&volume(
            serde_json::json!({"name": "a", "nfs": {"server": "s", "path": "/"}}),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no volume plugin matched: nfs volumes are not supported by rekube-node-agent yet"
        );
        let err = VolumeSpec::of(&volume(
            serde_json::json!({"name": "a", "emptyDir": {"sizeLimit": "lots"}}),
        ))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid sizeLimit \"lots\""),
            "{err}"
        );
    }
}
