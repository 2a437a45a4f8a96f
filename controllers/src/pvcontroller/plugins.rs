//! What the PV controller uses of upstream's volume plugins (`pkg/volume/plugins.go`:
//! `VolumePlugin`, `ProvisionableVolumePlugin`, `DeletableVolumePlugin`,
//! `RecyclableVolumePlugin`, `Provisioner`, `Deleter`, and the `VolumePluginMgr` lookups
//! `FindProvisionablePluginByName`, `FindDeletablePluginByName`,
//! `FindDeletablePluginBySpec`, `FindRecyclablePluginBySpec`).
//!
//! A plugin says what it can do (`is_provisionable`, `is_deletable`, `is_recyclable`, as
//! upstream's type assertions); [`VolumePluginMgr`] finds plugins by name or by the volume
//! they support, with upstream's error texts (the controller writes them into volume
//! status messages and events). Creating a provisioner or deleter is a separate, fallible
//! step, as upstream's `NewProvisioner` and `NewDeleter`: its failure is reported apart
//! from the provisioning's or deletion's.
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::TopologySelectorTerm;
use rekube_crds::events::EventType;
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim};

/// Upstream `volume.VolumeOptions`: what a provisioner gets to create a volume.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeOptions {
    /// The StorageClass' `reclaimPolicy`.
    pub persistent_volume_reclaim_policy: String,
    /// The StorageClass' `mountOptions`.
    pub mount_options: Option<Vec<String>>,
    /// The name the PersistentVolume gets (`pvc-<claim uid>`).
    pub pv_name: String,
    /// The claim to provision for.
    pub pvc: PersistentVolumeClaim,
    /// The StorageClass' `parameters`.
    pub parameters: Option<BTreeMap<String, String>>,
}

/// A failed deletion (upstream: the `error` of `Deleter.Delete`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// The volume is still in use and deletion is to be retried later (upstream
    /// `volerr.DeletedVolumeInUseError`): a Normal event, the volume is not marked Failed.
    #[error("{0}")]
    DeletedVolumeInUse(String),
    /// Any other failure.
    #[error("{0}")]
    Failed(String),
}

/// Upstream `recyclerclient.RecycleEventRecorder`: reports the recycler's progress as
/// events on the volume.
pub type RecycleEventRecorder = Arc<dyn Fn(EventType, &str) + Send + Sync>;

/// Upstream `volume.Provisioner`, made by [`VolumePlugin::new_provisioner`].
pub trait Provisioner: Send {
    /// Creates the storage asset and returns its PersistentVolume (upstream `Provision`); the
    /// controller binds it to the claim and saves it.
    fn provision<'a>(
        &'a mut self,
        selected_node: Option<&'a Node>,
        allowed_topologies: Option<&'a [TopologySelectorTerm]>,
    ) -> BoxFuture<'a, Result<PersistentVolume, String>>;
}

/// Upstream `volume.Deleter`, made by [`VolumePlugin::new_deleter`].
pub trait Deleter: Send {
    /// Removes the storage asset (upstream `Delete`).
    fn delete(&mut self) -> BoxFuture<'_, Result<(), DeleteError>>;
}

/// A volume plugin, as far as the PV controller uses one (upstream `VolumePlugin` and its
/// provisionable, deletable and recyclable extensions).
pub trait VolumePlugin: Send + Sync {
    /// Upstream `GetPluginName`, e.g. `kubernetes.io/host-path`.
    fn name(&self) -> &str;
    /// Upstream `CanSupport(spec)`: whether the plugin handles this volume.
    fn can_support(&self, volume: &PersistentVolume) -> bool;
    /// Upstream `SupportsMountOption`.
    fn supports_mount_option(&self) -> bool {
        false
    }
    /// Whether the plugin is a `ProvisionableVolumePlugin`.
    fn is_provisionable(&self) -> bool {
        false
    }
    /// Whether the plugin is a `DeletableVolumePlugin`.
    fn is_deletable(&self) -> bool {
        false
    }
    /// Whether the plugin is a `RecyclableVolumePlugin`.
    fn is_recyclable(&self) -> bool {
        false
    }
    /// Upstream `NewProvisioner(options)`.
    fn new_provisioner(
        &self,
        _options: VolumeOptions,
    ) -> Result<Box<dyn Provisioner + '_>, String> {
        Err(format!("plugin {} cannot provision volumes", self.name()))
    }
    /// Upstream `NewDeleter(spec)`.
    fn new_deleter(&self, _volume: &PersistentVolume) -> Result<Box<dyn Deleter + '_>, String> {
        Err(format!("plugin {} cannot delete volumes", self.name()))
    }
    /// Upstream `Recycle(pvName, spec, eventRecorder)`: scrubs the volume's data.
    fn recycle<'a>(
        &'a self,
        _pv_name: &'a str,
        _volume: &'a PersistentVolume,
        _recorder: RecycleEventRecorder,
    ) -> BoxFuture<'a, Result<(), String>> {
        let name = self.name().to_string();
        Box::pin(async move { Err(format!("plugin {name} cannot recycle volumes")) })
    }
}

