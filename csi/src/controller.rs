//! The Controller service's operations: CreateVolume, DeleteVolume,
//! ValidateVolumeCapabilities, ListVolumes, GetCapacity, ControllerExpandVolume,
//! ControllerGetCapabilities, and under `--attach-required` ControllerPublishVolume and
//! ControllerUnpublishVolume (the loop device, [`crate::publish`]). Each validates its
//! request first (the pure modules), then takes the driver's lock, then touches the state
//! dir.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use tonic::Code;

use crate::capabilities::{self, CapabilityError};
use crate::capacity::{self, CapacityError, MIN_VOLUME_BYTES};
use crate::csi::controller_service_capability::{
    Rpc, Type as CapabilityType, rpc::Type as RpcType,
};
use crate::csi::validate_volume_capabilities_response::Confirmed;
use crate::csi::{
    ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
    ControllerGetCapabilitiesResponse, ControllerPublishVolumeRequest,
    ControllerPublishVolumeResponse, ControllerServiceCapability, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, GetCapacityRequest,
    GetCapacityResponse, ListVolumesRequest, ListVolumesResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, Volume,
    VolumeCapability, list_volumes_response,
};
use crate::driver::{Driver, VolumeRoot, detach_image, mounts_of};
use crate::filesystem::{self, FsType};
use crate::kernel::KernelError;
use crate::mount_options::{self, MountOptionError};
use crate::node::device_roots;
use crate::parameters::{self, ParameterError, TYPE_PARAMETER, VolumeKind};
use crate::publish::{self, Publication, PublishDecision, PublishError};
use crate::store::{StoreError, VolumeRecord};
use crate::topology;
use crate::volume_id::{is_volume_id, volume_id_for};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("volume {name:?}: {source}")]
    Parameter {
        name: String,
        #[source]
        source: ParameterError,
    },
    #[error("volume {volume}: {source}")]
    Capability {
        volume: String,
        #[source]
        source: CapabilityError,
    },
    #[error("volume {volume}: {source}")]
    MountOption {
        volume: String,
        #[source]
        source: MountOptionError,
    },
    #[error("volume {volume}: {source}")]
    Capacity {
        volume: String,
        #[source]
        source: CapacityError,
    },
    #[error(
        "volume {volume}: {fs} needs at least {minimum} bytes (the smallest filesystem mkfs.{fs} makes), above limit_bytes {limit}"
    )]
    TooSmallForFilesystem {
        volume: String,
        fs: FsType,
        minimum: u64,
        limit: u64,
    },
    #[error("volume {0:?}: volume_content_source is not supported (no snapshots or clones)")]
    ContentSource(String),
    #[error("volume {0:?}: mutable_parameters are not supported (no ControllerModifyVolume)")]
    MutableParameters(String),
    #[error("volume {name:?}: accessibility_requirements exclude this node {node:?}")]
    Topology { name: String, node: String },
    #[error("volume {volume}: {wanted} bytes exceed the {left} bytes left of --capacity")]
    Exhausted {
        volume: String,
        wanted: u64,
        left: u64,
    },
    #[error("volume {name:?} exists as {existing}, incompatible with this request: {reason}")]
    Incompatible {
        name: String,
        existing: String,
        reason: String,
    },
    #[error("volume {0}: not found")]
    NotFound(String),
    #[error("volume {volume}: in use ({by})")]
    InUse { volume: String, by: String },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("volume {volume}: still staged at {staged} (call NodeUnstageVolume first)")]
    StillStaged { volume: String, staged: PathBuf },
    #[error("volume {volume}: its image is still attached to {device} after detaching")]
    StillAttached { volume: String, device: PathBuf },
    #[error("{0} is not supported: the driver runs without --attach-required")]
    NoAttach(&'static str),
    #[error("starting_token {0:?}: not a token ListVolumes returned")]
    InvalidToken(String),
    #[error("max_entries {0}: negative")]
    NegativeMaxEntries(i32),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl ControllerError {
    /// The gRPC code the CSI spec's error tables give the failure.
    pub fn code(&self) -> Code {
        match self {
            ControllerError::Missing(_)
            | ControllerError::Parameter { .. }
            | ControllerError::Capability { .. }
            | ControllerError::MountOption { .. }
            | ControllerError::ContentSource(_)
            | ControllerError::MutableParameters(_)
            | ControllerError::NegativeMaxEntries(_) => Code::InvalidArgument,
            ControllerError::Capacity { source, .. } => source.code(),
            ControllerError::TooSmallForFilesystem { .. } => Code::OutOfRange,
            ControllerError::Topology { .. } | ControllerError::Exhausted { .. } => {
                Code::ResourceExhausted
            }
            ControllerError::Incompatible { .. } => Code::AlreadyExists,
            ControllerError::NotFound(_) => Code::NotFound,
            ControllerError::InUse { .. } | ControllerError::StillStaged { .. } => {
                Code::FailedPrecondition
            }
            ControllerError::Publish(source) => source.code(),
            ControllerError::NoAttach(_) => Code::Unimplemented,
            ControllerError::InvalidToken(_) => Code::Aborted,
            ControllerError::Io { .. }
            | ControllerError::Store(_)
            | ControllerError::Kernel(_)
            | ControllerError::StillAttached { .. } => Code::Internal,
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ControllerError {
    let path = path.to_path_buf();
    move |source| ControllerError::Io { op, path, source }
}

/// Checks every capability (and its mount flags) against the kind of volume; the
/// filesystems they ask for (a local-disk volume's ext4 or xfs).
fn check_capabilities(
    kind: VolumeKind,
    volume: &str,
    capabilities: &[VolumeCapability],
) -> Result<Vec<FsType>, ControllerError> {
    let mut filesystems = Vec::new();
    for capability in capabilities {
        let access = capabilities::check(kind, capability).map_err(|source| {
            ControllerError::Capability {
                volume: volume.to_string(),
                source,
            }
        })?;
        if let capabilities::Access::Mount { fs, mount_flags } = access {
            mount_options::parse(&mount_flags).map_err(|source| ControllerError::MountOption {
                volume: volume.to_string(),
                source,
            })?;
            filesystems.extend(fs);
        }
    }
    Ok(filesystems)
}

/// The filesystem of `filesystems` that needs the largest volume, when it needs more than
/// the driver's own minimum (xfs's 300 MiB).
fn largest_minimum(filesystems: &[FsType]) -> Option<FsType> {
    filesystems
        .iter()
        .copied()
        .max_by_key(|fs| fs.min_volume_bytes())
        .filter(|fs| fs.min_volume_bytes() > MIN_VOLUME_BYTES)
}

/// The capabilities the Controller service advertises.
pub const CONTROLLER_CAPABILITIES: [RpcType; 5] = [
    RpcType::CreateDeleteVolume,
    RpcType::ListVolumes,
    RpcType::GetCapacity,
    RpcType::ExpandVolume,
    RpcType::SingleNodeMultiWriter,
];

impl Driver {
    fn volume(&self, record: &VolumeRecord) -> Volume {
        Volume {
            capacity_bytes: record.capacity_bytes as i64,
            volume_id: record.volume_id.clone(),
            volume_context: HashMap::from([(
                TYPE_PARAMETER.to_string(),
                record.kind.as_str().to_string(),
            )]),
            content_source: None,
            accessible_topology: vec![topology::node_topology(&self.config.node_id)],
        }
    }

    pub fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, ControllerError> {
        let name = req.name;
        if name.is_empty() {
            return Err(ControllerError::Missing("name"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(ControllerError::Missing("volume_capabilities"));
        }
        let kind = parameters::volume_kind(&req.parameters).map_err(|source| {
            ControllerError::Parameter {
                name: name.clone(),
                source,
            }
        })?;
        let filesystems = check_capabilities(kind, &format!("{name:?}"), &req.volume_capabilities)?;
        // A local-disk volume is at least as big as its filesystem needs: an xfs volume is
        // rounded up to 300 MiB within limit_bytes (TopoLVM's minimum allocation).
        let minimum = match kind {
            VolumeKind::LocalDisk => filesystem::min_volume_bytes(filesystems.iter().copied()),
            VolumeKind::HostPath => 0,
        };
        if req.volume_content_source.is_some() {
            return Err(ControllerError::ContentSource(name));
        }
        if !req.mutable_parameters.is_empty() {
            return Err(ControllerError::MutableParameters(name));
        }
        let range = capacity::range(req.capacity_range.as_ref()).map_err(|source| {
            ControllerError::Capacity {
                volume: format!("{name:?}"),
                source,
            }
        })?;
        if let (Some(fs), Some(limit)) = (largest_minimum(&filesystems), range.limit)
            && kind == VolumeKind::LocalDisk
            && limit < fs.min_volume_bytes()
        {
            return Err(ControllerError::TooSmallForFilesystem {
                volume: format!("{name:?}"),
                fs,
                minimum: fs.min_volume_bytes(),
                limit,
            });
        }
        if !topology::requirement_allows(
            req.accessibility_requirements.as_ref(),
            &self.config.node_id,
        ) {
            return Err(ControllerError::Topology {
                name,
                node: self.config.node_id.clone(),
            });
        }
        let volume_id = volume_id_for(&name);
        let mut store = self.lock();
        if let Some(existing) = store.get(&volume_id) {
            let incompatible = |reason: String| ControllerError::Incompatible {
                name: name.clone(),
                existing: format!(
                    "{} volume {} of {} bytes",
                    existing.kind.as_str(),
                    existing.volume_id,
                    existing.capacity_bytes
                ),
                reason,
            };
            if existing.name != name {
                return Err(incompatible(format!(
                    "its id is taken by volume {:?}",
                    existing.name
                )));
            }
            if existing.kind != kind {
                return Err(incompatible(format!("type {} requested", kind.as_str())));
            }
            if existing.capacity_bytes < minimum {
                return Err(incompatible(format!(
                    "{} needs at least {minimum} bytes",
                    largest_minimum(&filesystems).unwrap_or(FsType::Ext4)
                )));
            }
            if !capacity::satisfies(existing.capacity_bytes, range) {
                return Err(incompatible(format!(
                    "capacity range [{}, {}] requested",
                    range.required,
                    range
                        .limit
                        .map_or("unlimited".to_string(), |l| l.to_string())
                )));
            }
            return Ok(CreateVolumeResponse {
                volume: Some(self.volume(existing)),
            });
        }
        let record = match kind {
            VolumeKind::LocalDisk => {
                let size = capacity::volume_size(range, minimum).map_err(|source| {
                    ControllerError::Capacity {
                        volume: format!("{name:?}"),
                        source,
                    }
                })?;
                let left = capacity::remaining(self.config.capacity_bytes, store.allocated_bytes());
                if size > left {
                    return Err(ControllerError::Exhausted {
                        volume: format!("{name:?}"),
                        wanted: size,
                        left,
                    });
                }
                let image = store.image_path(&volume_id);
                let tmp = image.with_extension("img.tmp");
                let create = || -> std::io::Result<()> {
                    let file = fs::File::create(&tmp)?;
                    file.set_len(size)?;
                    file.sync_all()?;
                    fs::rename(&tmp, &image)
                };
                if let Err(e) = create() {
                    let _ = fs::remove_file(&tmp);
                    return Err(io("create image", &image)(e));
                }
                VolumeRecord {
                    volume_id: volume_id.clone(),
                    name,
                    kind,
                    capacity_bytes: size,
                    published: None,
                }
            }
            VolumeKind::HostPath => {
                let dir = store.hostpath_dir(&volume_id);
                fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
                // Writable by any pod user, as local-path-provisioner's directories are.
                fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .map_err(io("chmod", &dir))?;
                VolumeRecord {
                    volume_id: volume_id.clone(),
                    name,
                    kind,
                    capacity_bytes: range.required,
                    published: None,
                }
            }
        };
        if let Err(e) = store.put(record.clone()) {
            remove_data(
                &store.image_path(&volume_id),
                &store.hostpath_dir(&volume_id),
            );
            return Err(e.into());
        }
        tracing::info!(volume = %record.volume_id, name = %record.name, kind = record.kind.as_str(), bytes = record.capacity_bytes, "created volume");
        Ok(CreateVolumeResponse {
            volume: Some(self.volume(&record)),
        })
    }

    pub fn delete_volume(&self, req: DeleteVolumeRequest) -> Result<(), ControllerError> {
        let id = req.volume_id;
        if id.is_empty() {
            return Err(ControllerError::Missing("volume_id"));
        }
        if !is_volume_id(&id) {
            // Never ours: deleted already, as far as the spec is concerned.
            return Ok(());
        }
        let mut store = self.lock();
        if let Some(p) = store.get(&id).and_then(|r| r.published.as_ref()) {
            return Err(ControllerError::InUse {
                volume: id,
                by: format!("published to node {:?}", p.node_id),
            });
        }
        let image = store.image_path(&id);
        let dir = store.hostpath_dir(&id);
        if let Some(device) = self.kernel.loop_find(&image)? {
            return Err(ControllerError::InUse {
                volume: id,
                by: format!("its image is attached to {}", device.display()),
            });
        }
        if let Some(stat) = self.kernel.stat(&dir)? {
            let root = VolumeRoot::Dir {
                dev: stat.dev,
                ino: stat.ino,
            };
            let mut users = mounts_of(self.kernel.as_ref(), root, &[])?;
            // A mount inside the directory would be followed by remove_dir_all.
            users.extend(
                self.kernel
                    .mounts()?
                    .into_iter()
                    .map(|m| m.mount_point)
                    .filter(|p| p.starts_with(&dir)),
            );
            if let Some(user) = users.first() {
                return Err(ControllerError::InUse {
                    volume: id,
                    by: format!("mounted at {}", user.display()),
                });
            }
        }
        match fs::remove_file(&image) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &image)(e)),
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &dir)(e)),
        }
        store.remove(&id)?;
        tracing::info!(volume = %id, "deleted volume");
        Ok(())
    }

    pub fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, ControllerError> {
        if req.volume_id.is_empty() {
            return Err(ControllerError::Missing("volume_id"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(ControllerError::Missing("volume_capabilities"));
        }
        let store = self.lock();
        let record = store
            .get(&req.volume_id)
            .ok_or_else(|| ControllerError::NotFound(req.volume_id.clone()))?;
        let unconfirmed = |message: String| ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message,
        };
        if !req.parameters.is_empty() {
            match parameters::volume_kind(&req.parameters) {
                Ok(kind) if kind == record.kind => {}
                Ok(kind) => {
                    return Ok(unconfirmed(format!(
                        "volume {} is {}, not {}",
                        record.volume_id,
                        record.kind.as_str(),
                        kind.as_str()
                    )));
                }
                Err(e) => return Ok(unconfirmed(e.to_string())),
            }
        }
        match check_capabilities(record.kind, &record.volume_id, &req.volume_capabilities) {
            Err(e) => return Ok(unconfirmed(e.to_string())),
            Ok(filesystems) => {
                if let Some(fs) = largest_minimum(&filesystems)
                    && record.kind == VolumeKind::LocalDisk
                    && record.capacity_bytes < fs.min_volume_bytes()
                {
                    return Ok(unconfirmed(format!(
                        "volume {}: its {} bytes are too small for {fs}, which needs at least {}",
                        record.volume_id,
                        record.capacity_bytes,
                        fs.min_volume_bytes()
                    )));
                }
            }
        }
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: req.mutable_parameters,
            }),
            message: String::new(),
        })
    }

    /// Volumes by id; the token is the id of the next page's first volume, so that a page
    /// survives volumes being deleted before it.
    pub fn list_volumes(
        &self,
        req: ListVolumesRequest,
    ) -> Result<ListVolumesResponse, ControllerError> {
        if req.max_entries < 0 {
            return Err(ControllerError::NegativeMaxEntries(req.max_entries));
        }
        let token = req.starting_token;
        if !token.is_empty() && !is_volume_id(&token) {
            return Err(ControllerError::InvalidToken(token));
        }
        let store = self.lock();
        let mut rest = store.list().filter(|r| r.volume_id >= token);
        let max = if req.max_entries == 0 {
            usize::MAX
        } else {
            req.max_entries as usize
        };
        let entries: Vec<_> = rest
            .by_ref()
            .take(max)
            .map(|r| list_volumes_response::Entry {
                volume: Some(self.volume(r)),
                status: None,
            })
            .collect();
        Ok(ListVolumesResponse {
            entries,
            next_token: rest.next().map(|r| r.volume_id.clone()).unwrap_or_default(),
        })
    }

    pub fn get_capacity(
        &self,
        req: GetCapacityRequest,
    ) -> Result<GetCapacityResponse, ControllerError> {
        let kind = parameters::volume_kind(&req.parameters).map_err(|source| {
            ControllerError::Parameter {
                name: String::new(),
                source,
            }
        })?;
        let none = GetCapacityResponse {
            available_capacity: 0,
            maximum_volume_size: Some(0),
            minimum_volume_size: None,
        };
        // Capacity tracking sends no capabilities but the class's parameters as they are,
        // its fsType among them: that filesystem's minimum counts too.
        let mut asked = req.volume_capabilities.clone();
        if let Some(fs_type) = req.parameters.get(parameters::FS_TYPE_PARAMETER) {
            asked.push(VolumeCapability {
                access_mode: Some(crate::csi::volume_capability::AccessMode {
                    mode: capabilities::Mode::SingleNodeWriter as i32,
                }),
                access_type: Some(crate::csi::volume_capability::AccessType::Mount(
                    crate::csi::volume_capability::MountVolume {
                        fs_type: fs_type.clone(),
                        ..Default::default()
                    },
                )),
            });
        }
        let Ok(filesystems) = check_capabilities(kind, "", &asked) else {
            return Ok(none);
        };
        let minimum = filesystem::min_volume_bytes(filesystems);
        if let Some(t) = &req.accessible_topology
            && !topology::is_this_node(t, &self.config.node_id)
        {
            return Ok(none);
        }
        let store = self.lock();
        // local-disk: what is left of --capacity, and the largest request that fits in it
        // (whole MiB); hostpath: the free space of the state dir's filesystem (a hostpath
        // volume's capacity is recorded, not enforced).
        let (available, maximum) = match kind {
            VolumeKind::LocalDisk => {
                let left = capacity::remaining(self.config.capacity_bytes, store.allocated_bytes());
                (left, capacity::maximum_volume_size(left, minimum))
            }
            VolumeKind::HostPath => {
                let free = self
                    .kernel
                    .statvfs(&store.root().join("hostpath"))?
                    .available_bytes;
                (free, free)
            }
        };
        let bytes = |b: u64| b.min(i64::MAX as u64) as i64;
        Ok(GetCapacityResponse {
            available_capacity: bytes(available),
            maximum_volume_size: Some(bytes(maximum)),
            minimum_volume_size: (kind == VolumeKind::LocalDisk).then_some(minimum as i64),
        })
    }

    pub fn controller_expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, ControllerError> {
        if req.volume_id.is_empty() {
            return Err(ControllerError::Missing("volume_id"));
        }
        let Some(range) = req.capacity_range else {
            return Err(ControllerError::Missing("capacity_range"));
        };
        let mut store = self.lock();
        let record = store
            .get(&req.volume_id)
            .cloned()
            .ok_or_else(|| ControllerError::NotFound(req.volume_id.clone()))?;
        if let Some(capability) = &req.volume_capability {
            check_capabilities(
                record.kind,
                &record.volume_id,
                std::slice::from_ref(capability),
            )?;
        }
        let capacity_error = |source| ControllerError::Capacity {
            volume: record.volume_id.clone(),
            source,
        };
        let range = capacity::range(Some(&range)).map_err(capacity_error)?;
        let size = match record.kind {
            VolumeKind::LocalDisk => {
                let size = capacity::expanded_size(record.capacity_bytes, range)
                    .map_err(capacity_error)?;
                let left = capacity::remaining(self.config.capacity_bytes, store.allocated_bytes());
                if size - record.capacity_bytes > left {
                    return Err(ControllerError::Exhausted {
                        volume: record.volume_id.clone(),
                        wanted: size - record.capacity_bytes,
                        left,
                    });
                }
                if size > record.capacity_bytes {
                    // Growing the file under an attached loop device is safe: the device
                    // keeps its size until NodeExpandVolume refreshes it.
                    let image = store.image_path(&record.volume_id);
                    let grow = || {
                        fs::OpenOptions::new()
                            .write(true)
                            .open(&image)?
                            .set_len(size)
                    };
                    grow().map_err(io("grow image", &image))?;
                }
                size
            }
            VolumeKind::HostPath => record.capacity_bytes.max(range.required),
        };
        if size != record.capacity_bytes {
            store.put(VolumeRecord {
                capacity_bytes: size,
                ..record.clone()
            })?;
            tracing::info!(volume = %record.volume_id, bytes = size, "expanded volume");
        }
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: size as i64,
            node_expansion_required: record.kind == VolumeKind::LocalDisk,
        })
    }

    /// Attaches a local-disk volume's image to a loop device (or finds it attached;
    /// read-only when `readonly`: PUBLISH_READONLY) and records the publication; a
    /// hostpath volume's is only recorded (its readonly is NodePublishVolume's).
    pub fn controller_publish_volume(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, ControllerError> {
        if !self.config.attach_required {
            return Err(ControllerError::NoAttach("ControllerPublishVolume"));
        }
        if req.volume_id.is_empty() {
            return Err(ControllerError::Missing("volume_id"));
        }
        if req.node_id.is_empty() {
            return Err(ControllerError::Missing("node_id"));
        }
        let Some(capability) = req.volume_capability else {
            return Err(ControllerError::Missing("volume_capability"));
        };
        let mut store = self.lock();
        let record = store
            .get(&req.volume_id)
            .cloned()
            .ok_or_else(|| ControllerError::NotFound(req.volume_id.clone()))?;
        check_capabilities(
            record.kind,
            &record.volume_id,
            std::slice::from_ref(&capability),
        )?;
        let requested = Publication {
            node_id: req.node_id,
            readonly: req.readonly,
            block: matches!(
                capabilities::check(record.kind, &capability),
                Ok(capabilities::Access::Block)
            ),
            access_mode: capability.access_mode.map(|m| m.mode).unwrap_or_default(),
        };
        let published = store.list().filter(|r| r.published.is_some()).count();
        let decision = publish::decide_publish(
            &record.volume_id,
            &self.config.node_id,
            self.config.max_volumes_per_node,
            record.published.as_ref(),
            &requested,
            published,
        )?;
        let k = self.kernel.as_ref();
        let read_only = requested.readonly;
        let (device, attached_here) = match record.kind {
            VolumeKind::LocalDisk => {
                let image = store.image_path(&record.volume_id);
                let mut found = k.loop_find(&image)?;
                // Attached otherwise than asked (a publication whose record was never
                // written): attached again, unless something uses it.
                if decision == PublishDecision::Publish
                    && let Some(device) = &found
                    && k.loop_read_only(device)? != read_only
                {
                    detach_unused(k, &record.volume_id, &image, device)?;
                    found = None;
                }
                match found {
                    Some(device) => (Some(device), false),
                    None => (Some(k.loop_attach(&image, read_only)?), true),
                }
            }
            VolumeKind::HostPath => (None, false),
        };
        if decision == PublishDecision::Publish {
            let put = store.put(VolumeRecord {
                published: Some(requested),
                ..record.clone()
            });
            if let Err(e) = put {
                if attached_here && let Some(device) = &device {
                    let _ = k.loop_detach(device);
                }
                return Err(e.into());
            }
        }
        if let Some(device) = &device {
            tracing::info!(volume = %record.volume_id, device = %device.display(), attached = attached_here, "published volume");
        }
        Ok(ControllerPublishVolumeResponse {
            publish_context: publish::publish_context(device.as_deref()),
        })
    }

    /// Detaches a local-disk volume's loop device (refused while it is mounted) and
    /// forgets the publication. An unknown volume, or another node, is unpublished already
    /// (the spec's "safely regarded as ControllerUnpublished": 0 OK).
    pub fn controller_unpublish_volume(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<(), ControllerError> {
        if !self.config.attach_required {
            return Err(ControllerError::NoAttach("ControllerUnpublishVolume"));
        }
        let id = req.volume_id;
        if id.is_empty() {
            return Err(ControllerError::Missing("volume_id"));
        }
        if !is_volume_id(&id) || !publish::unpublish_here(&self.config.node_id, &req.node_id) {
            return Ok(());
        }
        let mut store = self.lock();
        let Some(record) = store.get(&id).cloned() else {
            return Ok(());
        };
        let k = self.kernel.as_ref();
        if record.kind == VolumeKind::LocalDisk {
            let image = store.image_path(&id);
            if let Some(device) = k.loop_find(&image)? {
                detach_unused(k, &id, &image, &device)?;
                tracing::info!(volume = %id, device = %device.display(), "unpublished volume");
            }
        }
        if record.published.is_some() {
            store.put(VolumeRecord {
                published: None,
                ..record
            })?;
        }
        Ok(())
    }

    pub fn controller_get_capabilities(&self) -> ControllerGetCapabilitiesResponse {
        let attach: &[RpcType] = if self.config.attach_required {
            &[RpcType::PublishUnpublishVolume, RpcType::PublishReadonly]
        } else {
            &[]
        };
        ControllerGetCapabilitiesResponse {
            capabilities: CONTROLLER_CAPABILITIES
                .iter()
                .chain(attach)
                .map(|t| ControllerServiceCapability {
                    r#type: Some(CapabilityType::Rpc(Rpc { r#type: *t as i32 })),
                })
                .collect(),
        }
    }
}

/// Detaches `device`, which holds `image`, unless it is mounted somewhere (staged):
/// FAILED_PRECONDITION then.
fn detach_unused(
    k: &dyn crate::kernel::Kernel,
    volume: &str,
    image: &Path,
    device: &Path,
) -> Result<(), ControllerError> {
    for root in device_roots(k, device)? {
        if let Some(staged) = mounts_of(k, root, &[])?.into_iter().next() {
            return Err(ControllerError::StillStaged {
                volume: volume.to_string(),
                staged,
            });
        }
    }
    match detach_image(k, image)? {
        Some(device) => Err(ControllerError::StillAttached {
            volume: volume.to_string(),
            device,
        }),
        None => Ok(()),
    }
}

/// Removes what CreateVolume made for a volume whose record could not be written.
fn remove_data(image: &Path, dir: &Path) {
    let _ = fs::remove_file(image);
    let _ = fs::remove_dir(dir);
}
