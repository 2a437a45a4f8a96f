//! The Node service's operations: NodeStageVolume, NodeUnstageVolume,
//! NodePublishVolume, NodeUnpublishVolume, NodeGetVolumeStats, NodeExpandVolume,
//! NodeGetInfo and NodeGetCapabilities.
//!
//! The order, written down:
//! - stage (local-disk, mount): attach the image to a loop device (or find it attached),
//!   make the capability's filesystem (`fs_type`: ext4, the default, or xfs;
//!   [`crate::filesystem`]) only when `blkid` finds none (another filesystem than asked
//!   is an error, never formatted over); a filesystem smaller than the volume (expanded
//!   while unstaged) is grown unless the stage is read-only: an ext4 offline first
//!   (`e2fsck -f -p`, `resize2fs` on the unmounted device: no CAP_SYS_RESOURCE needed), an
//!   xfs right after the mount (`xfs_growfs` on the staging path: xfs grows only mounted);
//!   mount at the staging path, then set the device to autoclear, so that the last unmount
//!   detaches it;
//! - stage (local-disk, block): attach only;
//! - stage (hostpath): bind-mount the directory at the staging path;
//! - publish: bind-mount the staging mount (or, in block mode, the loop device node onto
//!   a file) at the target path, then remount read-only or with the capability's flags;
//! - unpublish: unmount the target when it is this volume's, remove the target path;
//! - unstage: unmount the staging path when it is this volume's, detach the loop device.
//!
//! Under `--attach-required` the loop device is ControllerPublishVolume's
//! ([`crate::publish`]): stage takes it from the publish context (`devicePath`, which must
//! be the device the image is attached to), formats and mounts it without autoclear (a
//! device published read-only is mounted read-only, never formatted); unstage only
//! unmounts; ControllerUnpublishVolume detaches.
//!
//! Mounts are recognised by what stat(2) answers at the mount point ([`VolumeRoot`]), not
//! by their paths, so a call naming another volume's path leaves it alone. Every failure
//! undoes what the operation did before it (no loop device, mount or file left).

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use tonic::Code;

