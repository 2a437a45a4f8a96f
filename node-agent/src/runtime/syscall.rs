//! The kernel behind a trait, as youki's `crates/libcontainer/src/syscall/` (`syscall.rs`,
//! `linux.rs`, `test.rs`): every mount, namespace, identity and capability change a
//! container's setup makes goes through [`Syscall`]. [`LinuxSyscall`] makes the real
//! calls (nix, caps, prctl); [`TestSyscall`] records them, so the order and the arguments
//! of the rootfs and process setup are unit-tested without root.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

/// A failed call into the kernel: the operation, its object and the cause.
#[derive(Debug, thiserror::Error)]
pub enum SyscallError {
    #[error("{op} {object}: {errno}")]
    Errno {
        op: &'static str,
        object: String,
        errno: Errno,
    },
    #[error("{op} {object}: {source}")]
    Io {
        op: &'static str,
        object: String,
        #[source]
        source: std::io::Error,
    },
    #[error("set {set:?} capabilities: {message}")]
    Caps { set: CapSet, message: String },
}

impl SyscallError {
    /// The errno behind the failure, when there is one (EPERM decides fallbacks).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SyscallError::Errno { errno, .. } => Some(*errno),
            SyscallError::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            SyscallError::Caps { .. } => None,
        }
    }
}

pub type Result<T, E = SyscallError> = std::result::Result<T, E>;

/// What a path is, for choosing how to mask or bind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
}

