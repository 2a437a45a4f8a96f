//! Mount propagation as the host's mount table says it: `/proc/self/mountinfo` (parsed by
//! [`rekube_csi::mountinfo`], its optional fields `shared:N` and `master:N`) read for the
//! two checks the kubelet and containerd make before a volume can propagate.
//!
//! - [`make_rshared`]: the kubelet's `MakeRShared` of its root directory at start
//!   (pkg/volume/util/hostutil/hostutil_linux.go `DoMakeRShared`, `isShared`,
//!   `findMountInfo`): nothing when the directory already sits on a shared mount, else
//!   the directory is bound onto itself and made rshared, so that the volumes under it
//!   can be HostToContainer or Bidirectional.
//! - [`check_bind_propagation`]: containerd's `ensureShared` / `ensureSharedOrSlave`
//!   (internal/cri/opts/spec_linux_opts.go `WithMounts`): a Bidirectional bind mount's
//!   source must be on a shared mount, a HostToContainer one's on a shared or slave mount;
//!   else the container is not created, with containerd's message. The mount a source is
//!   on is found by the kubelet's rule ([`find_mount_info`]), not by containerd's
//!   `mount.Lookup` (the longest mount point that is a string prefix of the path, the
//!   first of equals): the two differ only for over-mounted or stacked mounts, where the
//!   kubelet's is the mount the kernel resolves the path on.
use std::path::Path;

use nix::mount::MsFlags;
use rekube_csi::mountinfo::{MountInfo, parse};

use super::spec::{BindMount, MountPropagation};
use super::syscall::{Syscall, SyscallError};

#[derive(Debug, thiserror::Error)]
pub enum MountInfoError {
    #[error("cannot find mount point for {0:?}")]
    NoMountPoint(String),
    #[error("path {path:?} is mounted on {mount_point:?} but it is not a shared mount")]
    NotShared { path: String, mount_point: String },
    #[error("path {path:?} is mounted on {mount_point:?} but it is not a shared or slave mount")]
    NotSharedOrSlave { path: String, mount_point: String },
    #[error("failed to bind-mount {path}: {source}")]
    BindMount {
        path: String,
        #[source]
        source: SyscallError,
    },
    #[error("failed to make {path} rshared: {source}")]
    MakeRShared {
        path: String,
        #[source]
        source: SyscallError,
    },
    #[error("read /proc/self/mountinfo: {0}")]
    Read(#[source] std::io::Error),
    #[error("parse /proc/self/mountinfo: {0}")]
    Parse(#[source] rekube_csi::mountinfo::MountInfoError),
}

/// `findMountInfo` (hostutil_linux.go): the mount `path` resides on, the last mountinfo
/// entry whose mount point is `path` or one of its parents (`PathWithinBase`). The kernel
/// lists a mount after the mounts it is on: the last is the top of a stack, and a mount
/// over a parent directory hides the deeper mounts listed before it.
pub fn find_mount_info<'a>(path: &Path, infos: &'a [MountInfo]) -> Option<&'a MountInfo> {
    infos
        .iter()
        .rev()
        .find(|i| path.starts_with(&i.mount_point))
}

/// The current mount table of the agent's mount namespace (the host's).
pub fn read_mountinfo() -> Result<String, MountInfoError> {
    std::fs::read_to_string("/proc/self/mountinfo").map_err(MountInfoError::Read)
}

/// hostutil's `DoMakeRShared`: when `path` is not on a shared mount (per `mountinfo`),
/// `mount --bind path path` and `mount --make-rshared path`. Returns whether it bound.
/// Idempotent: once bound, `path` is its own shared mount and a second call does nothing.
pub fn make_rshared(
    sys: &dyn Syscall,
    path: &Path,
    mountinfo: &str,
) -> Result<bool, MountInfoError> {
    let infos = parse(mountinfo).map_err(MountInfoError::Parse)?;
    let info = find_mount_info(path, &infos)
        .ok_or_else(|| MountInfoError::NoMountPoint(path.display().to_string()))?;
    if info.is_shared() {
        return Ok(false);
    }
    sys.mount(Some(path), path, None, MsFlags::MS_BIND, None)
        .map_err(|source| MountInfoError::BindMount {
            path: path.display().to_string(),
            source,
        })?;
    sys.mount(
        Some(path),
        path,
        None,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None,
    )
    .map_err(|source| MountInfoError::MakeRShared {
        path: path.display().to_string(),
        source,
    })?;
    Ok(true)
}

