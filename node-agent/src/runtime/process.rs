//! Starting a process inside a container: the fork, the child's setup and the pipes that
//! synchronise it with the runtime. Follows runc's `libcontainer/standard_init_linux.go`
//! and `init_linux.go` (`finalizeNamespace`: bounding set, keep-caps, user, cwd, caps,
//! no_new_privs, wait for start, exec), runc's `setns_init_linux.go` for exec into a
//! running container, and youki's `process/container_init_process.rs`.
//!
//! The order, written down as youki asks:
//! 1. parent: the PID namespace is chosen on the forking thread (`unshare(CLONE_NEWPID)`
//!    or `setns` into the sandbox's), so that the child of `fork` is PID 1 of a new
//!    namespace, or a member of the pod's, while staying the runtime's direct child (no
//!    double fork, no subreaper); the thread's namespace is restored right after;
//! 2. parent: puts the child's pid into the container cgroup, then releases it through the
//!    sync pipe, so that everything the child does is accounted;
//! 3. child: joins or creates the other namespaces, assembles the rootfs in a new mount
//!    namespace, pivots, drops to the user and capabilities, sets no_new_privs, reports
//!    ready, waits for start, execs. Any failure is written to the error pipe; a
//!    close-on-exec error pipe reaching end of file means exec succeeded.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::rootfs::{self, RootfsError, RootfsPlan};
use super::spec::UserSpec;
use super::syscall::{LinuxSyscall, Syscall, SyscallError};

/// Errors of the child's setup, reported through the error pipe.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("exec {0}: executable file not found in $PATH")]
    NotFound(String),
    #[error("exec {path}: {errno}")]
    Exec { path: String, errno: Errno },
    #[error("no command to run")]
    NoArgs,
}

/// The process part of a container: who it runs as and what it runs.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub user: UserSpec,
    /// Bounding, effective and permitted sets (inheritable and ambient are empty, as
    /// containerd's CRI sets them since CVE-2022-24769).
    pub capabilities: Vec<Capability>,
    pub no_new_privs: bool,
    pub cwd: PathBuf,
    pub args: Vec<String>,
    /// `NAME=value`.
    pub env: Vec<String>,
}

/// What the child does between fork and exec.
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// Namespaces to join, in order (for exec: ipc, uts, net, then mnt).
    pub joins: Vec<(RawFd, CloneFlags)>,
    /// Namespaces to create (mount, and uts/ipc/net for a container without a sandbox).
    pub unshare: CloneFlags,
    /// Set in a new UTS namespace.
    pub hostname: Option<String>,
    /// `None` for exec into a running container (its mount namespace is joined).
    pub rootfs: Option<RootfsPlan>,
    pub process: ProcessPlan,
}

/// The child's setup, from namespaces to no_new_privs, through `sys` (so that the order
/// is unit-tested with `TestSyscall`).
pub fn init_container(sys: &dyn Syscall, plan: &InitPlan) -> Result<(), InitError> {
    for (fd, ns) in &plan.joins {
        sys.setns(*fd, *ns)?;
    }
    if !plan.unshare.is_empty() {
        sys.unshare(plan.unshare)?;
    }
    if let Some(h) = &plan.hostname {
        sys.sethostname(h)?;
    }
    if let Some(r) = &plan.rootfs {
        rootfs::prepare_rootfs(sys, r)?;
        rootfs::pivot_rootfs(sys, &r.root)?;
        rootfs::finalize_rootfs(sys, r)?;
    }
    finalize_process(sys, &plan.process)
}

