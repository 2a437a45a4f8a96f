//! The PV controller's test framework (upstream: `framework_test.go` and
//! `testing/testing.go`): an in-memory apiserver ([`VolumeReactor`], upstream's fake
//! clientset with its `VolumeReactor`) implementing [`PvClient`], the object builders
//! (`newVolume`, `newClaim`, `withLabelSelector`, ...), the mock volume plugin
//! (`mockVolumePlugin`), and the runners `runSyncTests` and `runMultisyncTests`.
//!
//! As upstream's, the reactor keeps the latest saved version of each volume and claim
//! (claims by name, in the one test namespace), bumps resourceVersions on update and
//! refuses stale ones with a conflict, returns the injected errors ([`ReactorError`],
//! matched by verb and resource, each returned once, in order), queues every saved object
//! (the "changed" events of the multi-sync runner) and records events as
//! `"<type> <reason> <message>"`. Results are compared without resourceVersions. Events
//! are compared as upstream's `checkEvents` does: the first recorded events must start
//! with the expected strings; further events are not checked.
//!
//! The runners use tokio's paused clock: upstream's waits (the 600ms cool-down of the
//! operations' backoff, the provisioning retry interval) take no time.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::Resource as _;
use k8s_openapi::api::core::v1::{
    GCEPersistentDiskVolumeSource, ObjectReference, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus,
    TopologySelectorTerm, TypedLocalObjectReference, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use rekube_crds::{Node, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass};

use super::client::{ApiError, EventType, PvClient};
use super::index::{READ_ONLY_MANY, READ_WRITE_ONCE, claim_to_claim_key};
use super::plugins::{
    DeleteError, Deleter, Provisioner, RecycleEventRecorder, VolumeOptions, VolumePlugin,
};
use super::pv_controller::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_DYNAMICALLY_PROVISIONED, ANN_STORAGE_PROVISIONER,
    PersistentVolumeController, VOLUME_AVAILABLE, VOLUME_BOUND, has_annotation, name_of,
};

/// Upstream `testNamespace`.
pub const TEST_NAMESPACE: &str = "default";
/// Upstream `mockPluginName`.
pub const MOCK_PLUGIN_NAME: &str = "kubernetes.io/mock-volume";
/// Upstream `annSkipLocalStore`: an initial object only the apiserver has, not the
/// controller's cache.
pub const ANN_SKIP_LOCAL_STORE: &str = "pv-testing-skip-local-store";

pub const CLASS_GOLD: &str = "gold";
pub const CLASS_SILVER: &str = "silver";
pub const CLASS_COPPER: &str = "copper";
pub const CLASS_EMPTY: &str = "";
pub const CLASS_NON_EXISTING: &str = "non-existing";
pub const CLASS_EXTERNAL: &str = "external";
pub const CLASS_EXTERNAL_WAIT: &str = "external-wait";
pub const CLASS_UNKNOWN_INTERNAL: &str = "unknown-internal";
pub const CLASS_UNSUPPORTED_MOUNT_OPTIONS: &str = "unsupported-mountoptions";
pub const CLASS_WAIT: &str = "wait";
pub const CLASS_CSI: &str = "csi";
pub const MODE_WAIT: &str = "WaitForFirstConsumer";
pub const MODE_IMMEDIATE: &str = "Immediate";
pub const MODE_BLOCK: &str = "Block";
pub const MODE_FILE: &str = "Filesystem";

pub type TestController = PersistentVolumeController<VolumeReactor>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// --- the reactor ---

/// Upstream `ReactorError`: the `error` returned by the first call with this verb
/// ("get", "update", "create", "delete", "*") on this resource ("persistentvolumes",
/// "persistentvolumeclaims", "*").
#[derive(Debug, Clone)]
pub struct ReactorError {
    pub verb: &'static str,
    pub resource: &'static str,
    pub error: ApiError,
}

/// An object saved by the controller (upstream `changedObjects`).
#[derive(Debug, Clone)]
pub enum Changed {
    Volume(Box<PersistentVolume>),
    Claim(Box<PersistentVolumeClaim>),
}

/// What a watch would deliver (upstream's fake watchers), for the controller tests.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Volume(Box<PersistentVolume>),
    VolumeDeleted(Box<PersistentVolume>),
    Claim(Box<PersistentVolumeClaim>),
    ClaimDeleted(Box<PersistentVolumeClaim>),
}

#[derive(Default)]
pub struct ReactorState {
    pub volumes: BTreeMap<String, PersistentVolume>,
    pub claims: BTreeMap<String, PersistentVolumeClaim>,
    pub changed_objects: VecDeque<Changed>,
    pub changed_since_last_sync: usize,
    pub errors: Vec<ReactorError>,
    pub events: Vec<String>,
    pub storage_classes: BTreeMap<String, Arc<StorageClass>>,
    pub pods: Vec<Arc<Pod>>,
    pub nodes: BTreeMap<String, Arc<Node>>,
    pub enqueued_claims: Vec<String>,
    pub watch_events: VecDeque<WatchEvent>,
}

/// Upstream `VolumeReactor`: the simulated apiserver, listers and event recorder. Cloning
/// gives another handle on the same state.
#[derive(Clone, Default)]
pub struct VolumeReactor {
    pub state: Arc<Mutex<ReactorState>>,
}

fn rv(meta: &ObjectMeta) -> i64 {
    // Go's strconv.Atoi, its error ignored.
    meta.resource_version
        .as_deref()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0)
}

impl ReactorState {
    /// Upstream `injectReactError`.
    fn inject_react_error(&mut self, verb: &str, resource: &str) -> Result<(), ApiError> {
        let matches = |e: &ReactorError| {
            (e.verb == "*" || e.verb == verb) && (e.resource == "*" || e.resource == resource)
        };
        if let Some(i) = self.errors.iter().position(matches) {
            return Err(self.errors.remove(i).error);
        }
        Ok(())
    }

    fn changed(&mut self, change: Changed) {
        self.watch_events.push_back(match &change {
            Changed::Volume(v) => WatchEvent::Volume(v.clone()),
            Changed::Claim(c) => WatchEvent::Claim(c.clone()),
        });
        self.changed_objects.push_back(change);
        self.changed_since_last_sync += 1;
    }