/// containerd's `ensureShared` (Bidirectional) and `ensureSharedOrSlave`
/// (HostToContainer) for every bind mount of a container, against the host's
/// `mountinfo`; private mounts need nothing. Sources are compared as given: resolve
/// symlinks first ([`resolved`]).
pub fn check_bind_propagation(mounts: &[BindMount], mountinfo: &str) -> Result<(), MountInfoError> {
    let infos = parse(mountinfo).map_err(MountInfoError::Parse)?;
    for m in mounts {
        if m.propagation == MountPropagation::Private {
            continue;
        }
        let path = m.source.display().to_string();
        let info = find_mount_info(&m.source, &infos)
            .ok_or_else(|| MountInfoError::NoMountPoint(path.clone()))?;
        let mount_point = info.mount_point.display().to_string();
        match m.propagation {
            MountPropagation::Bidirectional if !info.is_shared() => {
                return Err(MountInfoError::NotShared { path, mount_point });
            }
            MountPropagation::HostToContainer if !info.is_shared() && !info.is_slave() => {
                return Err(MountInfoError::NotSharedOrSlave { path, mount_point });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The mounts with their sources' symlinks resolved (containerd's
/// `ResolveSymbolicLink` before its checks); a source that cannot be resolved is kept
/// as it is, for the rootfs setup to report.
pub fn resolved(mounts: &[BindMount]) -> Vec<BindMount> {
    mounts
        .iter()
        .map(|m| BindMount {
            source: std::fs::canonicalize(&m.source).unwrap_or_else(|_| m.source.clone()),
            ..m.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::{Call, TestSyscall};

    /// A host where / is private, /var/lib/rekube a shared bind, /mnt/slave a slave and
    /// /mnt/stack two mounts stacked (the private one on top).
    const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
45 27 254:0 /var/lib/rekube /var/lib/rekube rw,relatime shared:7 - ext4 /dev/vda rw
46 45 0:50 / /var/lib/rekube/pods/u1/volumes/kubernetes.io~empty-dir/mem rw shared:9 - tmpfs tmpfs rw
47 27 0:51 / /mnt/slave rw master:3 - tmpfs tmpfs rw
48 27 0:52 / /mnt/both rw shared:12 master:3 - tmpfs tmpfs rw
49 27 0:53 / /mnt/stack rw shared:13 - tmpfs tmpfs rw
50 49 0:54 / /mnt/stack rw - tmpfs tmpfs rw
51 27 0:55 / /mnt/with\\040space rw shared:14 - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_optional_fields_and_the_mount_a_path_is_on() {
        let infos = parse(MOUNTINFO).unwrap();
        assert_eq!(infos.len(), 8);
        let on = |p: &str| {
            let i = find_mount_info(Path::new(p), &infos).unwrap();
            (
                i.mount_point.display().to_string(),
                i.is_shared(),
                i.is_slave(),
            )
        };
        assert_eq!(on("/etc"), ("/".into(), false, false));
        assert_eq!(
            on("/var/lib/rekube/pods/u1"),
            ("/var/lib/rekube".into(), true, false)
        );
        assert_eq!(
            on("/var/lib/rekube"),
            ("/var/lib/rekube".into(), true, false)
        );
        // A sibling whose name starts the same is not under the mount.
        assert_eq!(on("/var/lib/rekube2"), ("/".into(), false, false));
        assert_eq!(
            on("/var/lib/rekube/pods/u1/volumes/kubernetes.io~empty-dir/mem/x").0,
            "/var/lib/rekube/pods/u1/volumes/kubernetes.io~empty-dir/mem"
        );
        assert_eq!(on("/mnt/slave/a"), ("/mnt/slave".into(), false, true));
        assert_eq!(on("/mnt/both"), ("/mnt/both".into(), true, true));
        // The top of a stack decides.
        assert_eq!(on("/mnt/stack/x"), ("/mnt/stack".into(), false, false));
        assert_eq!(
            on("/mnt/with space/f"),
            ("/mnt/with space".into(), true, false)
        );
        assert!(find_mount_info(Path::new("/x"), &[]).is_none());
    }

    /// hostutil's findMountInfo takes the last entry whose mount point holds the path,
    /// not the deepest one: a mount over a parent directory (the private tmpfs 52 over
    /// /var/lib/rekube, mounted after the shared mounts under it) hides them, and a path
    /// beneath is on it, as the kernel resolves it.
    #[test]
    fn an_over_mount_hides_the_deeper_mounts_before_it() {
        let over = format!("{MOUNTINFO}52 27 0:56 / /var/lib/rekube rw - tmpfs tmpfs rw\n");
        let infos = parse(&over).unwrap();
        for path in [
            "/var/lib/rekube/pods/u1/volumes/kubernetes.io~empty-dir/mem/x",
            "/var/lib/rekube/pods",
            "/var/lib/rekube",
        ] {
            let info = find_mount_info(Path::new(path), &infos).unwrap();
            assert_eq!(
                (info.mount_point.as_path(), info.is_shared()),
                (Path::new("/var/lib/rekube"), false),
                "{path}"
            );
        }
        // Mounted again on top of the over-mount, the deeper path is on the newest.
        let again = format!(
            "{over}53 52 0:57 / /var/lib/rekube/pods/u1/volumes/kubernetes.io~empty-dir/mem rw shared:30 - tmpfs tmpfs rw\n"
        );
        let infos = parse(&again).unwrap();
        let info = find_mount_info(
            Path::new("/var/lib/rekube/pods/u1/volumes/kubernetes.io~empty-dir/mem/x"),
            &infos,
        )
        .unwrap();
        assert!(info.is_shared() && info.optional_fields == ["shared:30"]);
        // make_rshared sees the private over-mount: it binds.
        let sys = TestSyscall::new();
        assert!(make_rshared(&sys, Path::new("/var/lib/rekube/pods"), &over).unwrap());
        assert!(!make_rshared(&sys, Path::new("/var/lib/rekube/pods"), MOUNTINFO).unwrap());
    }

    /// containerd's checks: which propagation each kind of source mount allows, and
    /// containerd's messages.
    #[test]
    fn bind_sources_must_be_shared_or_slave_as_containerd_checks() {
        use MountPropagation::*;
        let cases: &[(&str, MountPropagation, Result<(), &str>)] = &[
            ("/srv/data", Private, Ok(())),
            (
                "/srv/data",
                HostToContainer,
                Err("path \"/srv/data\" is mounted on \"/\" but it is not a shared or slave mount"),
            ),
            (
                "/srv/data",
                Bidirectional,
                Err("path \"/srv/data\" is mounted on \"/\" but it is not a shared mount"),
            ),
            ("/var/lib/rekube/pods/u1/volumes/x", HostToContainer, Ok(())),
            ("/var/lib/rekube/pods/u1/volumes/x", Bidirectional, Ok(())),
            ("/mnt/slave/d", HostToContainer, Ok(())),
            (
                "/mnt/slave/d",
                Bidirectional,
                Err(
                    "path \"/mnt/slave/d\" is mounted on \"/mnt/slave\" but it is not a shared mount",
                ),
            ),
            ("/mnt/both", Bidirectional, Ok(())),
            (
                "/mnt/stack",
                HostToContainer,
                Err(
                    "path \"/mnt/stack\" is mounted on \"/mnt/stack\" but it is not a shared or slave mount",
                ),
            ),
        ];
        for (source, propagation, want) in cases {
            let mounts = [
                BindMount::new("/srv/other", "/other", false),
                BindMount::new(*source, "/data", false).with_propagation(*propagation),
            ];
            let got = check_bind_propagation(&mounts, MOUNTINFO).map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "{source} {propagation:?}"
            );
        }
        assert_eq!(
            check_bind_propagation(
                &[BindMount::new("/x", "/x", false).with_propagation(HostToContainer)],
                ""
            )
            .unwrap_err()
            .to_string(),
            "cannot find mount point for \"/x\""
        );
    }

    /// MakeRShared: a directory on a private mount is bound onto itself (not
    /// recursively) and made rshared; one on a shared mount is left alone, so a second
    /// start after the bind does nothing.
    #[test]
    fn make_rshared_binds_only_what_is_not_shared() {
        let sys = TestSyscall::new();
        assert!(make_rshared(&sys, Path::new("/var/lib/agent"), MOUNTINFO).unwrap());
        assert_eq!(
            sys.calls(),
            vec![
                Call::Mount {
                    source: Some("/var/lib/agent".into()),
                    target: "/var/lib/agent".into(),
                    fstype: None,
                    flags: MsFlags::MS_BIND,
                    data: None
                },
                Call::Mount {
                    source: Some("/var/lib/agent".into()),
                    target: "/var/lib/agent".into(),
                    fstype: None,
                    flags: MsFlags::MS_SHARED | MsFlags::MS_REC,
                    data: None
                },
            ]
        );
        // After the bind, the directory is its own shared mount.
        let after = format!(
            "{MOUNTINFO}60 27 254:0 /var/lib/agent /var/lib/agent rw shared:20 - ext4 /dev/vda rw\n"
        );
        let sys = TestSyscall::new();
        assert!(!make_rshared(&sys, Path::new("/var/lib/agent"), &after).unwrap());
        assert!(!make_rshared(&sys, Path::new("/var/lib/rekube"), MOUNTINFO).unwrap());
        assert!(sys.calls().is_empty());
        // Errors name the step and the path.
        let sys = TestSyscall::new().failing("mount", nix::errno::Errno::EPERM);
        let err = make_rshared(&sys, Path::new("/var/lib/agent"), MOUNTINFO).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to bind-mount /var/lib/agent: mount "),
            "{err}"
        );
        assert_eq!(
            make_rshared(&TestSyscall::new(), Path::new("/x"), "")
                .unwrap_err()
                .to_string(),
            "cannot find mount point for \"/x\""
        );
    }

    /// The real kernel: a private directory becomes its own rshared mount, a second
    /// call changes nothing, and the bind is undone after (as root).
    #[test]
    fn make_rshared_for_real_as_root() {
        if !nix::unistd::geteuid().is_root() {
            rekube_crds::testing::missing_prerequisite(
                "make_rshared_for_real_as_root needs root (mount)",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap();
        let sys = crate::runtime::syscall::LinuxSyscall;
        let mountinfo = read_mountinfo().unwrap();
        let on_shared = find_mount_info(&path, &parse(&mountinfo).unwrap())
            .unwrap()
            .is_shared();
        let bound = make_rshared(&sys, &path, &mountinfo).unwrap();
        assert_eq!(bound, !on_shared);
        let after = read_mountinfo().unwrap();
        let infos = parse(&after).unwrap();
        assert!(find_mount_info(&path, &infos).unwrap().is_shared());
        // Idempotent: nothing more is mounted.
        assert!(!make_rshared(&sys, &path, &after).unwrap());
        let count = |text: &str| {
            parse(text)
                .unwrap()
                .iter()
                .filter(|i| i.mount_point == path)
                .count()
        };
        assert_eq!(count(&read_mountinfo().unwrap()), usize::from(bound));
        if bound {
            sys.umount2(&path, nix::mount::MntFlags::empty()).unwrap();
        }
        assert_eq!(count(&read_mountinfo().unwrap()), 0);
    }
}