use crate::capabilities::{self, Access, CapabilityError};
use crate::capacity::{self, CapacityError};
use crate::csi::node_service_capability::{Rpc, Type as CapabilityType, rpc::Type as RpcType};
use crate::csi::volume_usage::Unit;
use crate::csi::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesResponse,
    NodeGetInfoResponse, NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse,
    NodePublishVolumeRequest, NodeServiceCapability, NodeStageVolumeRequest,
    NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest, VolumeCapability, VolumeUsage,
};
use crate::driver::{Driver, VolumeRoot, detach_image, is_mount_point, mounts_of, resolve};
use crate::filesystem::{self, FsType, StageGrowth};
use crate::kernel::{FileKind, Kernel, KernelError};
use crate::mount_options::{self, MountOptionError};
use crate::parameters::VolumeKind;
use crate::publish::{self, StageDeviceError};
use crate::store::{VolumeRecord, VolumeStore};
use crate::topology;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("volume {0}: not found")]
    NotFound(String),
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
    #[error("volume {volume}: not staged at {path} (call NodeStageVolume first)")]
    NotStaged { volume: String, path: PathBuf },
    #[error("volume {volume}: {path} is in use by something else ({reason})")]
    Incompatible {
        volume: String,
        path: PathBuf,
        reason: String,
    },
    #[error("volume {volume}: single-writer access, already published at {published}")]
    SingleWriter { volume: String, published: PathBuf },
    #[error("volume {volume}: still published at {published}")]
    StillPublished { volume: String, published: PathBuf },
    #[error("volume {volume}: its image is still attached to {device} after detaching")]
    StillAttached { volume: String, device: PathBuf },
    #[error("volume {volume}: {path} does not exist")]
    PathNotFound { volume: String, path: PathBuf },
    #[error("volume {volume}: not mounted at {path}")]
    NotAtPath { volume: String, path: PathBuf },
    #[error(
        "volume {volume}: published read-only at {device}, which holds no filesystem yet (publish it read-write once to format it)"
    )]
    ReadOnlyUnformatted { volume: String, device: PathBuf },
    #[error(
        "volume {volume}: {device} holds a filesystem of type {found}, not {wanted} (the volume capability's fs_type)"
    )]
    Filesystem {
        volume: String,
        device: PathBuf,
        found: String,
        wanted: FsType,
    },
    #[error(
        "volume {volume}: {bytes} bytes are too small for {fs}, which needs at least {minimum} (make the volume that big)"
    )]
    TooSmallForFilesystem {
        volume: String,
        fs: FsType,
        bytes: u64,
        minimum: u64,
    },
    #[error("volume {volume}: cannot grow the filesystem on {device} (type {fs_type})")]
    CannotGrow {
        volume: String,
        device: PathBuf,
        fs_type: String,
    },
    #[error(
        "volume {volume}: {required} bytes requested, but the volume has {capacity} (call ControllerExpandVolume first)"
    )]
    NotExpanded {
        volume: String,
        required: u64,
        capacity: u64,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Device(#[from] StageDeviceError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl NodeError {
    /// The gRPC code the CSI spec's error tables give the failure.
    pub fn code(&self) -> Code {
        match self {
            NodeError::Missing(_)
            | NodeError::Capability { .. }
            | NodeError::MountOption { .. } => Code::InvalidArgument,
            NodeError::NotFound(_)
            | NodeError::PathNotFound { .. }
            | NodeError::NotAtPath { .. } => Code::NotFound,
            NodeError::Capacity { source, .. } => source.code(),
            NodeError::Device(source) => source.code(),
            NodeError::NotExpanded { .. } => Code::OutOfRange,
            NodeError::NotStaged { .. }
            | NodeError::SingleWriter { .. }
            | NodeError::StillPublished { .. }
            | NodeError::Filesystem { .. }
            | NodeError::TooSmallForFilesystem { .. }
            | NodeError::CannotGrow { .. }
            | NodeError::ReadOnlyUnformatted { .. } => Code::FailedPrecondition,
            NodeError::Incompatible { .. } => Code::AlreadyExists,
            NodeError::Io { .. } | NodeError::Kernel(_) | NodeError::StillAttached { .. } => {
                Code::Internal
            }
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NodeError {
    let path = path.to_path_buf();
    move |source| NodeError::Io { op, path, source }
}

fn required<'a>(value: &'a str, field: &'static str) -> Result<&'a str, NodeError> {
    if value.is_empty() {
        Err(NodeError::Missing(field))
    } else {
        Ok(value)
    }
}

/// The capabilities the Node service advertises.
pub const NODE_CAPABILITIES: [RpcType; 4] = [
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::ExpandVolume,
    RpcType::SingleNodeMultiWriter,
];

/// The volume's roots as they stand now: a local-disk volume's only while its image is
/// attached (its filesystem root and its device), a hostpath volume's directory.
struct Roots {
    device: Option<PathBuf>,
    roots: Vec<VolumeRoot>,
}

impl Roots {
    fn matches(&self, stat: &crate::kernel::FileStat) -> bool {
        self.roots.iter().any(|r| r.matches(stat))
    }
}

impl Driver {
    fn record(&self, store: &VolumeStore, volume_id: &str) -> Result<VolumeRecord, NodeError> {
        store
            .get(volume_id)
            .cloned()
            .ok_or_else(|| NodeError::NotFound(volume_id.to_string()))
    }

    fn check(
        &self,
        record: &VolumeRecord,
        capability: Option<&VolumeCapability>,
    ) -> Result<(Access, capabilities::Mode), NodeError> {
        let capability = capability.ok_or(NodeError::Missing("volume_capability"))?;
        let err = |source| NodeError::Capability {
            volume: record.volume_id.clone(),
            source,
        };
        let access = capabilities::check(record.kind, capability).map_err(err)?;
        let mode = capabilities::access_mode(capability).map_err(err)?;
        Ok((access, mode))
    }

    /// Whether ControllerPublishVolume published the volume read-only (PUBLISH_READONLY,
    /// under `--attach-required`): its mounts are read-only then, whatever the node calls
    /// ask.
    fn published_read_only(&self, record: &VolumeRecord) -> bool {
        self.config.attach_required && record.published.as_ref().is_some_and(|p| p.readonly)
    }

    fn mount_options(
        &self,
        record: &VolumeRecord,
        flags: &[String],
    ) -> Result<mount_options::MountOptions, NodeError> {
        mount_options::parse(flags).map_err(|source| NodeError::MountOption {
            volume: record.volume_id.clone(),
            source,
        })
    }

    fn roots(&self, store: &VolumeStore, record: &VolumeRecord) -> Result<Roots, NodeError> {
        let k = self.kernel.as_ref();
        match record.kind {
            VolumeKind::LocalDisk => {
                let device = k.loop_find(&store.image_path(&record.volume_id))?;
                let mut roots = Vec::new();
                if let Some(device) = &device {
                    roots = device_roots(k, device)?;
                }
                Ok(Roots { device, roots })
            }
            VolumeKind::HostPath => {
                let dir = store.hostpath_dir(&record.volume_id);
                let roots = k
                    .stat(&dir)?
                    .map(|s| {
                        vec![VolumeRoot::Dir {
                            dev: s.dev,
                            ino: s.ino,
                        }]
                    })
                    .unwrap_or_default();
                Ok(Roots {
                    device: None,
                    roots,
                })
            }
        }
    }

    pub fn node_stage_volume(&self, req: NodeStageVolumeRequest) -> Result<(), NodeError> {
        let volume_id = required(&req.volume_id, "volume_id")?;
        let staging = resolve(Path::new(required(
            &req.staging_target_path,
            "staging_target_path",
        )?));
        if req.volume_capability.is_none() {
            return Err(NodeError::Missing("volume_capability"));
        }
        let store = self.lock();
        let record = self.record(&store, volume_id)?;
        let (access, mode) = self.check(&record, req.volume_capability.as_ref())?;
        // A reader-only volume's filesystem is never grown here (the kubelet does not
        // resize read-only volumes either).
        let grow = !capabilities::read_only_mode(mode);
        let k = self.kernel.as_ref();
        match (record.kind, access) {
            (VolumeKind::LocalDisk, access) if self.config.attach_required => {
                // Attached by ControllerPublishVolume: use that device, attach nothing.
                let image = store.image_path(volume_id);
                let attached = k.loop_find(&image)?;
                let device =
                    publish::stage_device(volume_id, &req.publish_context, attached.as_deref())?;
                match access {
                    Access::Block => Ok(()),
                    Access::Mount { fs, mount_flags } => {
                        let mut options = self.mount_options(&record, &mount_flags)?;
                        // Published read-only: a write-protected device, mounted so.
                        if k.loop_read_only(&device)? {
                            options.flags |= MsFlags::MS_RDONLY;
                        }
                        let fs = local_disk_fs(fs);
                        self.stage_filesystem(&record, &device, &staging, fs, &options, false, grow)
                    }
                }
            }
            (VolumeKind::LocalDisk, Access::Block) => {
                let image = store.image_path(volume_id);
                if k.loop_find(&image)?.is_none() {
                    let device = k.loop_attach(&image, false)?;
                    tracing::info!(volume = volume_id, device = %device.display(), "staged block volume");
                }
                Ok(())
            }
            (VolumeKind::LocalDisk, Access::Mount { fs, mount_flags }) => {
                let options = self.mount_options(&record, &mount_flags)?;
                let image = store.image_path(volume_id);
                let (device, attached) = match k.loop_find(&image)? {
                    Some(device) => (device, false),
                    None => (k.loop_attach(&image, false)?, true),
                };
                // stage_filesystem leaves the device unmounted when it fails: detach what
                // was attached here.
                let fs = local_disk_fs(fs);
                let result =
                    self.stage_filesystem(&record, &device, &staging, fs, &options, true, grow);
                if result.is_err() && attached {
                    let _ = k.loop_detach(&device);
                }
                result
            }
            (VolumeKind::HostPath, Access::Mount { mount_flags, .. }) => {
                let options = self.mount_options(&record, &mount_flags)?;
                let dir = store.hostpath_dir(volume_id);
                let roots = self.roots(&store, &record)?;
                if self.already_mounted(&record, &roots, &staging)? {
                    return Ok(());
                }
                self.bind(&dir, &staging, &options, self.published_read_only(&record))
            }
            (VolumeKind::HostPath, Access::Block) => {
                unreachable!("capabilities::check refuses block hostpath")
            }
        }
    }

    /// Whether `path` is a mount of this volume already (true), free (false), or another's.
    fn already_mounted(
        &self,
        record: &VolumeRecord,
        roots: &Roots,
        path: &Path,
    ) -> Result<bool, NodeError> {
        let k = self.kernel.as_ref();
        if !is_mount_point(k, path)? {
            return Ok(false);
        }
        match k.stat(path)? {
            Some(stat) if roots.matches(&stat) => Ok(true),
            _ => Err(NodeError::Incompatible {
                volume: record.volume_id.clone(),
                path: path.to_path_buf(),
                reason: "another filesystem is mounted there".into(),
            }),
        }
    }

    /// Stages a local-disk volume's filesystem `fs` on `device` at `staging`: made when the
    /// device holds none, grown when smaller than the volume (unless `grow` is false or
    /// the stage read-only: [`filesystem::growth_at_stage`]), mounted, and the device set
    /// to autoclear when `autoclear`. A failure leaves the device unmounted.
    #[allow(clippy::too_many_arguments)]
    fn stage_filesystem(
        &self,
        record: &VolumeRecord,
        device: &Path,
        staging: &Path,
        fs: FsType,
        options: &mount_options::MountOptions,
        autoclear: bool,
        grow: bool,
    ) -> Result<(), NodeError> {
        let k = self.kernel.as_ref();
        let roots = Roots {
            device: Some(device.to_path_buf()),
            roots: device_roots(k, device)?,
        };
        if self.already_mounted(record, &roots, staging)? {
            return Ok(());
        }
        let growth = match k.probe_fs_type(device)? {
            None if options.flags.contains(MsFlags::MS_RDONLY) && k.loop_read_only(device)? => {
                return Err(NodeError::ReadOnlyUnformatted {
                    volume: record.volume_id.clone(),
                    device: device.to_path_buf(),
                });
            }
            None => {
                // mkfs.xfs refuses a device under 300 MiB: say so before trying.
                let bytes = k.device_size(device)?;
                if bytes < fs.min_volume_bytes() {
                    return Err(NodeError::TooSmallForFilesystem {
                        volume: record.volume_id.clone(),
                        fs,
                        bytes,
                        minimum: fs.min_volume_bytes(),
                    });
                }
                match fs {
                    FsType::Ext4 => k.mkfs_ext4(device)?,
                    FsType::Xfs => k.mkfs_xfs(device)?,
                }
                tracing::info!(volume = %record.volume_id, device = %device.display(), fs = fs.as_str(), "formatted");
                StageGrowth::None
            }
            Some(found) if found == fs.as_str() => {
                let read_only =
                    options.flags.contains(MsFlags::MS_RDONLY) || k.loop_read_only(device)?;
                if grow && !read_only {
                    let fs_bytes = match fs {
                        FsType::Ext4 => k.ext4_size(device)?,
                        FsType::Xfs => k.xfs_size(device)?,
                    };
                    filesystem::growth_at_stage(fs, fs_bytes, record.capacity_bytes)
                } else {
                    StageGrowth::None
                }
            }
            // mount-utils' FilesystemMismatch: never formatted over, never mounted as
            // another type.
            Some(found) => {
                return Err(NodeError::Filesystem {
                    volume: record.volume_id.clone(),
                    device: device.to_path_buf(),
                    found,
                    wanted: fs,
                });
            }
        };
        if growth != StageGrowth::None {
            // The device re-reads the image's size (ControllerExpandVolume grew it; a
            // device attached before that still has the old one).
            k.loop_refresh_capacity(device)?;
        }
        if growth == StageGrowth::OfflineBeforeMount {
            self.grow_offline(record, device)?;
        }
        if k.stat(staging)?.is_none() {
            fs::create_dir_all(staging).map_err(io("create", staging))?;
        }
        k.mount(
            device,
            staging,
            Some(fs.as_str()),
            options.flags,
            options.data_string().as_deref(),
        )?;
        let after_mount = || -> Result<(), NodeError> {
            if growth == StageGrowth::OnlineAfterMount {
                k.xfs_growfs(staging)?;
                tracing::info!(volume = %record.volume_id, device = %device.display(),
                    bytes = record.capacity_bytes, "grew the xfs at stage");
            }
            if autoclear {
                k.loop_set_autoclear(device)?;
            }
            Ok(())
        };
        if let Err(e) = after_mount() {
            let _ = k.unmount(staging);
            return Err(e);
        }
        tracing::info!(volume = %record.volume_id, device = %device.display(), staging = %staging.display(), fs = fs.as_str(), "staged volume");
        Ok(())
    }

    /// The offline half of an ext4's expansion: an ext4 smaller than the volume
    /// (ControllerExpandVolume grew the image while nothing had it staged) is grown before
    /// it is mounted: `e2fsck -f -p`, then `resize2fs` on the unmounted device. Plain
    /// writes to the device: no CAP_SYS_RESOURCE needed, unlike the kernel's online resize
    /// that NodeExpandVolume asks of a mounted ext4.
    fn grow_offline(&self, record: &VolumeRecord, device: &Path) -> Result<(), NodeError> {
        let k = self.kernel.as_ref();
        k.e2fsck(device)?;
        k.resize2fs(device)?;
        tracing::info!(volume = %record.volume_id, device = %device.display(),
            bytes = record.capacity_bytes, "grew the ext4 offline");
        Ok(())
    }

    /// Bind-mounts `source` at `target`, then applies the per-mount flags (and read-only)
    /// with a remount; undoes the bind when the remount fails.
    fn bind(
        &self,
        source: &Path,
        target: &Path,
        options: &mount_options::MountOptions,
        read_only: bool,
    ) -> Result<(), NodeError> {
        let k = self.kernel.as_ref();
        k.mount(source, target, None, MsFlags::MS_BIND, None)?;
        let mut flags = mount_options::per_mount_flags(options.flags);
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        if !flags.is_empty()
            && let Err(e) = k.mount(
                source,
                target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                None,
            )
        {
            let _ = k.unmount(target);
            return Err(e.into());
        }
        Ok(())
    }

    pub fn node_unstage_volume(&self, req: NodeUnstageVolumeRequest) -> Result<(), NodeError> {
        let volume_id = required(&req.volume_id, "volume_id")?;
        let staging = resolve(Path::new(required(
            &req.staging_target_path,
            "staging_target_path",
        )?));
        let store = self.lock();
        let record = self.record(&store, volume_id)?;
        let roots = self.roots(&store, &record)?;
        let k = self.kernel.as_ref();
        for root in &roots.roots {
            if let Some(published) = mounts_of(k, *root, &[&staging])?.into_iter().next() {
                return Err(NodeError::StillPublished {
                    volume: record.volume_id.clone(),
                    published,
                });
            }
        }
        if is_mount_point(k, &staging)?
            && let Some(stat) = k.stat(&staging)?
            && roots.matches(&stat)
        {
            k.unmount(&staging)?;
        }
        // Under --attach-required the loop device is ControllerUnpublishVolume's to
        // detach. Else: an autoclearing device lets go of its image on the last unmount;
        // a block volume's does not. LOOP_CLR_FD either way, then wait for the kernel.
        if roots.device.is_some()
            && !self.config.attach_required
            && let Some(device) = detach_image(k, &store.image_path(volume_id))?
        {
            return Err(NodeError::StillAttached {
                volume: record.volume_id,
                device,
            });
        }
        tracing::info!(volume = volume_id, staging = %staging.display(), "unstaged volume");
        Ok(())
    }

    pub fn node_publish_volume(&self, req: NodePublishVolumeRequest) -> Result<(), NodeError> {
        let volume_id = required(&req.volume_id, "volume_id")?;
        let target = resolve(Path::new(required(&req.target_path, "target_path")?));
        if req.volume_capability.is_none() {
            return Err(NodeError::Missing("volume_capability"));
        }
        let staging = resolve(Path::new(required(
            &req.staging_target_path,
            "staging_target_path",
        )?));
        let store = self.lock();
        let record = self.record(&store, volume_id)?;
        let (access, mode) = self.check(&record, req.volume_capability.as_ref())?;
        let read_only =
            req.readonly || capabilities::read_only_mode(mode) || self.published_read_only(&record);
        let k = self.kernel.as_ref();
        let roots = self.roots(&store, &record)?;
        let not_staged = || NodeError::NotStaged {
            volume: record.volume_id.clone(),
            path: staging.clone(),
        };
        let (root, source, options) = match access {
            Access::Block => {
                let device = roots.device.clone().ok_or_else(not_staged)?;
                let rdev = k.stat(&device)?.map(|s| s.rdev).ok_or_else(not_staged)?;
                (
                    VolumeRoot::Device { rdev },
                    device,
                    mount_options::MountOptions::default(),
                )
            }
            Access::Mount { mount_flags, .. } => {
                let options = self.mount_options(&record, &mount_flags)?;
                let staged = is_mount_point(k, &staging)?
                    && k.stat(&staging)?.is_some_and(|s| roots.matches(&s));
                if !staged {
                    return Err(not_staged());
                }
                let stat = k.stat(&staging)?.ok_or_else(not_staged)?;
                (
                    VolumeRoot::Dir {
                        dev: stat.dev,
                        ino: stat.ino,
                    },
                    staging.clone(),
                    options,
                )
            }
        };
        if is_mount_point(k, &target)? {
            let stat = k.stat(&target)?;
            let mounted_ro = k
                .mounts()?
                .iter()
                .rev()
                .find(|m| m.mount_point == target)
                .is_some_and(|m| m.read_only());
            if stat.is_some_and(|s| root.matches(&s)) && mounted_ro == read_only {
                return Ok(());
            }
            return Err(NodeError::Incompatible {
                volume: record.volume_id.clone(),
                path: target,
                reason: if stat.is_some_and(|s| root.matches(&s)) {
                    format!(
                        "published there {}",
                        if mounted_ro {
                            "read-only"
                        } else {
                            "read-write"
                        }
                    )
                } else {
                    "another filesystem is mounted there".into()
                },
            });
        }
        if capabilities::single_writer(mode)
            && let Some(published) = mounts_of(k, root, &[&staging, &target])?.into_iter().next()
        {
            return Err(NodeError::SingleWriter {
                volume: record.volume_id.clone(),
                published,
            });
        }
        let created = match k.stat(&target)? {
            Some(_) => false,
            None => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io("create", parent))?;
                }
                match root {
                    VolumeRoot::Device { .. } => fs::File::create(&target).map(drop),
                    VolumeRoot::Dir { .. } => fs::create_dir(&target),
                }
                .map_err(io("create", &target))?;
                true
            }
        };
        if let Err(e) = self.bind(&source, &target, &options, read_only) {
            if created {
                let _ = remove_path(&target);
            }
            return Err(e);
        }
        tracing::info!(volume = volume_id, target = %target.display(), read_only, "published volume");
        Ok(())
    }

    pub fn node_unpublish_volume(&self, req: NodeUnpublishVolumeRequest) -> Result<(), NodeError> {
        let volume_id = required(&req.volume_id, "volume_id")?;
        let target = resolve(Path::new(required(&req.target_path, "target_path")?));
        let store = self.lock();
        let record = self.record(&store, volume_id)?;
        let roots = self.roots(&store, &record)?;
        let k = self.kernel.as_ref();
        if is_mount_point(k, &target)? {
            match k.stat(&target)? {
                Some(stat) if roots.matches(&stat) => k.unmount(&target)?,
                // Another volume's: not ours to touch.
                _ => return Ok(()),
            }
            if is_mount_point(k, &target)? {
                return Ok(());
            }
        }
        remove_path(&target).map_err(io("remove", &target))?;
        tracing::info!(volume = volume_id, target = %target.display(), "unpublished volume");
        Ok(())
    }

    pub fn node_get_volume_stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, NodeError> {
        let volume_id = required(&req.volume_id, "volume_id")?;
        let path = resolve(Path::new(required(&req.volume_path, "volume_path")?));
        let store = self.lock();
        let record = self.record(&store, volume_id)?;
        let k = self.kernel.as_ref();
        let stat = k.stat(&path)?.ok_or_else(|| NodeError::PathNotFound {
            volume: record.volume_id.clone(),
            path: path.clone(),
        })?;
        let roots = self.roots(&store, &record)?;
        if !roots.matches(&stat) {
            return Err(NodeError::NotAtPath {
                volume: record.volume_id,
                path,
            });
        }
        let usage = if stat.kind == FileKind::BlockDevice {
            let device = roots.device.expect("a block root comes from a device");
            vec![VolumeUsage {
                total: k.device_size(&device)? as i64,
                unit: Unit::Bytes as i32,
                ..Default::default()
            }]
        } else {
            let s = k.statvfs(&path)?;
            vec![
                VolumeUsage {
                    available: s.available_bytes as i64,
                    total: s.total_bytes as i64,
                    used: s.used_bytes as i64,
                    unit: Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: s.free_inodes as i64,
                    total: s.total_inodes as i64,
                    used: s.used_inodes as i64,
                    unit: Unit::Inodes as i32,
                },
            ]
        };
        Ok(NodeGetVolumeStatsResponse { usage })
    }

    pub fn node_expand_volume(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse, NodeError> {
        let volume_id = required(&req.volume_id, "volume_id")?;
        let path = resolve(Path::new(required(&req.volume_path, "volume_path")?));
        let store = self.lock();
        let record = self.record(&store, volume_id)?;
        if let Some(capability) = &req.volume_capability {
            self.check(&record, Some(capability))?;
        }
        let range =
            capacity::range(req.capacity_range.as_ref()).map_err(|source| NodeError::Capacity {
                volume: record.volume_id.clone(),
                source,
            })?;
        if range.required > record.capacity_bytes {
            return Err(NodeError::NotExpanded {
                volume: record.volume_id,
                required: range.required,
                capacity: record.capacity_bytes,
            });
        }
        let k = self.kernel.as_ref();
        let stat = k.stat(&path)?.ok_or_else(|| NodeError::PathNotFound {
            volume: record.volume_id.clone(),
            path: path.clone(),
        })?;
        if record.kind == VolumeKind::HostPath {
            return Ok(NodeExpandVolumeResponse {
                capacity_bytes: record.capacity_bytes as i64,
            });
        }
        let roots = self.roots(&store, &record)?;
        let device = roots.device.clone().ok_or_else(|| NodeError::NotStaged {
            volume: record.volume_id.clone(),
            path: path.clone(),
        })?;
        if !roots.matches(&stat) {
            return Err(NodeError::NotAtPath {
                volume: record.volume_id,
                path,
            });
        }
        k.loop_refresh_capacity(&device)?;
        if stat.kind == FileKind::Dir {
            // As mount-utils' ResizeFs: the filesystem on the device says how.
            match k.probe_fs_type(&device)?.as_deref() {
                Some("ext4") => k.resize2fs(&device)?,
                Some("xfs") => k.xfs_growfs(&path)?,
                other => {
                    return Err(NodeError::CannotGrow {
                        volume: record.volume_id,
                        device,
                        fs_type: other.unwrap_or("unknown").to_string(),
                    });
                }
            }
        }
        let size = k.device_size(&device)?;
        tracing::info!(volume = volume_id, device = %device.display(), bytes = size, "expanded volume on the node");
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        })
    }

    pub fn node_get_info(&self) -> NodeGetInfoResponse {
        NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: self.config.max_volumes_per_node,
            accessible_topology: Some(topology::node_topology(&self.config.node_id)),
        }
    }

    pub fn node_get_capabilities(&self) -> NodeGetCapabilitiesResponse {
        NodeGetCapabilitiesResponse {
            capabilities: NODE_CAPABILITIES
                .iter()
                .map(|t| NodeServiceCapability {
                    r#type: Some(CapabilityType::Rpc(Rpc { r#type: *t as i32 })),
                })
                .collect(),
        }
    }
}