/// The kernel operations a container's setup needs (youki's `Syscall`).
pub trait Syscall: Send + Sync {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()>;
    fn chdir(&self, path: &Path) -> Result<()>;
    /// A directory opened (read-only, close-on-exec) to come back to with
    /// [`Syscall::fchdir`], as runc's pivotRoot keeps the old root.
    fn open_dir(&self, path: &Path) -> Result<OwnedFd>;
    fn fchdir(&self, fd: BorrowedFd<'_>) -> Result<()>;
    fn sethostname(&self, name: &str) -> Result<()>;
    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> Result<()>;
    fn unshare(&self, flags: CloneFlags) -> Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()>;
    fn symlink(&self, original: &Path, link: &Path) -> Result<()>;
    /// Gives `path` (not followed if a symlink: lchown) to `uid` and `gid`.
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()>;
    /// `mkdir -p`, for mount points the image lacks.
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// An empty file (and its parents), for file bind-mount targets.
    fn create_file(&self, path: &Path) -> Result<()>;
    /// Whether `path` exists and is a directory or something else (follows symlinks).
    fn file_kind(&self, path: &Path) -> Result<Option<FileKind>>;
    /// Replaces one capability set (effective, permitted, inheritable, ambient); for the
    /// bounding set, drops every capability not in `caps`.
    fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> Result<()>;
    fn set_keep_caps(&self, keep: bool) -> Result<()>;
    fn set_no_new_privs(&self) -> Result<()>;
    fn setgroups(&self, gids: &[Gid]) -> Result<()>;
    fn setgid(&self, gid: Gid) -> Result<()>;
    fn setuid(&self, uid: Uid) -> Result<()>;
}

fn errno<T>(op: &'static str, object: impl FnOnce() -> String, r: nix::Result<T>) -> Result<T> {
    r.map_err(|errno| SyscallError::Errno {
        op,
        object: object(),
        errno,
    })
}

/// The real kernel (nix for the calls, the caps crate for capability sets).
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        errno(
            "mount",
            || {
                format!(
                    "{} on {} (type {}, flags {flags:?})",
                    source.map_or("none".into(), |s| s.display().to_string()),
                    target.display(),
                    fstype.unwrap_or("none"),
                )
            },
            nix::mount::mount(source, target, fstype, flags, data),
        )
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        errno(
            "unmount",
            || target.display().to_string(),
            nix::mount::umount2(target, flags),
        )
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        errno(
            "pivot_root",
            || format!("{} (old root {})", new_root.display(), put_old.display()),
            nix::unistd::pivot_root(new_root, put_old),
        )
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        errno(
            "chdir",
            || path.display().to_string(),
            nix::unistd::chdir(path),
        )
    }

    fn open_dir(&self, path: &Path) -> Result<OwnedFd> {
        errno(
            "open",
            || path.display().to_string(),
            nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            ),
        )
    }

    fn fchdir(&self, fd: BorrowedFd<'_>) -> Result<()> {
        errno(
            "fchdir",
            || format!("fd {}", fd.as_raw_fd()),
            nix::unistd::fchdir(fd),
        )
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        errno(
            "sethostname",
            || name.to_string(),
            nix::unistd::sethostname(name),
        )
    }

    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> Result<()> {
        // SAFETY: the caller owns `fd` for the duration of the call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        errno(
            "setns",
            || format!("{nstype:?}"),
            nix::sched::setns(fd, nstype),
        )
    }

    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        errno(
            "unshare",
            || format!("{flags:?}"),
            nix::sched::unshare(flags),
        )
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        errno(
            "mknod",
            || path.display().to_string(),
            nix::sys::stat::mknod(path, kind, perm, dev),
        )
    }

    fn symlink(&self, original: &Path, link: &Path) -> Result<()> {
        std::os::unix::fs::symlink(original, link).map_err(|source| SyscallError::Io {
            op: "symlink",
            object: format!("{} -> {}", link.display(), original.display()),
            source,
        })
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| SyscallError::Io {
            op: "chown",
            object: format!("{} to {uid}:{gid}", path.display()),
            source,
        })
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(|source| SyscallError::Io {
            op: "create directory",
            object: path.display().to_string(),
            source,
        })
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|source| SyscallError::Io {
                op: "create file",
                object: path.display().to_string(),
                source,
            })
    }

    fn file_kind(&self, path: &Path) -> Result<Option<FileKind>> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(Some(FileKind::Dir)),
            Ok(_) => Ok(Some(FileKind::File)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SyscallError::Io {
                op: "stat",
                object: path.display().to_string(),
                source,
            }),
        }
    }

    fn set_capabilities(&self, set: CapSet, wanted: &CapsHashSet) -> Result<()> {
        let fail = |e: caps::errors::CapsError| SyscallError::Caps {
            set,
            message: e.to_string(),
        };
        match set {
            CapSet::Bounding => {
                for cap in caps::all() {
                    if !wanted.contains(&cap) {
                        // Capabilities the running kernel does not know cannot be dropped
                        // (EINVAL); they cannot be used either.
                        match caps::drop(None, CapSet::Bounding, cap) {
                            Ok(()) => {}
                            Err(_)
                                if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) => {
                            }
                            Err(e) => return Err(fail(e)),
                        }
                    }
                }
                Ok(())
            }
            CapSet::Ambient => {
                caps::clear(None, CapSet::Ambient).map_err(fail)?;
                for cap in wanted {
                    caps::raise(None, CapSet::Ambient, *cap).map_err(fail)?;
                }
                Ok(())
            }
            _ => caps::set(None, set, wanted).map_err(fail),
        }
    }

    fn set_keep_caps(&self, keep: bool) -> Result<()> {
        errno(
            "prctl",
            || "PR_SET_KEEPCAPS".into(),
            nix::sys::prctl::set_keepcaps(keep),
        )
    }

    fn set_no_new_privs(&self) -> Result<()> {
        errno(
            "prctl",
            || "PR_SET_NO_NEW_PRIVS".into(),
            nix::sys::prctl::set_no_new_privs(),
        )
    }

    fn setgroups(&self, gids: &[Gid]) -> Result<()> {
        errno(
            "setgroups",
            || format!("{gids:?}"),
            nix::unistd::setgroups(gids),
        )
    }

    fn setgid(&self, gid: Gid) -> Result<()> {
        errno(
            "setgid",
            || gid.to_string(),
            nix::unistd::setresgid(gid, gid, gid),
        )
    }

    fn setuid(&self, uid: Uid) -> Result<()> {
        errno(
            "setuid",
            || uid.to_string(),
            nix::unistd::setresuid(uid, uid, uid),
        )
    }
}

/// The name of a capability set (caps' `CapSet` has no equality).
pub fn cap_set_name(set: CapSet) -> &'static str {
    match set {
        CapSet::Ambient => "ambient",
        CapSet::Bounding => "bounding",
        CapSet::Effective => "effective",
        CapSet::Inheritable => "inheritable",
        CapSet::Permitted => "permitted",
    }
}

