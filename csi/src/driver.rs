//! The driver's state, shared by its three services: its configuration, the volume
//! records and the kernel. Every Controller and Node operation runs under one lock, on a
//! blocking thread (they call into the kernel, e2fsprogs and xfsprogs): one operation at a
//! time, as csi-driver-host-path does, which makes each operation's checks and its effects
//! atomic with respect to the others.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kernel::{FileKind, FileStat, Kernel, KernelError};
use crate::store::{StoreError, VolumeStore};

/// What the driver is told at start (the flags, less the endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    pub driver_name: String,
    pub node_id: String,
    pub state_dir: PathBuf,
    /// NodeGetInfo's max_volumes_per_node (0: no limit).
    pub max_volumes_per_node: i64,
    /// The bytes local-disk volumes may take in total on this node.
    pub capacity_bytes: u64,
    /// `--attach-required`: advertise PUBLISH_UNPUBLISH_VOLUME; ControllerPublishVolume
    /// attaches a local-disk image to its loop device, NodeStageVolume uses that device.
    pub attach_required: bool,
}

/// The driver. See the module documentation.
pub struct Driver {
    pub(crate) config: DriverConfig,
    pub(crate) kernel: Arc<dyn Kernel>,
    store: Mutex<VolumeStore>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Opens the state dir (loading the records of a previous run).
    pub fn new(config: DriverConfig, kernel: Arc<dyn Kernel>) -> Result<Self, StoreError> {
        let store = VolumeStore::open(&config.state_dir)?;
        Ok(Driver {
            config,
            kernel,
            store: Mutex::new(store),
        })
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// The lock every operation holds.
    pub(crate) fn lock(&self) -> MutexGuard<'_, VolumeStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How to recognise a volume where it is mounted: what stat(2) answers for its root (a
/// filesystem's root directory, or the device node of a block volume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VolumeRoot {
    /// A directory: the mounted filesystem's root (local-disk: inode 2 of an ext4, the
    /// superblock's root inode of an xfs, as `node::device_roots` finds it) or the
    /// hostpath directory.
    Dir { dev: u64, ino: u64 },
    /// A block device node (a local-disk volume in block mode).
    Device { rdev: u64 },
}

impl VolumeRoot {
    pub(crate) fn matches(self, stat: &FileStat) -> bool {
        match self {
            VolumeRoot::Dir { dev, ino } => {
                stat.kind == FileKind::Dir && stat.dev == dev && stat.ino == ino
            }
            VolumeRoot::Device { rdev } => stat.kind == FileKind::BlockDevice && stat.rdev == rdev,
        }
    }
}

/// The mount points (other than those in `except`) where `root` is mounted.
pub(crate) fn mounts_of(
    kernel: &dyn Kernel,
    root: VolumeRoot,
    except: &[&Path],
) -> Result<Vec<PathBuf>, KernelError> {
    let mut found = Vec::new();
    for m in kernel.mounts()? {
        if except.contains(&m.mount_point.as_path()) || found.contains(&m.mount_point) {
            continue;
        }
        let dev = nix::sys::stat::makedev(u64::from(m.major), u64::from(m.minor));
        let candidate = match root {
            VolumeRoot::Dir { dev: d, .. } => d == dev,
            // A device node bind-mounted onto a file: the mount is devtmpfs'.
            VolumeRoot::Device { .. } => m.root != Path::new("/"),
        };
        if candidate
            && let Some(stat) = kernel.stat(&m.mount_point)?
            && root.matches(&stat)
        {
            found.push(m.mount_point);
        }
    }
    Ok(found)
}

/// Whether `path` is a mount point.
pub(crate) fn is_mount_point(kernel: &dyn Kernel, path: &Path) -> Result<bool, KernelError> {
    Ok(kernel.mounts()?.iter().any(|m| m.mount_point == path))
}

/// `path` made absolute and free of symlinks in its parent (the last component is kept,
/// so a mount point or a dangling target is named as mountinfo names it).
pub(crate) fn resolve(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            std::fs::canonicalize(parent)
                .map(|p| p.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// How long an unmounted, autoclearing (or just cleared) loop device may take to let go
/// of its image.
const DETACH_WAIT: Duration = Duration::from_secs(5);

/// Detaches the loop device `image` is attached to (LOOP_CLR_FD; an unbound device is
/// fine) and waits for the kernel to let go of the image. The device still holding it
/// after [`DETACH_WAIT`], if any.
pub(crate) fn detach_image(
    kernel: &dyn Kernel,
    image: &Path,
) -> Result<Option<PathBuf>, KernelError> {
    if let Some(device) = kernel.loop_find(image)? {
        kernel.loop_detach(&device)?;
    }
    let deadline = Instant::now() + DETACH_WAIT;
    while let Some(device) = kernel.loop_find(image)? {
        if Instant::now() > deadline {
            return Ok(Some(device));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}
