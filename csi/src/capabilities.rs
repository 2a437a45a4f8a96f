//! Which volume capabilities (access type and access mode) each kind of volume supports.
//!
//! - `local-disk`: mount (`fs_type` empty or `ext4`: ext4; `xfs`: xfs; [`FsType`]) or
//!   block; single-node access modes only (SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY,
//!   SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER): neither filesystem may be
//!   mounted by two kernels.
//! - `hostpath`: mount only, no `fs_type` (it is a directory); every access mode. A
//!   MULTI_NODE_* claim (ReadWriteMany) is shared by the pods of the one node that holds
//!   the directory, as rancher's local-path-provisioner does: the volume's topology keeps
//!   every user on that node.

use crate::csi::VolumeCapability;
pub use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessMode, AccessType};
use crate::filesystem::FsType;
use crate::parameters::VolumeKind;

/// What a capability asks of the node: a filesystem (a local-disk volume's ext4 or xfs; a
/// hostpath directory has none of its own) with its mount flags, or a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Mount {
        fs: Option<FsType>,
        mount_flags: Vec<String>,
    },
    Block,
}

impl Access {
    /// The filesystem a mount asks for (none for block access or a hostpath directory).
    pub fn fs(&self) -> Option<FsType> {
        match self {
            Access::Mount { fs, .. } => *fs,
            Access::Block => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("volume capability: access_type is missing")]
    NoAccessType,
    #[error("volume capability: access_mode is missing")]
    NoAccessMode,
    #[error("volume capability: access mode {0} is unknown")]
    UnknownMode(i32),
    #[error("volume capability: {kind} volumes do not support access mode {mode}")]
    Mode {
        kind: &'static str,
        mode: &'static str,
    },
    #[error("volume capability: {kind} volumes do not support block access")]
    Block { kind: &'static str },
    #[error("volume capability: {kind} volumes do not support fs_type {fs_type:?} ({supported})")]
    FsType {
        kind: &'static str,
        fs_type: String,
        supported: &'static str,
    },
}

/// The access mode of `capability`.
pub fn access_mode(capability: &VolumeCapability) -> Result<Mode, CapabilityError> {
    let mode = capability
        .access_mode
        .as_ref()
        .map(|m: &AccessMode| m.mode)
        .ok_or(CapabilityError::NoAccessMode)?;
    match Mode::try_from(mode) {
        Ok(Mode::Unknown) | Err(_) => Err(CapabilityError::UnknownMode(mode)),
        Ok(mode) => Ok(mode),
    }
}

/// Checks `capability` against `kind`: what the node must provide, or why not.
pub fn check(kind: VolumeKind, capability: &VolumeCapability) -> Result<Access, CapabilityError> {
    let mode = access_mode(capability)?;
    let name = kind.as_str();
    let single_node = matches!(
        mode,
        Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter
    );
    if kind == VolumeKind::LocalDisk && !single_node {
        return Err(CapabilityError::Mode {
            kind: name,
            mode: mode.as_str_name(),
        });
    }
    match capability
        .access_type
        .as_ref()
        .ok_or(CapabilityError::NoAccessType)?
    {
        AccessType::Block(_) if kind == VolumeKind::HostPath => {
            Err(CapabilityError::Block { kind: name })
        }
        AccessType::Block(_) => Ok(Access::Block),
        AccessType::Mount(mount) => {
            let refused = |supported| CapabilityError::FsType {
                kind: name,
                fs_type: mount.fs_type.clone(),
                supported,
            };
            let fs = match kind {
                VolumeKind::LocalDisk => Some(
                    FsType::parse(&mount.fs_type)
                        .ok_or_else(|| refused("they take ext4, the default, or xfs"))?,
                ),
                VolumeKind::HostPath if mount.fs_type.is_empty() => None,
                VolumeKind::HostPath => {
                    return Err(refused("a directory has no filesystem of its own"));
                }
            };
            Ok(Access::Mount {
                fs,
                mount_flags: mount.mount_flags.clone(),
            })
        }
    }
}

/// Whether the mode allows one writer only, on one path (SINGLE_NODE_SINGLE_WRITER).
pub fn single_writer(mode: Mode) -> bool {
    mode == Mode::SingleNodeSingleWriter
}

/// Whether every publication of the mode is read-only.
pub fn read_only_mode(mode: Mode) -> bool {
    matches!(mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
}

#[cfg(test)]
pub(crate) fn capability(mode: Mode, access: Option<AccessType>) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: access,
    }
}

#[cfg(test)]
pub(crate) fn mount(fs_type: &str) -> Option<AccessType> {
    Some(AccessType::Mount(
        crate::csi::volume_capability::MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        },
    ))
}

