//! The filesystems of local-disk volumes, pure: which one a mount capability's `fs_type`
//! asks for (`""` is ext4, mount-utils' default; `ext4` and `xfs` are made, anything else
//! is refused), the smallest volume each can be made on, and how a filesystem smaller
//! than its volume (expanded while nothing had it staged) is grown at NodeStageVolume.
//!
//! - ext4 grows **offline**, before the mount: `e2fsck -f -p`, then `resize2fs` on the
//!   unmounted device, plain writes that need no capability (the kernel's online ext4
//!   resize, NodeExpandVolume's, needs CAP_SYS_RESOURCE).
//! - xfs grows only while mounted (`xfs_growfs` on the mount point, the kernel's
//!   XFS_IOC_FSGROWFSDATA, which needs CAP_SYS_ADMIN only, as mounting does): **after** the
//!   mount, at stage as in NodeExpandVolume.
//! - xfsprogs ≥ 5.19 refuses to make an xfs under 300 MiB ("Filesystem must be larger than
//!   300MB."); CreateVolume rounds an xfs volume up to [`XFS_MIN_VOLUME_BYTES`] (as
//!   TopoLVM's and LVMS's minimum allocation does), within `limit_bytes`.

use crate::capacity::{MIB, MIN_VOLUME_BYTES};

/// The smallest filesystem mkfs.xfs makes (xfsprogs ≥ 5.19: 300 MiB exactly).
pub const XFS_MIN_VOLUME_BYTES: u64 = 300 * MIB;

/// A local-disk volume's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    /// The filesystem a mount capability's `fs_type` names: `""` (the default) and `ext4`
    /// are ext4, `xfs` is xfs, anything else none rekube-csi makes.
    pub fn parse(fs_type: &str) -> Option<FsType> {
        match fs_type {
            "" | "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }

    /// The name `blkid` reports and mount(2) takes.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// The smallest volume the filesystem is made on.
    pub fn min_volume_bytes(self) -> u64 {
        match self {
            FsType::Ext4 => MIN_VOLUME_BYTES,
            FsType::Xfs => XFS_MIN_VOLUME_BYTES,
        }
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The smallest volume that every one of `filesystems` can be made on (a block
/// capability names none): [`MIN_VOLUME_BYTES`] at least.
pub fn min_volume_bytes(filesystems: impl IntoIterator<Item = FsType>) -> u64 {
    filesystems
        .into_iter()
        .map(FsType::min_volume_bytes)
        .fold(MIN_VOLUME_BYTES, u64::max)
}

/// What NodeStageVolume does about a filesystem found on the volume (a read-only stage
/// never grows one: the kubelet does not resize read-only volumes either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageGrowth {
    /// It fills the volume: mount it as it is.
    None,
    /// ext4 smaller than the volume: refresh the device, `e2fsck -f -p`, `resize2fs`, then
    /// mount.
    OfflineBeforeMount,
    /// xfs smaller than the volume: refresh the device, mount, then `xfs_growfs` on the
    /// staging path.
    OnlineAfterMount,
}

/// How an existing `fs` of `fs_bytes` on a volume of `capacity_bytes` is grown at a
/// writable stage: only when it is smaller. (resize2fs, as mkfs.ext4, leaves out a last
/// block group too small for its own metadata, so such an ext4 stays a little smaller and
/// is looked at again at each stage, to no effect; xfs_growfs with nothing to add says so
/// and succeeds.)
pub fn growth_at_stage(fs: FsType, fs_bytes: u64, capacity_bytes: u64) -> StageGrowth {
    if fs_bytes >= capacity_bytes {
        return StageGrowth::None;
    }
    match fs {
        FsType::Ext4 => StageGrowth::OfflineBeforeMount,
        FsType::Xfs => StageGrowth::OnlineAfterMount,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_types_parse_with_ext4_the_default() {
        let cases = [
            ("", Some(FsType::Ext4)),
            ("ext4", Some(FsType::Ext4)),
            ("xfs", Some(FsType::Xfs)),
            ("XFS", None),
            ("ext3", None),
            ("btrfs", None),
            (" xfs", None),
        ];
        for (name, want) in cases {
            assert_eq!(FsType::parse(name), want, "{name:?}");
        }
        assert_eq!(FsType::Xfs.to_string(), "xfs");
        assert_eq!(FsType::Ext4.as_str(), "ext4");
    }

    #[test]
    fn the_smallest_volume_is_the_largest_minimum_asked() {
        let cases: &[(&[FsType], u64)] = &[
            (&[], MIN_VOLUME_BYTES),
            (&[FsType::Ext4], MIN_VOLUME_BYTES),
            (&[FsType::Xfs], 300 * MIB),
            (&[FsType::Ext4, FsType::Xfs], 300 * MIB),
        ];
        for (filesystems, want) in cases {
            assert_eq!(
                min_volume_bytes(filesystems.iter().copied()),
                *want,
                "{filesystems:?}"
            );
        }
        // mkfs.xfs's own bound: 314572800 bytes make an xfs, 4 KiB less do not.
        assert_eq!(XFS_MIN_VOLUME_BYTES, 314_572_800);
    }

    #[test]
    fn growth_at_stage_only_for_a_smaller_filesystem_offline_for_ext4_online_for_xfs() {
        use FsType::*;
        use StageGrowth::*;
        let cases = [
            (Ext4, 64 * MIB, 64 * MIB, None),
            (Ext4, 64 * MIB, 128 * MIB, OfflineBeforeMount),
            (Ext4, 128 * MIB, 64 * MIB, None),
            (Ext4, 1024 * MIB - 4096, 1024 * MIB, OfflineBeforeMount),
            (Xfs, 320 * MIB, 320 * MIB, None),
            (Xfs, 320 * MIB, 640 * MIB, OnlineAfterMount),
            (Xfs, 640 * MIB, 320 * MIB, None),
            (Xfs, 640 * MIB - 4096, 640 * MIB, OnlineAfterMount),
        ];
        for (fs, fs_bytes, capacity, want) in cases {
            assert_eq!(
                growth_at_stage(fs, fs_bytes, capacity),
                want,
                "{fs} of {fs_bytes} on {capacity}"
            );
        }
    }
}