/// Upstream `ErrNoPluginMatched`.
pub const ERR_NO_PLUGIN_MATCHED: &str = "no volume plugin matched";

/// The controller's plugins (upstream `VolumePluginMgr`, its lookups only).
#[derive(Clone, Default)]
pub struct VolumePluginMgr {
    plugins: Vec<Arc<dyn VolumePlugin>>,
}

impl VolumePluginMgr {
    /// Upstream `InitPlugins`.
    pub fn new(plugins: Vec<Arc<dyn VolumePlugin>>) -> Self {
        Self { plugins }
    }

    /// Upstream `FindPluginByName`.
    pub fn find_plugin_by_name(&self, name: &str) -> Result<Arc<dyn VolumePlugin>, String> {
        let mut matches = self.plugins.iter().filter(|p| p.name() == name);
        match (matches.next(), matches.next()) {
            (Some(plugin), None) => Ok(Arc::clone(plugin)),
            (Some(a), Some(b)) => Err(format!(
                "multiple volume plugins matched: {} and {}",
                a.name(),
                b.name()
            )),
            (None, _) => Err(format!("no volume plugin matched name: {name}")),
        }
    }

    /// Upstream `FindPluginBySpec`.
    pub fn find_plugin_by_spec(
        &self,
        volume: &PersistentVolume,
    ) -> Result<Arc<dyn VolumePlugin>, String> {
        let matched: Vec<&Arc<dyn VolumePlugin>> = self
            .plugins
            .iter()
            .filter(|p| p.can_support(volume))
            .collect();
        match matched.as_slice() {
            [] => Err(ERR_NO_PLUGIN_MATCHED.to_string()),
            [plugin] => Ok(Arc::clone(plugin)),
            many => Err(format!(
                "multiple volume plugins matched: {}",
                many.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
            )),
        }
    }

    /// Upstream `FindProvisionablePluginByName`.
    pub fn find_provisionable_plugin_by_name(
        &self,
        name: &str,
    ) -> Result<Arc<dyn VolumePlugin>, String> {
        let plugin = self.find_plugin_by_name(name)?;
        if plugin.is_provisionable() {
            Ok(plugin)
        } else {
            Err("no provisionable volume plugin matched".to_string())
        }
    }

    /// Upstream `FindDeletablePluginByName`.
    pub fn find_deletable_plugin_by_name(
        &self,
        name: &str,
    ) -> Result<Arc<dyn VolumePlugin>, String> {
        let plugin = self.find_plugin_by_name(name)?;
        if plugin.is_deletable() {
            Ok(plugin)
        } else {
            Err("no deletable volume plugin matched".to_string())
        }
    }

    /// Upstream `FindDeletablePluginBySpec`.
    pub fn find_deletable_plugin_by_spec(
        &self,
        volume: &PersistentVolume,
    ) -> Result<Arc<dyn VolumePlugin>, String> {
        let plugin = self.find_plugin_by_spec(volume)?;
        if plugin.is_deletable() {
            Ok(plugin)
        } else {
            Err("no deletable volume plugin matched".to_string())
        }
    }

    /// Upstream `FindRecyclablePluginBySpec`.
    pub fn find_recyclable_plugin_by_spec(
        &self,
        volume: &PersistentVolume,
    ) -> Result<Arc<dyn VolumePlugin>, String> {
        let plugin = self.find_plugin_by_spec(volume)?;
        if plugin.is_recyclable() {
            Ok(plugin)
        } else {
            Err("no recyclable volume plugin matched".to_string())
        }
    }
}