    fn update_volume(&mut self, volume: &PersistentVolume) -> Result<PersistentVolume, ApiError> {
        self.inject_react_error("update", "persistentvolumes")?;
        let name = name_of(&volume.metadata).to_string();
        let Some(stored) = self.volumes.get(&name) else {
            return Err(ApiError::Other(format!(
                "cannot update volume {name}: volume not found"
            )));
        };
        let stored_version = rv(&stored.metadata);
        if stored_version != rv(&volume.metadata) {
            return Err(ApiError::Conflict(format!("persistentvolumes {name:?}")));
        }
        if stored == volume {
            return Ok(volume.clone());
        }
        let mut volume = volume.clone();
        volume.metadata.resource_version = Some((stored_version + 1).to_string());
        self.volumes.insert(name, volume.clone());
        self.changed(Changed::Volume(Box::new(volume.clone())));
        Ok(volume)
    }

    fn update_claim(
        &mut self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        self.inject_react_error("update", "persistentvolumeclaims")?;
        let name = name_of(&claim.metadata).to_string();
        let Some(stored) = self.claims.get(&name) else {
            return Err(ApiError::Other(format!(
                "cannot update claim {name}: claim not found"
            )));
        };
        let stored_version = rv(&stored.metadata);
        if stored_version != rv(&claim.metadata) {
            return Err(ApiError::Conflict(format!(
                "persistentvolumeclaims {name:?}"
            )));
        }
        if stored == claim {
            return Ok(claim.clone());
        }
        let mut claim = claim.clone();
        claim.metadata.resource_version = Some((stored_version + 1).to_string());
        self.claims.insert(name, claim.clone());
        self.changed(Changed::Claim(Box::new(claim.clone())));
        Ok(claim)
    }
}

impl VolumeReactor {
    /// Upstream `NewVolumeReactor`.
    pub fn new(errors: Vec<ReactorError>) -> Self {
        let reactor = Self::default();
        lock(&reactor.state).errors = errors;
        reactor
    }

    pub fn lock(&self) -> MutexGuard<'_, ReactorState> {
        lock(&self.state)
    }

    /// Upstream `AddClaims`.
    pub fn add_claims(&self, claims: &[PersistentVolumeClaim]) {
        for claim in claims {
            self.add_claim(claim.clone());
        }
    }

    /// Upstream `AddVolumes`.
    pub fn add_volumes(&self, volumes: &[PersistentVolume]) {
        for volume in volumes {
            self.add_volume(volume.clone());
        }
    }

    /// Upstream `AddClaim`.
    pub fn add_claim(&self, claim: PersistentVolumeClaim) {
        self.lock()
            .claims
            .insert(name_of(&claim.metadata).to_string(), claim);
    }

    /// Upstream `AddVolume`.
    pub fn add_volume(&self, volume: PersistentVolume) {
        self.lock()
            .volumes
            .insert(name_of(&volume.metadata).to_string(), volume);
    }

    /// Upstream `DeleteVolume`.
    pub fn delete_volume_by_name(&self, name: &str) {
        self.lock().volumes.remove(name);
    }

    /// Upstream `AddClaimBoundToVolume`: adds the claim and marks its volume Bound.
    pub fn add_claim_bound_to_volume(&self, claim: PersistentVolumeClaim) {
        let mut state = self.lock();
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        state
            .claims
            .insert(name_of(&claim.metadata).to_string(), claim);
        if let Some(volume) = state.volumes.get_mut(&volume_name) {
            volume.status.get_or_insert_with(Default::default).phase =
                Some(VOLUME_BOUND.to_string());
        }
    }

    /// Upstream `MarkVolumeAvailable`.
    pub fn mark_volume_available(&self, name: &str) {
        if let Some(volume) = self.lock().volumes.get_mut(name) {
            volume.spec.get_or_insert_with(Default::default).claim_ref = None;
            volume.status.get_or_insert_with(Default::default).phase =
                Some(VOLUME_AVAILABLE.to_string());
            volume.metadata.annotations = None;
        }
    }

    /// Upstream `DeleteVolumeEvent`: the volume is deleted and its watch says so.
    pub fn delete_volume_event(&self, volume: &PersistentVolume) {
        let mut state = self.lock();
        state.volumes.remove(name_of(&volume.metadata));
        state
            .watch_events
            .push_back(WatchEvent::VolumeDeleted(Box::new(volume.clone())));
    }

    /// Upstream `DeleteClaimEvent`.
    pub fn delete_claim_event(&self, claim: &PersistentVolumeClaim) {
        let mut state = self.lock();
        state.claims.remove(name_of(&claim.metadata));
        state
            .watch_events
            .push_back(WatchEvent::ClaimDeleted(Box::new(claim.clone())));
    }

    /// Upstream `AddClaimEvent`.
    pub fn add_claim_event(&self, claim: &PersistentVolumeClaim) {
        let mut state = self.lock();
        state
            .claims
            .insert(name_of(&claim.metadata).to_string(), claim.clone());
        state
            .watch_events
            .push_back(WatchEvent::Claim(Box::new(claim.clone())));
    }

    /// Upstream `PopChange`.
    pub fn pop_change(&self) -> Option<Changed> {
        self.lock().changed_objects.pop_front()
    }

    /// Upstream `SyncAll`: queues every object, as a periodic sync.
    pub fn sync_all(&self) {
        let mut state = self.lock();
        let claims: Vec<Changed> = state
            .claims
            .values()
            .cloned()
            .map(|c| Changed::Claim(Box::new(c)))
            .collect();
        let volumes: Vec<Changed> = state
            .volumes
            .values()
            .cloned()
            .map(|v| Changed::Volume(Box::new(v)))
            .collect();
        state.changed_objects.extend(claims);
        state.changed_objects.extend(volumes);
        state.changed_since_last_sync = 0;
    }

    /// Upstream `GetChangeCount`.
    pub fn get_change_count(&self) -> usize {
        self.lock().changed_since_last_sync
    }

    /// Upstream `CheckVolumes`: the stored volumes are the expected ones, resourceVersions
    /// aside.
    pub fn check_volumes(&self, expected: &[PersistentVolume]) -> Result<(), String> {
        let clear = |v: &PersistentVolume| {
            let mut v = v.clone();
            v.metadata.resource_version = None;
            if let Some(r) = v.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
                r.resource_version = None;
            }
            (name_of(&v.metadata).to_string(), v)
        };
        let expected: BTreeMap<String, PersistentVolume> = expected.iter().map(clear).collect();
        let got: BTreeMap<String, PersistentVolume> =
            self.lock().volumes.values().map(clear).collect();
        compare("Volume", &expected, &got)
    }

    /// Upstream `CheckClaims`.
    pub fn check_claims(&self, expected: &[PersistentVolumeClaim]) -> Result<(), String> {
        let clear = |c: &PersistentVolumeClaim| {
            let mut c = c.clone();
            c.metadata.resource_version = None;
            (name_of(&c.metadata).to_string(), c)
        };
        let expected: BTreeMap<String, PersistentVolumeClaim> =
            expected.iter().map(clear).collect();
        let got: BTreeMap<String, PersistentVolumeClaim> =
            self.lock().claims.values().map(clear).collect();
        compare("Claim", &expected, &got)
    }

    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }

    pub fn add_storage_classes(&self, classes: &[StorageClass]) {
        let mut state = self.lock();
        for class in classes {
            state.storage_classes.insert(
                name_of(&class.metadata).to_string(),
                Arc::new(class.clone()),
            );
        }
    }

    pub fn add_pods(&self, pods: &[Pod]) {
        self.lock().pods.extend(pods.iter().cloned().map(Arc::new));
    }

    pub fn add_node(&self, node: Node) {
        self.lock()
            .nodes
            .insert(name_of(&node.metadata).to_string(), Arc::new(node));
    }
}