/// The filesystem of a local-disk mount (capabilities::check gives it one).
fn local_disk_fs(fs: Option<FsType>) -> FsType {
    fs.expect("capabilities::check gives a local-disk mount its filesystem")
}

/// A loop device's roots: its filesystem's root directory while mounted somewhere, and its
/// device node. The root directory is what stat(2) answers where the device's root is
/// mounted (mountinfo's root `/`): inode 2 of an ext4, the superblock's `rootino` of an
/// xfs (128 as mkfs.xfs makes them, but not fixed by the format).
pub(crate) fn device_roots(k: &dyn Kernel, device: &Path) -> Result<Vec<VolumeRoot>, KernelError> {
    let rdev = k
        .stat(device)?
        .map(|s| s.rdev)
        .ok_or_else(|| KernelError::Io {
            op: "stat",
            object: device.display().to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
    let (major, minor) = (
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    );
    let mut roots = Vec::new();
    for m in k.mounts()? {
        if (m.major, m.minor) == (major, minor)
            && m.root == Path::new("/")
            && let Some(stat) = k.stat(&m.mount_point)?
            && stat.kind == FileKind::Dir
            && stat.dev == rdev
        {
            roots.push(VolumeRoot::Dir {
                dev: rdev,
                ino: stat.ino,
            });
            break;
        }
    }
    roots.push(VolumeRoot::Device { rdev });
    Ok(roots)
}

/// Removes a target path the driver made: an empty directory or a file (gone is fine).
fn remove_path(path: &Path) -> std::io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