/// runc's `finalizeNamespace`, then no_new_privs: the bounding set is cut while still
/// root, capabilities are kept across the user change, then set.
pub fn finalize_process(sys: &dyn Syscall, p: &ProcessPlan) -> Result<(), InitError> {
    let caps: CapsHashSet = p.capabilities.iter().copied().collect();
    sys.set_capabilities(CapSet::Bounding, &caps)?;
    sys.set_keep_caps(true)?;
    let groups: Vec<Gid> = p
        .user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    sys.setgroups(&groups)?;
    sys.setgid(Gid::from_raw(p.user.gid))?;
    sys.setuid(Uid::from_raw(p.user.uid))?;
    sys.set_keep_caps(false)?;
    // After the user change, so that the directory is checked with the user's rights.
    sys.chdir(&p.cwd)?;
    sys.set_capabilities(CapSet::Effective, &caps)?;
    sys.set_capabilities(CapSet::Permitted, &caps)?;
    sys.set_capabilities(CapSet::Inheritable, &CapsHashSet::new())?;
    sys.set_capabilities(CapSet::Ambient, &CapsHashSet::new())?;
    if p.no_new_privs {
        sys.set_no_new_privs()?;
    }
    Ok(())
}

/// The executable for `arg0`: as is when it has a `/`, else the first executable file
/// named so in `$PATH` (runc's `exec.LookPath` in the container).
pub fn find_executable(arg0: &str, path_env: Option<&str>) -> Result<PathBuf, InitError> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = path_env.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        let is_file = std::fs::metadata(&candidate)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if is_file && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
    }
    Err(InitError::NotFound(arg0.to_string()))
}

/// The file descriptors a child needs, all above stdio in the parent.
pub struct ChildFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Parent → child: `c` once the child is in its cgroup, then `s` to start.
    pub sync_read: OwnedFd,
    /// Child → parent: `R` when ready, `E<message>` on failure; closed by exec.
    pub report_write: OwnedFd,
    /// Namespace files the plan joins.
    pub ns: Vec<OwnedFd>,
    /// Wait for `s` before exec (create/start); exec into a running container does not.
    pub wait_start: bool,
}

/// How the forking thread places its child in a PID namespace.
pub enum PidNamespace<'a> {
    /// The thread's own (hostPID, or a container's when it is the pod's holder).
    Inherit,
    /// A new one: the child is its PID 1.
    New,
    /// An existing one (the pod's shared namespace, a container's for exec).
    Join(BorrowedFd<'a>),
}

/// A pipe whose both ends are close-on-exec and above stdio.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd` moved to a number ≥ 3 (so that dup2 onto 0, 1, 2 in the child cannot clobber it).
pub fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    let new = nix::fcntl::fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(std::io::Error::from)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Opens a file read-only, close-on-exec, above stdio (namespace files, /dev/null).
pub fn open_fd(path: &Path, flags: OFlag) -> std::io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("open {}: {e}", path.display()),
        )
    })?;
    above_stdio(fd)
}