fn compare<T: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: &BTreeMap<String, T>,
    got: &BTreeMap<String, T>,
) -> Result<(), String> {
    if expected == got {
        return Ok(());
    }
    let mut diff = String::new();
    for name in expected.keys().chain(got.keys()) {
        let (e, g) = (expected.get(name), got.get(name));
        if e != g && !diff.contains(&format!("[{name}]")) {
            diff.push_str(&format!("\n[{name}]\n  expected: {e:?}\n  got:      {g:?}"));
        }
    }
    Err(format!("{what} check failed [expected, got]:{diff}"))
}

impl PvClient for VolumeReactor {
    async fn get_volume(&self, name: &str) -> Result<PersistentVolume, ApiError> {
        let mut state = self.lock();
        state.inject_react_error("get", "persistentvolumes")?;
        state
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("persistentvolumes {name:?}")))
    }

    async fn get_claim(
        &self,
        _namespace: &str,
        name: &str,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let mut state = self.lock();
        state.inject_react_error("get", "persistentvolumeclaims")?;
        state
            .claims
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("persistentvolumeclaims {name:?}")))
    }

    async fn create_volume(&self, volume: &PersistentVolume) -> Result<PersistentVolume, ApiError> {
        let mut state = self.lock();
        state.inject_react_error("create", "persistentvolumes")?;
        let name = name_of(&volume.metadata).to_string();
        if state.volumes.contains_key(&name) {
            return Err(ApiError::Other(format!(
                "cannot create volume {name}: volume already exists"
            )));
        }
        let mut volume = volume.clone();
        // The apiserver's defaulting.
        let spec = volume.spec.get_or_insert_with(Default::default);
        if spec.volume_mode.is_none() {
            spec.volume_mode = Some(MODE_FILE.to_string());
        }
        state.volumes.insert(name, volume.clone());
        state.changed(Changed::Volume(Box::new(volume.clone())));
        Ok(volume)
    }

    async fn update_volume(&self, volume: &PersistentVolume) -> Result<PersistentVolume, ApiError> {
        self.lock().update_volume(volume)
    }

    async fn update_volume_status(
        &self,
        volume: &PersistentVolume,
    ) -> Result<PersistentVolume, ApiError> {
        // As upstream's reactor: a status update is an update.
        self.lock().update_volume(volume)
    }

    async fn delete_volume(&self, name: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        state.inject_react_error("delete", "persistentvolumes")?;
        match state.volumes.remove(name) {
            Some(volume) => {
                state
                    .watch_events
                    .push_back(WatchEvent::VolumeDeleted(Box::new(volume)));
                state.changed_since_last_sync += 1;
                Ok(())
            }
            None => Err(ApiError::Other(format!(
                "cannot delete volume {name}: not found"
            ))),
        }
    }

    async fn update_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        self.lock().update_claim(claim)
    }

    async fn update_claim_status(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        self.lock().update_claim(claim)
    }

    fn storage_class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.lock().storage_classes.get(name).cloned()
    }

    fn storage_classes(&self) -> Vec<Arc<StorageClass>> {
        self.lock().storage_classes.values().cloned().collect()
    }

    fn pods(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.lock()
            .pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.lock().nodes.get(name).cloned()
    }

    fn enqueue_claim(&self, key: &str) {
        self.lock().enqueued_claims.push(key.to_string());
    }

    fn event(&self, _object: &ObjectReference, type_: EventType, reason: &str, message: String) {
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        self.lock()
            .events
            .push(format!("{type_} {reason} {message}"));
    }
}

// --- builders ---

fn storage(capacity: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([("storage".to_string(), Quantity(capacity.to_string()))])
}