#[cfg(test)]
pub(crate) fn block() -> Option<AccessType> {
    Some(AccessType::Block(Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_disk_takes_single_node_modes_mount_ext4_or_xfs_or_block() {
        use VolumeKind::*;
        let m = |fs| Access::Mount {
            fs,
            mount_flags: vec![],
        };
        let ext4 = || m(Some(FsType::Ext4));
        let cases: Vec<(VolumeKind, VolumeCapability, Result<Access, &str>)> = vec![
            (
                LocalDisk,
                capability(Mode::SingleNodeWriter, mount("")),
                Ok(ext4()),
            ),
            (
                LocalDisk,
                capability(Mode::SingleNodeSingleWriter, mount("ext4")),
                Ok(ext4()),
            ),
            (
                LocalDisk,
                capability(Mode::SingleNodeMultiWriter, mount("xfs")),
                Ok(m(Some(FsType::Xfs))),
            ),
            (
                LocalDisk,
                capability(Mode::SingleNodeReaderOnly, block()),
                Ok(Access::Block),
            ),
            (
                LocalDisk,
                capability(Mode::SingleNodeMultiWriter, block()),
                Ok(Access::Block),
            ),
            (
                LocalDisk,
                capability(Mode::MultiNodeMultiWriter, mount("")),
                Err(
                    "volume capability: local-disk volumes do not support access mode MULTI_NODE_MULTI_WRITER",
                ),
            ),
            (
                LocalDisk,
                capability(Mode::SingleNodeWriter, mount("btrfs")),
                Err(
                    "volume capability: local-disk volumes do not support fs_type \"btrfs\" (they take ext4, the default, or xfs)",
                ),
            ),
            (
                LocalDisk,
                capability(Mode::SingleNodeWriter, mount("ext3")),
                Err(
                    "volume capability: local-disk volumes do not support fs_type \"ext3\" (they take ext4, the default, or xfs)",
                ),
            ),
            (
                HostPath,
                capability(Mode::MultiNodeMultiWriter, mount("")),
                Ok(m(None)),
            ),
            (
                HostPath,
                capability(Mode::MultiNodeReaderOnly, mount("")),
                Ok(m(None)),
            ),
            (
                HostPath,
                capability(Mode::SingleNodeWriter, block()),
                Err("volume capability: hostpath volumes do not support block access"),
            ),
            (
                HostPath,
                capability(Mode::SingleNodeWriter, mount("ext4")),
                Err(
                    "volume capability: hostpath volumes do not support fs_type \"ext4\" (a directory has no filesystem of its own)",
                ),
            ),
            (
                LocalDisk,
                capability(Mode::SingleNodeWriter, None),
                Err("volume capability: access_type is missing"),
            ),
            (
                LocalDisk,
                capability(Mode::Unknown, mount("")),
                Err("volume capability: access mode 0 is unknown"),
            ),
            (
                LocalDisk,
                VolumeCapability {
                    access_mode: None,
                    access_type: mount(""),
                },
                Err("volume capability: access_mode is missing"),
            ),
        ];
        for (kind, cap, want) in cases {
            let got = check(kind, &cap).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(String::from), "{kind:?} {cap:?}");
        }
    }

    #[test]
    fn mount_flags_are_carried_through() {
        let mut cap = capability(Mode::SingleNodeWriter, mount(""));
        if let Some(AccessType::Mount(m)) = cap.access_type.as_mut() {
            m.mount_flags = vec!["noatime".into()];
        }
        assert_eq!(
            check(VolumeKind::LocalDisk, &cap),
            Ok(Access::Mount {
                fs: Some(FsType::Ext4),
                mount_flags: vec!["noatime".into()]
            })
        );
    }

    #[test]
    fn modes_classify() {
        assert!(single_writer(Mode::SingleNodeSingleWriter));
        assert!(!single_writer(Mode::SingleNodeWriter));
        assert!(read_only_mode(Mode::SingleNodeReaderOnly));
        assert!(!read_only_mode(Mode::SingleNodeMultiWriter));
    }
}