/// One recorded call of [`TestSyscall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount2 {
        target: PathBuf,
        flags: MntFlags,
    },
    PivotRoot {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    Chdir(PathBuf),
    OpenDir(PathBuf),
    /// fchdir to the directory [`Call::OpenDir`] opened.
    Fchdir(PathBuf),
    Sethostname(String),
    Setns {
        fd: RawFd,
        nstype: CloneFlags,
    },
    Unshare(CloneFlags),
    Mknod {
        path: PathBuf,
        kind: SFlag,
        perm: Mode,
        dev: u64,
    },
    Symlink {
        original: PathBuf,
        link: PathBuf,
    },
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    CreateDirAll(PathBuf),
    CreateFile(PathBuf),
    SetCapabilities {
        /// "bounding", "effective", "permitted", "inheritable" or "ambient".
        set: &'static str,
        caps: Vec<Capability>,
    },
    SetKeepCaps(bool),
    SetNoNewPrivs,
    Setgroups(Vec<u32>),
    Setgid(u32),
    Setuid(u32),
}

impl Call {
    /// A short name of the call ("mount", "pivot_root"), to assert orders.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Mount { .. } => "mount",
            Call::Umount2 { .. } => "umount2",
            Call::PivotRoot { .. } => "pivot_root",
            Call::Chdir(_) => "chdir",
            Call::OpenDir(_) => "open_dir",
            Call::Fchdir(_) => "fchdir",
            Call::Sethostname(_) => "sethostname",
            Call::Setns { .. } => "setns",
            Call::Unshare(_) => "unshare",
            Call::Mknod { .. } => "mknod",
            Call::Symlink { .. } => "symlink",
            Call::Chown { .. } => "chown",
            Call::CreateDirAll(_) => "create_dir_all",
            Call::CreateFile(_) => "create_file",
            Call::SetCapabilities { .. } => "set_capabilities",
            Call::SetKeepCaps(_) => "set_keep_caps",
            Call::SetNoNewPrivs => "set_no_new_privs",
            Call::Setgroups(_) => "setgroups",
            Call::Setgid(_) => "setgid",
            Call::Setuid(_) => "setuid",
        }
    }
}

/// Records every call and answers `file_kind` from a table; `fail` makes calls with a
/// given name fail with an errno (EPERM for mknod exercises the device bind fallback).
#[derive(Debug, Default)]
pub struct TestSyscall {
    calls: Mutex<Vec<Call>>,
    /// The paths [`Syscall::open_dir`] opened, by descriptor.
    dirs: Mutex<HashMap<RawFd, PathBuf>>,
    files: Mutex<HashMap<PathBuf, FileKind>>,
    failing: Mutex<HashSet<(&'static str, i32)>>,
}

impl TestSyscall {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that `path` exists with the given kind (everything else is missing).
    pub fn with_file(self, path: impl Into<PathBuf>, kind: FileKind) -> Self {
        self.files.lock().unwrap().insert(path.into(), kind);
        self
    }

    /// Makes every call named `name` fail with `errno`.
    pub fn failing(self, name: &'static str, errno: Errno) -> Self {
        self.failing.lock().unwrap().insert((name, errno as i32));
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The names of the calls in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.calls().iter().map(Call::name).collect()
    }

    /// The targets of the mount calls, in order.
    pub fn mount_targets(&self) -> Vec<PathBuf> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: Call) -> Result<()> {
        let name = call.name();
        let object = format!("{call:?}");
        self.calls.lock().unwrap().push(call);
        let failing = self.failing.lock().unwrap();
        match failing.iter().find(|(n, _)| *n == name) {
            Some((_, e)) => Err(SyscallError::Errno {
                op: name,
                object,
                errno: Errno::from_raw(*e),
            }),
            None => Ok(()),
        }
    }
}