fn set_annotations(meta: &mut ObjectMeta, annotations: &[&str], value_of: impl Fn(&str) -> String) {
    if annotations.is_empty() {
        return;
    }
    let map = meta.annotations.get_or_insert_with(BTreeMap::new);
    for a in annotations {
        map.insert(a.to_string(), value_of(a));
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Upstream `newVolume`.
#[allow(clippy::too_many_arguments)]
pub fn new_volume(
    name: &str,
    capacity: &str,
    bound_to_claim_uid: &str,
    bound_to_claim_name: &str,
    phase: &str,
    reclaim_policy: &str,
    class: &str,
    annotations: &[&str],
) -> PersistentVolume {
    let mut volume = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version: Some("1".to_string()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(storage(capacity)),
            gce_persistent_disk: Some(GCEPersistentDiskVolumeSource::default()),
            access_modes: Some(vec![
                READ_WRITE_ONCE.to_string(),
                READ_ONLY_MANY.to_string(),
            ]),
            persistent_volume_reclaim_policy: non_empty(reclaim_policy),
            storage_class_name: non_empty(class),
            volume_mode: Some(MODE_FILE.to_string()),
            ..Default::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: non_empty(phase),
            ..Default::default()
        }),
    };
    if !bound_to_claim_name.is_empty() {
        volume.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            kind: Some("PersistentVolumeClaim".to_string()),
            api_version: Some(PersistentVolumeClaim::API_VERSION.to_string()),
            uid: non_empty(bound_to_claim_uid),
            namespace: Some(TEST_NAMESPACE.to_string()),
            name: Some(bound_to_claim_name.to_string()),
            ..Default::default()
        });
    }
    set_annotations(&mut volume.metadata, annotations, |a| {
        if a == ANN_DYNAMICALLY_PROVISIONED {
            MOCK_PLUGIN_NAME.to_string()
        } else {
            "yes".to_string()
        }
    });
    volume
}

/// A finalizer list as upstream's literals write it: `nil` (None) or `[]string{...}`.
pub trait IntoFinalizers {
    fn into_finalizers(self) -> Option<Vec<String>>;
}

impl IntoFinalizers for Option<Vec<&str>> {
    fn into_finalizers(self) -> Option<Vec<String>> {
        self.map(|f| f.iter().map(|s| s.to_string()).collect())
    }
}

impl IntoFinalizers for Vec<&str> {
    fn into_finalizers(self) -> Option<Vec<String>> {
        Some(self).into_finalizers()
    }
}

/// Upstream `newExternalProvisionedVolume`: a CSI volume of `driver_name`.
#[allow(clippy::too_many_arguments)]
pub fn new_external_provisioned_volume(
    name: &str,
    capacity: &str,
    bound_to_claim_uid: &str,
    bound_to_claim_name: &str,
    phase: &str,
    reclaim_policy: &str,
    class: &str,
    driver_name: &str,
    finalizers: impl IntoFinalizers,
    annotations: &[&str],
) -> PersistentVolume {
    let finalizers = finalizers.into_finalizers();
    let mut volume = new_volume(
        name,
        capacity,
        bound_to_claim_uid,
        bound_to_claim_name,
        phase,
        reclaim_policy,
        class,
        &[],
    );
    volume.metadata.finalizers = finalizers;
    let spec = volume.spec.as_mut().unwrap();
    spec.gce_persistent_disk = None;
    spec.csi = Some(k8s_openapi::api::core::v1::CSIPersistentVolumeSource {
        driver: driver_name.to_string(),
        volume_handle: "527b55dc-c7db-4574-9226-2e33318b06a3".to_string(),
        read_only: Some(false),
        fs_type: Some("ext4".to_string()),
        volume_attributes: Some(BTreeMap::from([(
            "Test-Key".to_string(),
            "Test-Value".to_string(),
        )])),
        ..Default::default()
    });
    set_annotations(&mut volume.metadata, annotations, |a| {
        if a == ANN_DYNAMICALLY_PROVISIONED {
            driver_name.to_string()
        } else {
            "yes".to_string()
        }
    });
    volume
}

/// Upstream `newVolumeWithFinalizers`.
#[allow(clippy::too_many_arguments)]
pub fn new_volume_with_finalizers(
    name: &str,
    capacity: &str,
    bound_to_claim_uid: &str,
    bound_to_claim_name: &str,
    phase: &str,
    reclaim_policy: &str,
    class: &str,
    finalizers: impl IntoFinalizers,
    annotations: &[&str],
) -> PersistentVolume {
    let finalizers = finalizers.into_finalizers();
    let mut volume = new_volume(
        name,
        capacity,
        bound_to_claim_uid,
        bound_to_claim_name,
        phase,
        reclaim_policy,
        class,
        annotations,
    );
    volume.metadata.finalizers = finalizers;
    volume
}

/// Upstream `newVolumeArray`.
#[allow(clippy::too_many_arguments)]
pub fn new_volume_array(
    name: &str,
    capacity: &str,
    bound_to_claim_uid: &str,
    bound_to_claim_name: &str,
    phase: &str,
    reclaim_policy: &str,
    class: &str,
    annotations: &[&str],
) -> Vec<PersistentVolume> {
    vec![new_volume(
        name,
        capacity,
        bound_to_claim_uid,
        bound_to_claim_name,
        phase,
        reclaim_policy,
        class,
        annotations,
    )]
}

/// Upstream `newClaim`. `class` None is upstream's nil.
pub fn new_claim(
    name: &str,
    claim_uid: &str,
    capacity: &str,
    bound_to_volume: &str,
    phase: &str,
    class: Option<&str>,
    annotations: &[&str],
) -> PersistentVolumeClaim {
    let spec = PersistentVolumeClaimSpec {
        access_modes: Some(vec![
            READ_WRITE_ONCE.to_string(),
            READ_ONLY_MANY.to_string(),
        ]),
        resources: Some(VolumeResourceRequirements {
            requests: Some(storage(capacity)),
            ..Default::default()
        }),
        volume_name: non_empty(bound_to_volume),
        storage_class_name: class.map(str::to_string),
        volume_mode: Some(MODE_FILE.to_string()),
        ..Default::default()
    };
    let mut status = PersistentVolumeClaimStatus {
        phase: non_empty(phase),
        ..Default::default()
    };
    if phase == "Bound" {
        // Bound claims have a proper status.
        status.access_modes = spec.access_modes.clone();
        status.capacity = spec.resources.as_ref().and_then(|r| r.requests.clone());
        status.current_volume_attributes_class_name = spec.volume_attributes_class_name.clone();
    }
    let mut claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(TEST_NAMESPACE.to_string()),
            uid: non_empty(claim_uid),
            resource_version: Some("1".to_string()),
            ..Default::default()
        },
        spec: Some(spec),
        status: Some(status),
    };
    set_annotations(&mut claim.metadata, annotations, |a| {
        if a == ANN_BETA_STORAGE_PROVISIONER || a == ANN_STORAGE_PROVISIONER {
            MOCK_PLUGIN_NAME.to_string()
        } else {
            "yes".to_string()
        }
    });
    claim
}

