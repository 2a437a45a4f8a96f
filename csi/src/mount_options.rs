//! Mount flags from a volume capability (`mount_flags`, a StorageClass's `mountOptions`),
//! split the way mount(8) does: the generic ones become `MS_*` flags, the rest go to the
//! filesystem as its data string. Options that would change what the driver's mount does
//! (`bind`, `remount`, `loop`, ...) are refused.

use nix::mount::MsFlags;

/// `mount_flags` split into flags and filesystem data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Filesystem-specific options (ext4's `discard`, `errors=remount-ro`, ...).
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    /// The data string for mount(2), or none.
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountOptionError {
    #[error("mount option {0:?}: not allowed (the driver decides how it mounts)")]
    NotAllowed(String),
    #[error("mount option {0:?}: empty or with whitespace")]
    Malformed(String),
}

/// Splits `options` (each may hold several, comma-separated).
pub fn parse(options: &[String]) -> Result<MountOptions, MountOptionError> {
    let mut out = MountOptions::default();
    for option in options.iter().flat_map(|o| o.split(',')) {
        if option.is_empty() || option.chars().any(|c| c.is_whitespace() || c == '\0') {
            return Err(MountOptionError::Malformed(option.to_string()));
        }
        let (set, clear) = match option {
            "defaults" | "async" | "rw" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "bind" | "rbind" | "remount" | "move" | "loop" | "shared" | "rshared" | "slave"
            | "rslave" | "private" | "rprivate" | "unbindable" | "runbindable" => {
                return Err(MountOptionError::NotAllowed(option.to_string()));
            }
            _ if option.starts_with("loop=") || option.starts_with("offset=") => {
                return Err(MountOptionError::NotAllowed(option.to_string()));
            }
            data => {
                out.data.push(data.to_string());
                continue;
            }
        };
        out.flags = (out.flags | set) & !clear;
    }
    Ok(out)
}

/// The flags a bind mount can take on its remount (`MS_BIND | MS_REMOUNT | ...`): the
/// per-mount ones; filesystem data and superblock flags were applied when staging.
pub fn per_mount_flags(flags: MsFlags) -> MsFlags {
    flags
        & (MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_NOATIME
            | MsFlags::MS_NODIRATIME
            | MsFlags::MS_RELATIME
            | MsFlags::MS_STRICTATIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn generic_options_become_flags_and_the_rest_data() {
        let got = parse(&s(&["noatime,nodev", "discard", "errors=remount-ro", "ro"])).unwrap();
        assert_eq!(
            got.flags,
            MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert_eq!(
            got.data_string().as_deref(),
            Some("discard,errors=remount-ro")
        );
        assert_eq!(parse(&[]).unwrap(), MountOptions::default());
        assert_eq!(parse(&[]).unwrap().data_string(), None);
    }

    #[test]
    fn later_options_override_earlier_ones() {
        assert_eq!(
            parse(&s(&["noexec", "exec"])).unwrap().flags,
            MsFlags::empty()
        );
        assert_eq!(parse(&s(&["rw", "ro"])).unwrap().flags, MsFlags::MS_RDONLY);
    }

    #[test]
    fn options_that_change_the_mount_are_refused() {
        for bad in ["bind", "remount", "loop=/dev/loop0", "rshared"] {
            assert_eq!(
                parse(&s(&[bad])),
                Err(MountOptionError::NotAllowed(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&s(&["noatime,,nodev"])).unwrap_err().to_string(),
            "mount option \"\": empty or with whitespace"
        );
    }

    #[test]
    fn bind_remounts_keep_per_mount_flags_only() {
        assert_eq!(
            per_mount_flags(MsFlags::MS_RDONLY | MsFlags::MS_SYNCHRONOUS | MsFlags::MS_NOEXEC),
            MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC
        );
    }
}