/// `pidfd_open(2)`: a descriptor that becomes readable when the process exits, and
/// through which it is signalled without pid-reuse races.
pub fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`; ESRCH (already exited) is not an error.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> std::io::Result<()> {
    // SAFETY: plain syscall; a null siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Restores the forking thread's PID namespace for children when dropped.
struct PidNsGuard(Option<OwnedFd>);

impl Drop for PidNsGuard {
    fn drop(&mut self) {
        if let Some(own) = self.0.take() {
            // Back to the thread's active namespace, which is always allowed.
            if let Err(e) = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID) {
                // A thread left pointing at another namespace would put later children
                // there: better to stop.
                panic!("restore the PID namespace of the runtime thread: {e}");
            }
        }
    }
}

/// Forks the child that runs `plan`. Returns its pid (in the runtime's PID namespace).
/// Must run on a thread of its own for the duration (a blocking-pool thread): the PID
/// namespace for children is a per-thread setting, changed and restored here.
pub fn spawn(plan: &InitPlan, fds: ChildFds, pid_ns: PidNamespace<'_>) -> std::io::Result<Pid> {
    let guard = match pid_ns {
        PidNamespace::Inherit => PidNsGuard(None),
        PidNamespace::New => {
            let own = open_fd(Path::new("/proc/thread-self/ns/pid"), OFlag::O_RDONLY)?;
            let guard = PidNsGuard(Some(own));
            nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(std::io::Error::from)?;
            guard
        }
        PidNamespace::Join(fd) => {
            let own = open_fd(Path::new("/proc/thread-self/ns/pid"), OFlag::O_RDONLY)?;
            let guard = PidNsGuard(Some(own));
            nix::sched::setns(fd, CloneFlags::CLONE_NEWPID).map_err(std::io::Error::from)?;
            guard
        }
    };
    // SAFETY: the child only runs `child_main`, which execs or exits; glibc's fork makes
    // malloc usable in the child of a multithreaded process, and the child takes no lock
    // another thread could hold (no logging, no environment or stdio access).
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            std::mem::forget(guard);
            child_main(plan, &fds)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(guard);
            Ok(child)
        }
        Err(e) => {
            drop(guard);
            Err(std::io::Error::from(e))
        }
    }
}

/// Writes a failure to the report pipe and exits.
fn child_fail(report: RawFd, message: &str, code: i32) -> ! {
    let mut msg = Vec::with_capacity(message.len() + 1);
    msg.push(b'E');
    msg.extend_from_slice(message.as_bytes());
    // SAFETY: `report` is open in the child until exit.
    let fd = unsafe { BorrowedFd::borrow_raw(report) };
    let _ = nix::unistd::write(fd, &msg);
    // SAFETY: _exit skips atexit handlers and destructors of the forked copy.
    unsafe { libc::_exit(code) }
}

/// Reads one byte from the parent; end of file means the parent gave up.
fn child_wait_byte(fd: RawFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: the raw fd is open in the child.
        match nix::unistd::read(unsafe { BorrowedFd::borrow_raw(fd) }, &mut b) {
            Ok(1) => return Some(b[0]),
            Ok(_) => return None,
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Closes every descriptor ≥ 3 except `keep` (close_range over the gaps).
fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut lo: u32 = 3;
    for &k in keep.iter() {
        let k = k as u32;
        if k >= lo {
            if k > lo {
                // SAFETY: close_range on a range of descriptors we no longer need.
                unsafe { libc::syscall(libc::SYS_close_range, lo, k - 1, 0) };
            }
            lo = k + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0) };
}

/// Signal state for the new program: nothing blocked, every disposition default (an
/// ignored SIGPIPE, as Rust programs have, would otherwise survive exec).
pub fn reset_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: restoring default dispositions.
            let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
        }
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("NULs removed")
}

/// The child after fork: never returns.
fn child_main(plan: &InitPlan, fds: &ChildFds) -> ! {
    reset_signals();
    let report = fds.report_write.as_raw_fd();
    // stdio
    for (src, dst) in [(&fds.stdin, 0), (&fds.stdout, 1), (&fds.stderr, 2)] {
        // SAFETY: dup2 onto the standard descriptors of this process.
        if unsafe { libc::dup2(src.as_raw_fd(), dst) } < 0 {
            child_fail(report, &format!("dup2 stdio {dst}: {}", Errno::last()), 1);
        }
    }
    let mut keep: Vec<RawFd> = vec![fds.sync_read.as_raw_fd(), report];
    keep.extend(fds.ns.iter().map(|f| f.as_raw_fd()));
    close_all_but(&mut keep);

    // Wait until the parent has put us in the cgroup.
    if child_wait_byte(fds.sync_read.as_raw_fd()) != Some(b'c') {
        // SAFETY: exiting the forked child.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: plain umask changes; device nodes get exactly their modes.
    unsafe { libc::umask(0) };
    if let Err(e) = init_container(&LinuxSyscall, plan) {
        child_fail(report, &e.to_string(), 1);
    }
    let p = &plan.process;
    let Some(arg0) = p.args.first() else {
        child_fail(report, &InitError::NoArgs.to_string(), 1);
    };
    let path_env = p.env.iter().rev().find_map(|e| e.strip_prefix("PATH="));
    let exe = match find_executable(arg0, path_env) {
        Ok(exe) => exe,
        Err(e) => child_fail(report, &e.to_string(), 127),
    };
    let argv: Vec<CString> = p.args.iter().map(|a| cstring(a)).collect();
    let envp: Vec<CString> = p.env.iter().map(|e| cstring(e)).collect();
    let exe_c = CString::new(exe.as_os_str().as_bytes()).unwrap_or_else(|_| cstring(arg0));

    if fds.wait_start {
        // SAFETY: the report descriptor is open.
        let _ = nix::unistd::write(unsafe { BorrowedFd::borrow_raw(report) }, b"R");
        if child_wait_byte(fds.sync_read.as_raw_fd()) != Some(b's') {
            // SAFETY: exiting the forked child.
            unsafe { libc::_exit(1) }
        }
    }
    // SAFETY: plain umask change; runc's default for the container process.
    unsafe { libc::umask(0o022) };
    let errno = match nix::unistd::execve(&exe_c, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let shown = OsStr::from_bytes(exe_c.as_bytes())
        .to_string_lossy()
        .into_owned();
    child_fail(
        report,
        &InitError::Exec { path: shown, errno }.to_string(),
        127,
    )
}

/// What the child reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// `R`: set up, waiting for start.
    Ready,
    /// End of file: exec happened (or the child died without a word).
    Closed,
    /// `E...`: the child's error message.
    Failed(String),
}

/// Reads the child's next report from the report pipe (blocking).
pub fn read_report(fd: BorrowedFd<'_>) -> std::io::Result<Report> {
    let mut first = [0u8; 1];
    let n = loop {
        match nix::unistd::read(fd, &mut first) {
            Ok(n) => break n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(Report::Closed);
    }
    match first[0] {
        b'R' => Ok(Report::Ready),
        _ => {
            let mut rest = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => rest.extend_from_slice(&buf[..n]),
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            Ok(Report::Failed(String::from_utf8_lossy(&rest).into_owned()))
        }
    }
}

/// Writes one control byte to the child.
pub fn send_byte(fd: impl AsFd, b: u8) -> std::io::Result<()> {
    nix::unistd::write(fd, &[b]).map(drop).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::rootfs::OverlayDirs;
    use crate::runtime::spec::DEFAULT_CAPABILITIES;
    use crate::runtime::syscall::{Call, TestSyscall};

    fn process(uid: u32) -> ProcessPlan {
        ProcessPlan {
            user: UserSpec {
                uid,
                gid: 3000,
                additional_gids: vec![3000, 10],
            },
            capabilities: DEFAULT_CAPABILITIES.to_vec(),
            no_new_privs: true,
            cwd: "/app".into(),
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
        }
    }

    fn rootfs_plan() -> RootfsPlan {
        RootfsPlan {
            root: "/state/c1/rootfs".into(),
            overlay: Some(OverlayDirs {
                lower: vec!["/l/1".into()],
                upper: "/state/c1/upper".into(),
                work: "/state/c1/work".into(),
            }),
            readonly: false,
            privileged: false,
            host_network: false,
            dev_shm: None,
            mounts: vec![],
            masked_paths: vec![],
            readonly_paths: vec![],
            devices: vec![],
            cwd: "/app".into(),
        }
    }

    #[test]
    fn container_init_order() {
        let plan = InitPlan {
            joins: vec![
                (10, CloneFlags::CLONE_NEWNET),
                (11, CloneFlags::CLONE_NEWUTS),
                (12, CloneFlags::CLONE_NEWIPC),
            ],
            unshare: CloneFlags::CLONE_NEWNS,
            hostname: None,
            rootfs: Some(rootfs_plan()),
            process: process(1000),
        };
        let sys = TestSyscall::new();
        init_container(&sys, &plan).unwrap();
        let names = sys.names();
        // Namespaces first: joined, then the new mount namespace, before any mount.
        assert_eq!(&names[..4], &["setns", "setns", "setns", "unshare"]);
        assert_eq!(sys.calls()[3], Call::Unshare(CloneFlags::CLONE_NEWNS));
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        let last = |n: &str| names.iter().rposition(|x| *x == n).unwrap();
        assert!(pos("mount") > pos("unshare"));
        assert!(pos("pivot_root") > pos("mount"));
        // Identity after the rootfs, in runc's order.
        let tail: Vec<Call> = sys.calls()[pos("set_capabilities")..].to_vec();
        let mut caps: Vec<Capability> = DEFAULT_CAPABILITIES.to_vec();
        caps.sort_by_key(|c| c.index());
        assert_eq!(
            tail,
            vec![
                Call::SetCapabilities {
                    set: "bounding",
                    caps: caps.clone()
                },
                Call::SetKeepCaps(true),
                Call::Setgroups(vec![3000, 10]),
                Call::Setgid(3000),
                Call::Setuid(1000),
                Call::SetKeepCaps(false),
                Call::Chdir("/app".into()),
                Call::SetCapabilities {
                    set: "effective",
                    caps: caps.clone()
                },
                Call::SetCapabilities {
                    set: "permitted",
                    caps
                },
                Call::SetCapabilities {
                    set: "inheritable",
                    caps: vec![]
                },
                Call::SetCapabilities {
                    set: "ambient",
                    caps: vec![]
                },
                Call::SetNoNewPrivs,
            ]
        );
        assert!(last("umount2") < pos("set_capabilities"));
    }

    #[test]
    fn exec_init_joins_mount_last_and_mounts_nothing() {
        let mut p = process(0);
        p.no_new_privs = false;
        let plan = InitPlan {
            joins: vec![
                (10, CloneFlags::CLONE_NEWIPC),
                (11, CloneFlags::CLONE_NEWUTS),
                (12, CloneFlags::CLONE_NEWNET),
                (13, CloneFlags::CLONE_NEWNS),
            ],
            unshare: CloneFlags::empty(),
            hostname: None,
            rootfs: None,
            process: p,
        };
        let sys = TestSyscall::new();
        init_container(&sys, &plan).unwrap();
        let names = sys.names();
        assert!(!names.contains(&"mount") && !names.contains(&"unshare"));
        assert!(!names.contains(&"set_no_new_privs"));
        assert_eq!(
            sys.calls()[3],
            Call::Setns {
                fd: 13,
                nstype: CloneFlags::CLONE_NEWNS
            }
        );
    }

    #[test]
    fn new_uts_namespace_gets_the_hostname() {
        let plan = InitPlan {
            joins: vec![],
            unshare: CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS,
            hostname: Some("box".into()),
            rootfs: None,
            process: process(0),
        };
        let sys = TestSyscall::new();
        init_container(&sys, &plan).unwrap();
        assert_eq!(&sys.names()[..2], &["unshare", "sethostname"]);
    }

    #[test]
    fn a_failing_step_stops_the_setup() {
        let plan = InitPlan {
            joins: vec![],
            unshare: CloneFlags::CLONE_NEWNS,
            hostname: None,
            rootfs: Some(rootfs_plan()),
            process: process(0),
        };
        let sys = TestSyscall::new().failing("pivot_root", Errno::EINVAL);
        let err = init_container(&sys, &plan).unwrap_err();
        assert!(err.to_string().starts_with("pivot_root "), "{err}");
        assert!(!sys.names().contains(&"setuid"));
    }

    #[test]
    fn find_executable_searches_path() {
        assert_eq!(
            find_executable("/bin/sh", None).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let found = find_executable("sh", Some("/nonexistent:/usr/bin:/bin")).unwrap();
        assert!(found.ends_with("sh"), "{found:?}");
        assert_eq!(
            find_executable("no-such-program", Some("/bin"))
                .unwrap_err()
                .to_string(),
            "exec no-such-program: executable file not found in $PATH"
        );
    }
}