/// Upstream `newClaimArray`.
pub fn new_claim_array(
    name: &str,
    claim_uid: &str,
    capacity: &str,
    bound_to_volume: &str,
    phase: &str,
    class: Option<&str>,
    annotations: &[&str],
) -> Vec<PersistentVolumeClaim> {
    vec![new_claim(
        name,
        claim_uid,
        capacity,
        bound_to_volume,
        phase,
        class,
        annotations,
    )]
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Upstream `withLabels`.
pub fn with_labels(
    l: &[(&str, &str)],
    mut volumes: Vec<PersistentVolume>,
) -> Vec<PersistentVolume> {
    volumes[0].metadata.labels = Some(labels(l));
    volumes
}

/// Upstream `withLabelSelector`.
pub fn with_label_selector(
    l: &[(&str, &str)],
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0].spec.as_mut().unwrap().selector = Some(LabelSelector {
        match_labels: Some(labels(l)),
        ..Default::default()
    });
    claims
}

/// Upstream `withVolumeVolumeMode`.
pub fn with_volume_volume_mode(
    mode: &str,
    mut volumes: Vec<PersistentVolume>,
) -> Vec<PersistentVolume> {
    volumes[0].spec.as_mut().unwrap().volume_mode = Some(mode.to_string());
    volumes
}

/// Upstream `withClaimVolumeMode`.
pub fn with_claim_volume_mode(
    mode: &str,
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0].spec.as_mut().unwrap().volume_mode = Some(mode.to_string());
    claims
}

/// Upstream `withExpectedCapacity`.
pub fn with_expected_capacity(
    capacity: &str,
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0]
        .status
        .get_or_insert_with(Default::default)
        .capacity = Some(storage(capacity));
    claims
}

/// Upstream `withExpectedVAC`.
pub fn with_expected_vac(
    vac: Option<&str>,
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0]
        .status
        .get_or_insert_with(Default::default)
        .current_volume_attributes_class_name = vac.map(str::to_string);
    claims
}

/// Upstream `withMessage`.
pub fn with_message(message: &str, mut volumes: Vec<PersistentVolume>) -> Vec<PersistentVolume> {
    volumes[0]
        .status
        .get_or_insert_with(Default::default)
        .message = Some(message.to_string());
    volumes
}

/// Upstream `withVolumeDeletionTimestamp`.
pub fn with_volume_deletion_timestamp(mut volumes: Vec<PersistentVolume>) -> Vec<PersistentVolume> {
    let time: jiff::Timestamp = "2020-02-18T10:30:30.00000001Z".parse().unwrap();
    for volume in &mut volumes {
        volume.metadata.deletion_timestamp = Some(Time(time));
    }
    volumes
}

/// Upstream `volumesWithFinalizers`.
pub fn volumes_with_finalizers(
    mut volumes: Vec<PersistentVolume>,
    finalizers: Vec<&str>,
) -> Vec<PersistentVolume> {
    for volume in &mut volumes {
        volume.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    }
    volumes
}

/// Upstream `claimWithVAC`.
pub fn claim_with_vac(
    vac: Option<&str>,
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0]
        .spec
        .as_mut()
        .unwrap()
        .volume_attributes_class_name = vac.map(str::to_string);
    claims
}

/// Upstream `claimWithAnnotation`.
pub fn claim_with_annotation(
    name: &str,
    value: &str,
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0]
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(name.to_string(), value.to_string());
    claims
}

/// Upstream `claimWithDataSource`.
pub fn claim_with_data_source(
    name: &str,
    kind: &str,
    api_group: &str,
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0].spec.as_mut().unwrap().data_source = Some(TypedLocalObjectReference {
        name: name.to_string(),
        kind: kind.to_string(),
        api_group: Some(api_group.to_string()),
    });
    claims
}

/// Upstream `volumesWithVAC`.
pub fn volumes_with_vac(vac: &str, mut volumes: Vec<PersistentVolume>) -> Vec<PersistentVolume> {
    for volume in &mut volumes {
        volume.spec.as_mut().unwrap().volume_attributes_class_name = Some(vac.to_string());
    }
    volumes
}

/// Upstream `volumeWithAnnotation`.
pub fn volume_with_annotation(
    name: &str,
    value: &str,
    mut volume: PersistentVolume,
) -> PersistentVolume {
    volume
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(name.to_string(), value.to_string());
    volume
}

/// Upstream `volumesWithAnnotation`.
pub fn volumes_with_annotation(
    name: &str,
    value: &str,
    volumes: Vec<PersistentVolume>,
) -> Vec<PersistentVolume> {
    volumes
        .into_iter()
        .map(|v| volume_with_annotation(name, value, v))
        .collect()
}

/// Upstream `claimWithAccessMode`.
pub fn claim_with_access_mode(
    modes: &[&str],
    mut claims: Vec<PersistentVolumeClaim>,
) -> Vec<PersistentVolumeClaim> {
    claims[0].spec.as_mut().unwrap().access_modes =
        Some(modes.iter().map(|m| m.to_string()).collect());
    claims
}

/// A StorageClass (upstream's inline `storage.StorageClass` literals, `makeStorageClass`).
pub fn storage_class(
    name: &str,
    provisioner: &str,
    parameters: Option<&[(&str, &str)]>,
    reclaim_policy: Option<&str>,
    mode: Option<&str>,
) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        provisioner: provisioner.to_string(),
        parameters: parameters.map(labels),
        reclaim_policy: reclaim_policy.map(str::to_string),
        volume_binding_mode: mode.map(str::to_string),
        ..Default::default()
    }
}

// --- the mock plugin ---

/// Upstream `provisionCall`: the parameters the provisioner expects, and its error.
#[derive(Debug, Clone)]
pub struct ProvisionCall {
    pub expected_parameters: Option<BTreeMap<String, String>>,
    pub ret: Option<&'static str>,
}