impl Syscall for TestSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        self.record(Call::Umount2 {
            target: target.to_path_buf(),
            flags,
        })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        self.record(Call::PivotRoot {
            new_root: new_root.to_path_buf(),
            put_old: put_old.to_path_buf(),
        })
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        self.record(Call::Chdir(path.to_path_buf()))
    }

    /// Records the call and opens `/` for real (an fd to hand back), remembering which
    /// path it stands for.
    fn open_dir(&self, path: &Path) -> Result<OwnedFd> {
        self.record(Call::OpenDir(path.to_path_buf()))?;
        let fd: OwnedFd = std::fs::File::open("/")
            .map_err(|source| SyscallError::Io {
                op: "open",
                object: "/".into(),
                source,
            })?
            .into();
        self.dirs
            .lock()
            .unwrap()
            .insert(fd.as_raw_fd(), path.to_path_buf());
        Ok(fd)
    }

    fn fchdir(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let path = self.dirs.lock().unwrap().get(&fd.as_raw_fd()).cloned();
        self.record(Call::Fchdir(
            path.unwrap_or_else(|| format!("fd {}", fd.as_raw_fd()).into()),
        ))
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        self.record(Call::Sethostname(name.to_string()))
    }

    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> Result<()> {
        self.record(Call::Setns { fd, nstype })
    }

    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        self.record(Call::Unshare(flags))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        self.record(Call::Mknod {
            path: path.to_path_buf(),
            kind,
            perm,
            dev,
        })
    }

    fn symlink(&self, original: &Path, link: &Path) -> Result<()> {
        self.record(Call::Symlink {
            original: original.to_path_buf(),
            link: link.to_path_buf(),
        })
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        self.record(Call::Chown {
            path: path.to_path_buf(),
            uid,
            gid,
        })
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.record(Call::CreateDirAll(path.to_path_buf()))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        self.record(Call::CreateFile(path.to_path_buf()))
    }

    fn file_kind(&self, path: &Path) -> Result<Option<FileKind>> {
        Ok(self.files.lock().unwrap().get(path).copied())
    }

    fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> Result<()> {
        let mut caps: Vec<Capability> = caps.iter().copied().collect();
        caps.sort_by_key(|c| c.index());
        self.record(Call::SetCapabilities {
            set: cap_set_name(set),
            caps,
        })
    }

    fn set_keep_caps(&self, keep: bool) -> Result<()> {
        self.record(Call::SetKeepCaps(keep))
    }

    fn set_no_new_privs(&self) -> Result<()> {
        self.record(Call::SetNoNewPrivs)
    }

    fn setgroups(&self, gids: &[Gid]) -> Result<()> {
        self.record(Call::Setgroups(gids.iter().map(|g| g.as_raw()).collect()))
    }

    fn setgid(&self, gid: Gid) -> Result<()> {
        self.record(Call::Setgid(gid.as_raw()))
    }

    fn setuid(&self, uid: Uid) -> Result<()> {
        self.record(Call::Setuid(uid.as_raw()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_syscall_records_calls_in_order() {
        let sys = TestSyscall::new();
        sys.chdir(Path::new("/rootfs")).unwrap();
        sys.pivot_root(Path::new("."), Path::new(".")).unwrap();
        sys.umount2(Path::new("."), MntFlags::MNT_DETACH).unwrap();
        assert_eq!(sys.names(), vec!["chdir", "pivot_root", "umount2"]);
        assert_eq!(
            sys.calls()[2],
            Call::Umount2 {
                target: ".".into(),
                flags: MntFlags::MNT_DETACH
            }
        );
    }

    #[test]
    fn test_syscall_fails_named_calls_and_answers_file_kinds() {
        let sys = TestSyscall::new()
            .failing("mknod", Errno::EPERM)
            .with_file("/proc/kcore", FileKind::File);
        let err = sys
            .mknod(Path::new("/dev/null"), SFlag::S_IFCHR, Mode::empty(), 0)
            .unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EPERM));
        assert!(err.to_string().starts_with("mknod "), "{err}");
        assert_eq!(
            sys.file_kind(Path::new("/proc/kcore")).unwrap(),
            Some(FileKind::File)
        );
        assert_eq!(sys.file_kind(Path::new("/proc/acpi")).unwrap(), None);
        // The failed call is still recorded.
        assert_eq!(sys.names(), vec!["mknod"]);
    }

    #[test]
    fn linux_syscall_reports_the_object_and_cause() {
        let err = LinuxSyscall
            .chdir(Path::new("/nonexistent/rekube"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "chdir /nonexistent/rekube: ENOENT: No such file or directory"
        );
        assert_eq!(
            LinuxSyscall.file_kind(Path::new("/proc")).unwrap(),
            Some(FileKind::Dir)
        );
    }
}
