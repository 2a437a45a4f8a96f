//! The kernel behind a trait (as node-agent's `runtime::syscall::Syscall`): loop devices,
//! mounts, e2fsprogs, xfsprogs and file status. [`LinuxKernel`] makes the real calls (root needed);
//! [`FakeKernel`] keeps loop devices and mounts in memory, so the node logic's order,
//! idempotency and refusals are tested without root.

mod fake;
mod linux;
mod loopdev;

use std::path::{Path, PathBuf};

pub use fake::FakeKernel;
pub use linux::{LinuxKernel, has_cap_sys_resource, parse_dumpe2fs_size, parse_xfs_db_size};
use nix::mount::MsFlags;

use crate::mountinfo::MountInfo;

/// A failed kernel operation: the operation, its object and the cause.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{op} {object}: {source}")]
    Io {
        op: &'static str,
        object: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {object}: {errno}")]
    Errno {
        op: &'static str,
        object: String,
        errno: nix::errno::Errno,
    },
    #[error("{command} {object}: {message}")]
    Command {
        command: &'static str,
        object: String,
        message: String,
    },
    #[error("read mountinfo: {0}")]
    MountInfo(#[from] crate::mountinfo::MountInfoError),
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    BlockDevice,
    Other,
}

/// A path's status: enough to tell which filesystem object (or device) it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    /// The device a device node stands for.
    pub rdev: u64,
    pub kind: FileKind,
}

/// A filesystem's usage (statvfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStats {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// The kernel operations the driver needs.
pub trait Kernel: Send + Sync {
    /// Attaches `image` to a free loop device (read-only: LO_FLAGS_READ_ONLY over a
    /// read-only descriptor) and returns the device's path.
    fn loop_attach(&self, image: &Path, read_only: bool) -> Result<PathBuf>;
    /// Whether the loop device is read-only (sysfs `ro`).
    fn loop_read_only(&self, device: &Path) -> Result<bool>;
    /// The loop device `image` is attached to, if any.
    fn loop_find(&self, image: &Path) -> Result<Option<PathBuf>>;
    /// Sets the device to detach itself when its last user (the mount) goes.
    fn loop_set_autoclear(&self, device: &Path) -> Result<()>;
    /// Detaches the device from its file (gone already is fine).
    fn loop_detach(&self, device: &Path) -> Result<()>;
    /// Re-reads the backing file's size into the device (LOOP_SET_CAPACITY).
    fn loop_refresh_capacity(&self, device: &Path) -> Result<()>;
    /// The size of a block device.
    fn device_size(&self, device: &Path) -> Result<u64>;
    /// The filesystem on a device (`blkid -p`), or none.
    fn probe_fs_type(&self, device: &Path) -> Result<Option<String>>;
    fn mkfs_ext4(&self, device: &Path) -> Result<()>;
    /// Makes an xfs on `device` (`mkfs.xfs -f`, mount-utils' arguments; xfsprogs refuses a
    /// device under 300 MiB).
    fn mkfs_xfs(&self, device: &Path) -> Result<()>;
    /// Grows the ext4 on `device` to the device's size: online when it is mounted (the
    /// kernel's ext4 resize, which needs CAP_SYS_RESOURCE), offline when it is not (plain
    /// writes to the device, after [`Kernel::e2fsck`]).
    fn resize2fs(&self, device: &Path) -> Result<()>;
    /// The size in bytes of the ext4 filesystem on `device` (`dumpe2fs -h`: block count
    /// times block size), which is less than the device's after the device grew.
    fn ext4_size(&self, device: &Path) -> Result<u64>;
    /// Checks the unmounted ext4 on `device` and repairs what is safe to repair without
    /// asking (`e2fsck -f -p`): what resize2fs wants before an offline resize.
    fn e2fsck(&self, device: &Path) -> Result<()>;
    /// The size in bytes of the xfs on the unmounted `device` (`xfs_db -r`: the
    /// superblock's data blocks times its block size; a mounted filesystem's on-disk
    /// superblock may lag behind the kernel's).
    fn xfs_size(&self, device: &Path) -> Result<u64>;
    /// Grows the xfs mounted at `mount_point` to its device's size (`xfs_growfs -d`, as
    /// mount-utils' ResizeFs; xfs grows only while mounted, and needs CAP_SYS_ADMIN).
    fn xfs_growfs(&self, mount_point: &Path) -> Result<()>;
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fs_type: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn unmount(&self, target: &Path) -> Result<()>;
    /// Every mount of the driver's mount namespace.
    fn mounts(&self) -> Result<Vec<MountInfo>>;
    /// The status of `path` (following symlinks), or none when it does not exist.
    fn stat(&self, path: &Path) -> Result<Option<FileStat>>;
    fn statvfs(&self, path: &Path) -> Result<FsStats>;
}