#[derive(Default)]
struct MockState {
    provision_calls: Vec<ProvisionCall>,
    provision_call_counter: usize,
    delete_calls: Vec<Option<&'static str>>,
    delete_call_counter: usize,
    recycle_calls: Vec<Option<&'static str>>,
    recycle_call_counter: usize,
    provision_options: Option<VolumeOptions>,
}

/// Upstream `mockVolumePlugin`: provisions, deletes and recycles with the queued results
/// (an error text, or success), counting the calls.
#[derive(Default)]
pub struct MockVolumePlugin {
    state: Mutex<MockState>,
}

impl MockVolumePlugin {
    pub fn new(
        recycle_calls: Vec<Option<&'static str>>,
        delete_calls: Vec<Option<&'static str>>,
        provision_calls: Vec<ProvisionCall>,
    ) -> Self {
        Self {
            state: Mutex::new(MockState {
                provision_calls,
                delete_calls,
                recycle_calls,
                ..Default::default()
            }),
        }
    }
}

struct MockProvisioner<'a>(&'a MockVolumePlugin);
struct MockDeleter<'a>(&'a MockVolumePlugin);

impl Provisioner for MockProvisioner<'_> {
    fn provision<'a>(
        &'a mut self,
        _selected_node: Option<&'a Node>,
        _allowed_topologies: Option<&'a [TopologySelectorTerm]>,
    ) -> BoxFuture<'a, Result<PersistentVolume, String>> {
        Box::pin(async move {
            let mut state = lock(&self.0.state);
            let counter = state.provision_call_counter;
            let Some(call) = state.provision_calls.get(counter).cloned() else {
                return Err(format!(
                    "Mock plugin error: unexpected provisioner call {counter}"
                ));
            };
            let options = state.provision_options.clone().unwrap_or_default();
            if call.expected_parameters != options.parameters {
                return Err("Mock plugin error: invalid provisioner call".to_string());
            }
            state.provision_call_counter += 1;
            if let Some(err) = call.ret {
                return Err(err.to_string());
            }
            // A fake PV with a known GCE volume, to match the expected one.
            let pvc_spec = options.pvc.spec.clone().unwrap_or_default();
            let capacity = pvc_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .cloned()
                .unwrap_or_else(|| Quantity("0".to_string()));
            Ok(PersistentVolume {
                metadata: ObjectMeta {
                    name: Some(options.pv_name.clone()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeSpec {
                    capacity: Some(BTreeMap::from([("storage".to_string(), capacity)])),
                    access_modes: pvc_spec.access_modes.clone(),
                    persistent_volume_reclaim_policy: Some(
                        options.persistent_volume_reclaim_policy.clone(),
                    ),
                    gce_persistent_disk: Some(GCEPersistentDiskVolumeSource::default()),
                    volume_mode: pvc_spec.volume_mode.clone(),
                    ..Default::default()
                }),
                status: Some(PersistentVolumeStatus {
                    phase: Some(VOLUME_AVAILABLE.to_string()),
                    ..Default::default()
                }),
            })
        })
    }
}

impl Deleter for MockDeleter<'_> {
    fn delete(&mut self) -> BoxFuture<'_, Result<(), DeleteError>> {
        Box::pin(async move {
            let mut state = lock(&self.0.state);
            let counter = state.delete_call_counter;
            let Some(ret) = state.delete_calls.get(counter).copied() else {
                return Err(DeleteError::Failed(format!(
                    "Mock plugin error: unexpected deleter call {counter}"
                )));
            };
            state.delete_call_counter += 1;
            match ret {
                None => Ok(()),
                Some(err) => Err(DeleteError::Failed(err.to_string())),
            }
        })
    }
}

impl VolumePlugin for MockVolumePlugin {
    fn name(&self) -> &str {
        MOCK_PLUGIN_NAME
    }
    fn can_support(&self, _volume: &PersistentVolume) -> bool {
        true
    }
    fn is_provisionable(&self) -> bool {
        true
    }
    fn is_deletable(&self) -> bool {
        true
    }
    fn is_recyclable(&self) -> bool {
        true
    }
    fn new_provisioner(&self, options: VolumeOptions) -> Result<Box<dyn Provisioner + '_>, String> {
        let mut state = lock(&self.state);
        if state.provision_calls.is_empty() {
            return Err("Mock plugin error: no provisionCalls configured".to_string());
        }
        state.provision_options = Some(options);
        Ok(Box::new(MockProvisioner(self)))
    }
    fn new_deleter(&self, _volume: &PersistentVolume) -> Result<Box<dyn Deleter + '_>, String> {
        if lock(&self.state).delete_calls.is_empty() {
            return Err("Mock plugin error: no deleteCalls configured".to_string());
        }
        Ok(Box::new(MockDeleter(self)))
    }
    fn recycle<'a>(
        &'a self,
        _pv_name: &'a str,
        _volume: &'a PersistentVolume,
        _recorder: RecycleEventRecorder,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut state = lock(&self.state);
            if state.recycle_calls.is_empty() {
                return Err("Mock plugin error: no recycleCalls configured".to_string());
            }
            let counter = state.recycle_call_counter;
            let Some(ret) = state.recycle_calls.get(counter).copied() else {
                return Err(format!(
                    "Mock plugin error: unexpected recycle call {counter}"
                ));
            };
            state.recycle_call_counter += 1;
            ret.map_or(Ok(()), |err| Err(err.to_string()))
        })
    }
}

// --- test tables and runners ---

/// A function run before an operation starts (upstream `wrapTestWithInjectedOperation`'s
/// `injectBeforeOperation`): the reactor is `ctrl.client()`.
pub type InjectedOperation = Arc<dyn Fn(&TestController) + Send + Sync>;

/// What a test calls (upstream `testCall`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // upstream's names
pub enum TestFn {
    /// Upstream `testSyncClaim`: syncClaim on the first initial claim.
    SyncClaim,
    /// Upstream `testSyncClaimError`: the same, expecting an error.
    SyncClaimError,
    /// Upstream `testSyncVolume`: syncVolume on the first initial volume.
    SyncVolume,
}

/// The mock plugin's queued results: an error text or success (None) per call.
#[derive(Clone, Default)]
pub struct PluginCalls {
    pub recycle: Vec<Option<&'static str>>,
    pub delete: Vec<Option<&'static str>>,
    pub provision: Vec<ProvisionCall>,
}

/// A test call with its wrappers (upstream `wrapTestWithPluginCalls`,
/// `wrapTestWithInjectedOperation`).
#[derive(Clone)]
pub struct TestCall {
    pub func: TestFn,
    /// The mock plugin's queued results; no plugin without.
    pub plugin: Option<PluginCalls>,
    pub inject: Option<InjectedOperation>,
}

pub fn test_sync_claim() -> TestCall {
    TestCall {
        func: TestFn::SyncClaim,
        plugin: None,
        inject: None,
    }
}

pub fn test_sync_claim_error() -> TestCall {
    TestCall {
        func: TestFn::SyncClaimError,
        plugin: None,
        inject: None,
    }
}

pub fn test_sync_volume() -> TestCall {
    TestCall {
        func: TestFn::SyncVolume,
        plugin: None,
        inject: None,
    }
}

/// Upstream `wrapTestWithPluginCalls`.
pub fn wrap_test_with_plugin_calls(
    recycle_calls: Vec<Option<&'static str>>,
    delete_calls: Vec<Option<&'static str>>,
    provision_calls: Vec<ProvisionCall>,
    mut to_wrap: TestCall,
) -> TestCall {
    to_wrap.plugin = Some(PluginCalls {
        recycle: recycle_calls,
        delete: delete_calls,
        provision: provision_calls,
    });
    to_wrap
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OperationType {
    Delete,
    Recycle,
}

/// Upstream `wrapTestWithReclaimCalls`.
pub fn wrap_test_with_reclaim_calls(
    operation: OperationType,
    expected_operation_calls: Vec<Option<&'static str>>,
    to_wrap: TestCall,
) -> TestCall {
    match operation {
        OperationType::Delete => {
            wrap_test_with_plugin_calls(vec![], expected_operation_calls, vec![], to_wrap)
        }
        OperationType::Recycle => {
            wrap_test_with_plugin_calls(expected_operation_calls, vec![], vec![], to_wrap)
        }
    }
}

/// Upstream `wrapTestWithProvisionCalls`.
pub fn wrap_test_with_provision_calls(
    expected_provision_calls: Vec<ProvisionCall>,
    to_wrap: TestCall,
) -> TestCall {
    wrap_test_with_plugin_calls(vec![], vec![], expected_provision_calls, to_wrap)
}

/// Upstream `wrapTestWithInjectedOperation`.
pub fn wrap_test_with_injected_operation(
    mut to_wrap: TestCall,
    inject_before_operation: impl Fn(&TestController) + Send + Sync + 'static,
) -> TestCall {
    to_wrap.inject = Some(Arc::new(inject_before_operation));
    to_wrap
}

/// Upstream `controllerTest`.
pub struct ControllerTest {
    pub name: &'static str,
    pub initial_volumes: Vec<PersistentVolume>,
    pub expected_volumes: Vec<PersistentVolume>,
    pub initial_claims: Vec<PersistentVolumeClaim>,
    pub expected_claims: Vec<PersistentVolumeClaim>,
    /// Prefixes of the first events.
    pub expected_events: Vec<&'static str>,
    pub errors: Vec<ReactorError>,
    pub test: TestCall,
}

/// Upstream `newTestController`: the controller over the reactor, with the test's plugin,
/// retrying PV creation every 5ms.
pub fn new_test_controller(
    reactor: VolumeReactor,
    test: &TestCall,
    enable_dynamic_provisioning: bool,
) -> Arc<TestController> {
    let plugins: Vec<Arc<dyn VolumePlugin>> = match &test.plugin {
        None => vec![],
        Some(calls) => vec![Arc::new(MockVolumePlugin::new(
            calls.recycle.clone(),
            calls.delete.clone(),
            calls.provision.clone(),
        ))],
    };
    let mut ctrl = TestController::new_unshared(reactor, plugins, enable_dynamic_provisioning);
    ctrl.create_provisioned_pv_interval = Duration::from_millis(5);
    if let Some(inject) = test.inject.clone() {
        *lock(&ctrl.pre_operation_hook) =
            Some(Arc::new(move |ctrl: &TestController, _name: &str| {
                inject(ctrl)
            }));
    }
    Arc::new(ctrl)
}

async fn run_test_call(ctrl: &Arc<TestController>, test: &ControllerTest) -> Result<(), String> {
    match test.test.func {
        TestFn::SyncClaim => ctrl
            .sync_claim(&test.initial_claims[0])
            .await
            .map_err(|e| e.to_string()),
        TestFn::SyncClaimError => match ctrl.sync_claim(&test.initial_claims[0]).await {
            Err(_) => Ok(()),
            Ok(()) => Err("syncClaim succeeded when failure was expected".to_string()),
        },
        TestFn::SyncVolume => ctrl
            .sync_volume(&test.initial_volumes[0])
            .await
            .map_err(|e| e.to_string()),
    }
}

/// Upstream `waitTest`: waits (10ms doubling, 10 steps) for the operations to bring the
/// reactor to the expected state.
async fn wait_test(ctrl: &TestController, test: &ControllerTest) {
    let mut delay = Duration::from_millis(10);
    for _ in 0..10 {
        ctrl.wait_for_operations().await;
        let reactor = ctrl.client();
        if reactor.check_claims(&test.expected_claims).is_ok()
            && reactor.check_volumes(&test.expected_volumes).is_ok()
        {
            return;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// Upstream `checkEvents`: the first recorded events start with the expected ones.
pub fn check_events(expected: &[&str], got: &[String]) -> Result<(), String> {
    let mut errors = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        match got.get(i) {
            None => errors.push(format!("event {e:?} not emitted")),
            Some(g) if !g.starts_with(e) => errors.push(format!(
                "unexpected event received, expected {e:?}, got {g:?}"
            )),
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (all events: {got:?})", errors.join("; ")))
    }
}

/// Upstream `evaluateTestResults`.
pub fn evaluate_test_results(reactor: &VolumeReactor, test: &ControllerTest) -> Vec<String> {
    let mut failures = Vec::new();
    if let Err(e) = reactor.check_claims(&test.expected_claims) {
        failures.push(e);
    }
    if let Err(e) = reactor.check_volumes(&test.expected_volumes) {
        failures.push(e);
    }
    if let Err(e) = check_events(&test.expected_events, &reactor.events()) {
        failures.push(e);
    }
    failures
}

fn report(failures: Vec<(String, String)>, total: usize) {
    if !failures.is_empty() {
        let text: Vec<String> = failures
            .iter()
            .map(|(name, f)| format!("Test {name:?}: {f}"))
            .collect();
        panic!(
            "{} of {total} cases failed:\n{}",
            failures.len(),
            text.join("\n")
        );
    }
}

/// Upstream `runSyncTests`: each test's call, once, then the expected state.
pub async fn run_sync_tests(
    tests: Vec<ControllerTest>,
    storage_classes: &[StorageClass],
    pods: &[Pod],
) {
    let total = tests.len();
    let mut failures = Vec::new();
    for test in tests {
        let reactor = VolumeReactor::new(test.errors.clone());
        let ctrl = new_test_controller(reactor.clone(), &test.test, true);
        for claim in &test.initial_claims {
            if has_annotation(&claim.metadata, ANN_SKIP_LOCAL_STORE) {
                continue;
            }
            lock(&ctrl.claims).insert(claim_to_claim_key(claim), Arc::new(claim.clone()));
        }
        for volume in &test.initial_volumes {
            if has_annotation(&volume.metadata, ANN_SKIP_LOCAL_STORE) {
                continue;
            }
            lock(&ctrl.volumes).add(volume.clone());
        }
        reactor.add_claims(&test.initial_claims);
        reactor.add_volumes(&test.initial_volumes);
        reactor.add_storage_classes(storage_classes);
        reactor.add_pods(pods);

        if let Err(e) = run_test_call(&ctrl, &test).await {
            failures.push((test.name.to_string(), format!("failed: {e}")));
        }
        wait_test(&ctrl, &test).await;
        for f in evaluate_test_results(&reactor, &test) {
            failures.push((test.name.to_string(), f));
        }
    }
    report(failures, total);
}

/// Upstream `runMultisyncTests`: the test's call, then syncs of every saved object (the
/// "updated" events) until nothing changes, then periodic syncs of everything until
/// those change nothing either; then the expected state.
pub async fn run_multisync_tests(tests: Vec<ControllerTest>, storage_classes: &[StorageClass]) {
    let total = tests.len();
    let mut failures = Vec::new();
    for test in tests {
        let reactor = VolumeReactor::new(test.errors.clone());
        let ctrl = new_test_controller(reactor.clone(), &test.test, true);
        reactor.add_storage_classes(storage_classes);
        for claim in &test.initial_claims {
            lock(&ctrl.claims).insert(claim_to_claim_key(claim), Arc::new(claim.clone()));
        }
        for volume in &test.initial_volumes {
            lock(&ctrl.volumes).add(volume.clone());
        }
        reactor.add_claims(&test.initial_claims);
        reactor.add_volumes(&test.initial_volumes);

        if let Err(e) = run_test_call(&ctrl, &test).await {
            failures.push((test.name.to_string(), format!("failed: {e}")));
        }

        let mut first_sync = true;
        let mut counter = 0;
        loop {
            counter += 1;
            if counter > 100 {
                failures.push((test.name.to_string(), "too many iterations".to_string()));
                break;
            }
            // Upstream waitForIdle.
            ctrl.wait_for_operations().await;
            let obj = reactor.pop_change();
            if obj.is_none() {
                if first_sync || reactor.get_change_count() > 0 {
                    // Changes since the last periodic sync: sync everything again.
                    first_sync = false;
                    reactor.sync_all();
                } else {
                    // The last periodic sync changed nothing: stable.
                    break;
                }
            }
            // Cools the operations' exponential backoff down.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let result = match obj {
                Some(Changed::Claim(claim)) => {
                    lock(&ctrl.claims)
                        .insert(claim_to_claim_key(&claim), Arc::new((*claim).clone()));
                    ctrl.sync_claim(&claim).await
                }
                Some(Changed::Volume(volume)) => {
                    lock(&ctrl.volumes).update((*volume).clone());
                    ctrl.sync_volume(&volume).await
                }
                None => Ok(()),
            };
            match result {
                // Version conflicts are expected.
                Err(err) if !err.is_conflict() => {
                    failures.push((test.name.to_string(), format!("error calling sync: {err}")));
                    break;
                }
                _ => {}
            }
        }
        for f in evaluate_test_results(&reactor, &test) {
            failures.push((test.name.to_string(), f));
        }
    }
    report(failures, total);
}

pub fn no_errors() -> Vec<ReactorError> {
    Vec::new()
}

/// A `ReactorError` answering AlreadyExists (upstream `apierrors.NewAlreadyExists`).
pub fn reactor_already_exists(verb: &'static str, resource: &'static str) -> ReactorError {
    ReactorError {
        verb,
        resource,
        error: ApiError::AlreadyExists(format!("{resource} \"\"")),
    }
}

/// Puts a claim into the controller's cache (upstream `ctrl.claims.Add`).
pub fn cache_claim(ctrl: &TestController, claim: PersistentVolumeClaim) {
    lock(&ctrl.claims).insert(claim_to_claim_key(&claim), Arc::new(claim));
}

/// Puts a volume into the controller's cache (upstream `ctrl.volumes.store.Add`).
pub fn cache_volume(ctrl: &TestController, volume: PersistentVolume) {
    lock(&ctrl.volumes).add(volume);
}

/// An injected operation that acts from its second call on.
pub fn from_second_call(
    f: impl Fn(&TestController) + Send + Sync + 'static,
) -> impl Fn(&TestController) + Send + Sync + 'static {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    move |ctrl| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1 {
            f(ctrl);
        }
    }
}

/// A Node with only a name.
pub fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A `ReactorError` with an error text (upstream `errors.New`).
pub fn reactor_error(verb: &'static str, resource: &'static str, message: &str) -> ReactorError {
    ReactorError {
        verb,
        resource,
        error: ApiError::Other(message.to_string()),
    }
}
