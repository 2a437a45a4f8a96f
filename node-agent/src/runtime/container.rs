//! One container's life: create, start, wait, stop, remove, and exec into it. The
//! operations and their meaning are the CRI's as containerd implements them
//! (`internal/cri/server/container_{create,start,stop,remove}.go`, `container_execsync.go`)
//! over runc's `create`/`start`/`kill`/`delete` and `exec`; the stop sequence is
//! kubelet's `killContainer` (the stop signal, the grace period, then SIGKILL) and the
//! exit status containerd's (128 + signal, OOMKilled from the cgroup's OOM kills).
//!
//! create: the container's cgroup and state directory, the child forked and moved into
//! the cgroup, set up up to the exec, waiting. start: the child execs. The exit is watched
//! through a pidfd by one task per container, which alone reaps the process; waiters read
//! it from a watch channel. remove: everything in the cgroup killed, the cgroup and the
//! state directory removed (the rootfs mounts live in the container's own mount namespace
//! and went with its last process).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::Runtime;
use super::cgroups::{self, CgroupError, CgroupManager};
use super::logs::{self, CriLogWriter, Stream};
use super::mountinfo::{self, MountInfoError};
use super::process::{self, ChildFds, InitPlan, PidNamespace, ProcessPlan, Report};
use super::rootfs::{self, OverlayDirs, RootfsError, RootfsPlan};
use super::spec::{ContainerSpec, MountPropagation, NsMode, RootfsSource};
use super::syscall::LinuxSyscall;

/// kubelet's exec probe output limit (`maxReadLength`, 10 KiB).
pub const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// Errors of container operations; each names the container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {name}: {source}")]
    Cgroup {
        name: String,
        #[source]
        source: CgroupError,
    },
    #[error("container {name}: {source}")]
    Rootfs {
        name: String,
        #[source]
        source: RootfsError,
    },
    /// A volume's source on a host mount that cannot propagate as asked (containerd's
    /// `ensureShared` / `ensureSharedOrSlave`).
    #[error("container {name}: {source}")]
    Propagation {
        name: String,
        #[source]
        source: MountInfoError,
    },
    #[error("container {name}: {op}: {source}")]
    Io {
        name: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("create container {name}: {message}")]
    Create { name: String, message: String },
    #[error("start container {name}: {message}")]
    Start { name: String, message: String },
    #[error("container {name} is {state}, not {wanted}")]
    State {
        name: String,
        state: &'static str,
        wanted: &'static str,
    },
    #[error("stop container {name}: still running {seconds}s after SIGKILL")]
    StopTimeout { name: String, seconds: u64 },
    #[error("exec in container {name}: {message}")]
    Exec { name: String, message: String },
    #[error("container {name}: {source}")]
    Log {
        name: String,
        #[source]
        source: logs::LogError,
    },
    #[error("container {name}: runtime task failed: {message}")]
    Task { name: String, message: String },
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    /// The exit code, or 128 + the signal that killed it (as containerd reports).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// The OOM killer killed a process in the container's cgroup.
    pub oom_killed: bool,
    pub finished_at: SystemTime,
}

impl ContainerExit {
    /// kubelet's terminated reason: OOMKilled, Completed (0) or Error.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// CRI's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

impl ContainerState {
    fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
        }
    }
}

/// What exec into the container needs to become the container's process.
#[derive(Debug, Clone)]
struct ExecIdentity {
    process: ProcessPlan,
}

struct Inner {
    id: String,
    name: String,
    pid: Pid,
    pidfd: OwnedFd,
    cgroup: String,
    state_dir: PathBuf,
    stop_signal: Signal,
    created_at: SystemTime,
    started_at: Mutex<Option<SystemTime>>,
    /// The pipes to the waiting child, until start.
    pending: Mutex<Option<(OwnedFd, OwnedFd)>>,
    exit: watch::Receiver<Option<ContainerExit>>,
    identity: ExecIdentity,
    log_path: Option<PathBuf>,
}

/// A created container (cheap to clone; every clone is the same container).
#[derive(Clone)]
pub struct Container {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("pid", &self.inner.pid)
            .field("state", &self.state())
            .finish()
    }
}

impl Container {
    /// 64 hex digits, as containerd's ids.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The container's first process, in the runtime's PID namespace.
    pub fn pid(&self) -> i32 {
        self.inner.pid.as_raw()
    }

    /// The container's cgroup, relative to the runtime's cgroup parent.
    pub fn cgroup(&self) -> &str {
        &self.inner.cgroup
    }

    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    pub fn log_path(&self) -> Option<&Path> {
        self.inner.log_path.as_deref()
    }

    pub fn created_at(&self) -> SystemTime {
        self.inner.created_at
    }

    pub fn started_at(&self) -> Option<SystemTime> {
        *self.inner.started_at.lock().unwrap()
    }

    /// The exit, once the process has ended and been reaped.
    pub fn exit(&self) -> Option<ContainerExit> {
        *self.inner.exit.borrow()
    }

    pub fn state(&self) -> ContainerState {
        if self.exit().is_some() {
            ContainerState::Exited
        } else if self.started_at().is_some() {
            ContainerState::Running
        } else {
            ContainerState::Created
        }
    }

    fn error_state(&self, wanted: &'static str) -> ContainerError {
        ContainerError::State {
            name: self.inner.name.clone(),
            state: self.state().as_str(),
            wanted,
        }
    }
}

/// The result of [`Runtime::exec_in`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    /// stdout and stderr interleaved, at most [`MAX_EXEC_OUTPUT`] bytes.
    pub output: Vec<u8>,
    pub timed_out: bool,
}

/// 32 random bytes in hex.
fn new_id() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(hex::encode(b))
}

fn join_cgroup(parent: &str, id: &str) -> String {
    if parent.is_empty() {
        id.to_string()
    } else {
        format!("{parent}/{id}")
    }
}

/// Everything the blocking part of create hands back.
struct Created {
    pid: Pid,
    pidfd: OwnedFd,
    /// A second pidfd for the exit watcher (made before create returns, so that every
    /// failure after the fork is handled where the child is killed and reaped).
    watch_fd: OwnedFd,
    sync_write: OwnedFd,
    report_read: OwnedFd,
    stdout_read: Option<OwnedFd>,
    stderr_read: Option<OwnedFd>,
}

fn status_to_exit(status: WaitStatus, oom_killed: bool) -> Option<ContainerExit> {
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => return None,
    };
    Some(ContainerExit {
        exit_code,
        signal,
        oom_killed,
        finished_at: SystemTime::now(),
    })
}

/// Waits (asynchronously) for `pid` to exit through its pidfd, then reaps it.
async fn reap(pid: Pid, pidfd: OwnedFd) -> std::io::Result<WaitStatus> {
    // SAFETY: the AsyncFd owns `pidfd`, which stays open and the same until it is dropped.
    let afd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    loop {
        let mut ready = afd.readable().await?;
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => ready.clear_ready(),
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(status),
            Ok(_) => ready.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Runtime {
    /// Creates a container: its cgroup (under `spec.cgroup_parent`), its rootfs
    /// directories, and its process, set up and waiting to be started.
    pub async fn create_container(&self, spec: &ContainerSpec) -> Result<Container> {
        let name = spec.name.clone();
        let id = new_id().map_err(|source| ContainerError::Io {
            name: name.clone(),
            op: "read /dev/urandom".into(),
            source,
        })?;
        let cgroup = join_cgroup(&spec.cgroup_parent, &id);
        let state_dir = self.config.state_dir.join(&id);
        let log = match &spec.log {
            Some(l) => Some(Arc::new(Mutex::new(
                CriLogWriter::open(&l.path, l.max_size, l.max_files).map_err(|source| {
                    ContainerError::Log {
                        name: name.clone(),
                        source,
                    }
                })?,
            ))),
            None => None,
        };

        let runtime = self.clone();
        let spec2 = spec.clone();
        let (cg, sd) = (cgroup.clone(), state_dir.clone());
        let logged = log.is_some();
        let created =
            tokio::task::spawn_blocking(move || runtime.create_blocking(&spec2, &cg, &sd, logged))
                .await
                .map_err(|e| ContainerError::Task {
                    name: name.clone(),
                    message: e.to_string(),
                })
                .and_then(|r| r);
        // Every failure after the fork: the child was killed and reaped in
        // create_blocking (or, if that task died, is killed with its cgroup here).
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                self.cleanup_after_failed_create(&cgroup, &state_dir).await;
                return Err(e);
            }
        };

        // Copy stdout and stderr into the log.
        let mut copiers = Vec::new();
        if let Some(log) = &log {
            for (fd, stream) in [
                (created.stdout_read, Stream::Stdout),
                (created.stderr_read, Stream::Stderr),
            ] {
                let Some(fd) = fd else { continue };
                match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                    Ok(rx) => copiers.push(tokio::spawn(logs::copy_stream(
                        rx,
                        stream,
                        log.clone(),
                        logs::DEFAULT_MAX_LINE,
                    ))),
                    Err(e) => {
                        tracing::warn!(container = %name, error = %e, "container output not logged")
                    }
                }
            }
        }

        // The exit watcher: the only place that reaps the container's process.
        let (tx, rx) = watch::channel(None);
        let watch_fd = created.watch_fd;
        let (cgroups, cg, pid) = (self.cgroups.clone(), cgroup.clone(), created.pid);
        let cname = name.clone();
        tokio::spawn(async move {
            let status = reap(pid, watch_fd).await;
            let oom = cgroups
                .oom_events(&cg)
                .map(|e| e.oom_kill > 0)
                .unwrap_or(false);
            // Let the log copiers drain what the process wrote (bounded: a process that
            // gave its stdout to a daemon that outlives it must not hold the exit).
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                for c in copiers {
                    let _ = c.await;
                }
            })
            .await;
            let exit = match status {
                Ok(s) => status_to_exit(s, oom),
                Err(e) => {
                    tracing::warn!(container = %cname, error = %e, "waiting for the container failed");
                    None
                }
            }
            .unwrap_or(ContainerExit {
                exit_code: 255,
                signal: None,
                oom_killed: oom,
                finished_at: SystemTime::now(),
            });
            let _ = tx.send(Some(exit));
        });

        Ok(Container {
            inner: Arc::new(Inner {
                id,
                name,
                pid: created.pid,
                pidfd: created.pidfd,
                cgroup,
                state_dir,
                stop_signal: spec.stop_signal,
                created_at: SystemTime::now(),
                started_at: Mutex::new(None),
                pending: Mutex::new(Some((created.sync_write, created.report_read))),
                exit: rx,
                identity: ExecIdentity {
                    process: process_plan(spec),
                },
                log_path: spec.log.as_ref().map(|l| l.path.clone()),
            }),
        })
    }

    async fn cleanup_after_failed_create(&self, cgroup: &str, state_dir: &Path) {
        let cgroups = self.cgroups.clone();
        let (cg, sd) = (cgroup.to_string(), state_dir.to_path_buf());
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = cgroups.remove(&cg) {
                tracing::warn!(cgroup = %cg, error = %e, "cgroup of a failed container left behind");
            }
            let _ = rootfs::unmount_all_under(&LinuxSyscall, &sd);
            let _ = std::fs::remove_dir_all(&sd);
        })
        .await;
    }

    /// The blocking part of create, on a blocking-pool thread (the fork changes and
    /// restores this thread's PID namespace for children).
    fn create_blocking(
        &self,
        spec: &ContainerSpec,
        cgroup: &str,
        state_dir: &Path,
        logged: bool,
    ) -> Result<Created> {
        let name = &spec.name;
        let io = |op: String| {
            let name = name.clone();
            move |source| ContainerError::Io { name, op, source }
        };
        let mut resources = spec.resources.clone();
        if resources.devices.is_none() {
            resources.devices = Some(cgroups::container_device_rules(
                spec.privileged,
                &spec.devices,
            ));
        }
        self.cgroups
            .create(cgroup, &resources)
            .map_err(|source| ContainerError::Cgroup {
                name: name.clone(),
                source,
            })?;
        std::fs::create_dir_all(state_dir)
            .map_err(io(format!("create {}", state_dir.display())))?;
        let rootfs_plan =
            rootfs_plan(spec, state_dir).map_err(|source| ContainerError::Rootfs {
                name: name.clone(),
                source,
            })?;
        let shared_root = rootfs::shares_with_host(&spec.mounts);
        if rootfs_plan.overlay.is_some() || shared_root {
            std::fs::create_dir_all(&rootfs_plan.root)
                .map_err(io(format!("create {}", rootfs_plan.root.display())))?;
        }
        // Propagation on the host, as containerd's WithMounts before runc: the sources of
        // HostToContainer and Bidirectional mounts checked against the host's mounts, and
        // an rshared rootfs made a private mount of its own (rootfs's module docs).
        if spec
            .mounts
            .iter()
            .any(|m| m.propagation != MountPropagation::Private)
        {
            let propagation = |source| ContainerError::Propagation {
                name: name.clone(),
                source,
            };
            let table = mountinfo::read_mountinfo().map_err(propagation)?;
            mountinfo::check_bind_propagation(&mountinfo::resolved(&spec.mounts), &table)
                .map_err(propagation)?;
        }
        if shared_root {
            let source = match &spec.rootfs {
                RootfsSource::Layers(_) => rootfs_plan.root.clone(),
                RootfsSource::Path(p) => p.clone(),
            };
            rootfs::prepare_host_root(&LinuxSyscall, &source, &rootfs_plan.root).map_err(
                |source| ContainerError::Rootfs {
                    name: name.clone(),
                    source,
                },
            )?;
        }

        // Namespaces to join (opened here), to create, and the PID namespace.
        let mut ns_fds = Vec::new();
        let mut joins = Vec::new();
        let mut unshare = CloneFlags::CLONE_NEWNS;
        for (mode, flag) in [
            (&spec.namespaces.ipc, CloneFlags::CLONE_NEWIPC),
            (&spec.namespaces.uts, CloneFlags::CLONE_NEWUTS),
            (&spec.namespaces.network, CloneFlags::CLONE_NEWNET),
        ] {
            match mode {
                NsMode::Host => {}
                NsMode::New => unshare |= flag,
                NsMode::Join(path) => {
                    let fd = process::open_fd(path, OFlag::O_RDONLY)
                        .map_err(io(format!("open namespace {}", path.display())))?;
                    joins.push((std::os::fd::AsRawFd::as_raw_fd(&fd), flag));
                    ns_fds.push(fd);
                }
            }
        }
        let pid_ns_fd = match &spec.namespaces.pid {
            NsMode::Join(path) => Some(
                process::open_fd(path, OFlag::O_RDONLY)
                    .map_err(io(format!("open namespace {}", path.display())))?,
            ),
            _ => None,
        };
        let hostname = match spec.namespaces.uts {
            NsMode::New => spec.hostname.clone(),
            _ => None,
        };
        let plan = InitPlan {
            joins,
            unshare,
            hostname,
            rootfs: Some(rootfs_plan),
            process: process_plan(spec),
        };

        // Pipes: control (parent → child), report (child → parent), output.
        let (sync_read, sync_write) = process::pipe().map_err(io("pipe".into()))?;
        let (report_read, report_write) = process::pipe().map_err(io("pipe".into()))?;
        let devnull = || process::open_fd(Path::new("/dev/null"), OFlag::O_RDWR);
        let stdin = devnull().map_err(io("open /dev/null".into()))?;
        let (stdout_read, stdout) = if logged {
            let (r, w) = process::pipe().map_err(io("pipe".into()))?;
            (Some(r), w)
        } else {
            (None, devnull().map_err(io("open /dev/null".into()))?)
        };
        let (stderr_read, stderr) = if logged {
            let (r, w) = process::pipe().map_err(io("pipe".into()))?;
            (Some(r), w)
        } else {
            (None, devnull().map_err(io("open /dev/null".into()))?)
        };
        let fds = ChildFds {
            stdin,
            stdout,
            stderr,
            sync_read,
            report_write,
            ns: ns_fds,
            wait_start: true,
        };
        let pid_ns = match (&spec.namespaces.pid, &pid_ns_fd) {
            (NsMode::Host, _) => PidNamespace::Inherit,
            (NsMode::New, _) => PidNamespace::New,
            (NsMode::Join(_), Some(fd)) => PidNamespace::Join(fd.as_fd()),
            (NsMode::Join(_), None) => unreachable!("opened above"),
        };
        let pid = process::spawn(&plan, fds, pid_ns).map_err(io("fork".into()))?;
        let kill_and_reap = || {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        };
        let pidfd = match process::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                kill_and_reap();
                return Err(io("pidfd_open".into())(e));
            }
        };
        let watch_fd = match pidfd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                kill_and_reap();
                return Err(io("dup pidfd".into())(e));
            }
        };
        // Into the cgroup before anything runs in the container.
        if let Err(source) = self.cgroups.add_pid(cgroup, pid.as_raw()) {
            kill_and_reap();
            return Err(ContainerError::Cgroup {
                name: name.clone(),
                source,
            });
        }
        if let Err(e) = process::send_byte(&sync_write, b'c') {
            kill_and_reap();
            return Err(io("release the container process".into())(e));
        }
        match process::read_report(report_read.as_fd()) {
            Ok(Report::Ready) => Ok(Created {
                pid,
                pidfd,
                watch_fd,
                sync_write,
                report_read,
                stdout_read,
                stderr_read,
            }),
            Ok(Report::Failed(message)) => {
                kill_and_reap();
                Err(ContainerError::Create {
                    name: name.clone(),
                    message,
                })
            }
            Ok(Report::Closed) => {
                let status = waitpid(pid, None);
                Err(ContainerError::Create {
                    name: name.clone(),
                    message: format!("the container process ended during setup ({status:?})"),
                })
            }
            Err(e) => {
                kill_and_reap();
                Err(io("read the container's report".into())(e))
            }
        }
    }

    /// Starts a created container: its process execs the command.
    pub async fn start_container(&self, c: &Container) -> Result<()> {
        let pending = c.inner.pending.lock().unwrap().take();
        let Some((sync_write, report_read)) = pending else {
            return Err(c.error_state("created"));
        };
        let name = c.inner.name.clone();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<Report> {
            process::send_byte(&sync_write, b's')?;
            drop(sync_write);
            process::read_report(report_read.as_fd())
        })
        .await
        .map_err(|e| ContainerError::Task {
            name: name.clone(),
            message: e.to_string(),
        })?;
        match result {
            Ok(Report::Closed) => {
                *c.inner.started_at.lock().unwrap() = Some(SystemTime::now());
                Ok(())
            }
            Ok(Report::Failed(message)) => Err(ContainerError::Start { name, message }),
            Ok(Report::Ready) => Err(ContainerError::Start {
                name,
                message: "unexpected report from the container process".into(),
            }),
            Err(source) => Err(ContainerError::Io {
                name,
                op: "start".into(),
                source,
            }),
        }
    }

    /// Waits until the container's process has exited and returns how.
    pub async fn wait_container(&self, c: &Container) -> ContainerExit {
        let mut rx = c.inner.exit.clone();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The watcher ended without a value: cannot happen, it always sends.
                return ContainerExit {
                    exit_code: 255,
                    signal: None,
                    oom_killed: false,
                    finished_at: SystemTime::now(),
                };
            }
        }
    }

    /// kubelet's `killContainer`: the stop signal (the image's STOPSIGNAL, else SIGTERM),
    /// then SIGKILL to everything in the container's cgroup once `grace` has passed.
    pub async fn stop_container(&self, c: &Container, grace: Duration) -> Result<ContainerExit> {
        if let Some(exit) = c.exit() {
            return Ok(exit);
        }
        if c.started_at().is_some() {
            let _ = process::pidfd_send_signal(c.inner.pidfd.as_fd(), c.inner.stop_signal);
            if let Ok(exit) = tokio::time::timeout(grace, self.wait_container(c)).await {
                return Ok(exit);
            }
        }
        self.kill_all(c).await
    }

    /// SIGKILL to the container's process and everything in its cgroup, then wait.
    async fn kill_all(&self, c: &Container) -> Result<ContainerExit> {
        const KILL_WAIT: Duration = Duration::from_secs(10);
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            let _ = process::pidfd_send_signal(c.inner.pidfd.as_fd(), Signal::SIGKILL);
            // With a shared PID namespace, the process's children outlive it.
            if let Ok(pids) = self.cgroups.pids(&c.inner.cgroup) {
                for p in pids {
                    let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            if let Ok(exit) =
                tokio::time::timeout(Duration::from_millis(200), self.wait_container(c)).await
            {
                return Ok(exit);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ContainerError::StopTimeout {
                    name: c.inner.name.clone(),
                    seconds: KILL_WAIT.as_secs(),
                });
            }
        }
    }

    /// Removes a container: kills what is left, removes its cgroup and state directory.
    pub async fn remove_container(&self, c: &Container) -> Result<()> {
        // Closing the control pipe of a never-started container makes it exit.
        drop(c.inner.pending.lock().unwrap().take());
        if c.exit().is_none() {
            self.kill_all(c).await?;
        }
        let cgroups = self.cgroups.clone();
        let (cg, sd, name) = (
            c.inner.cgroup.clone(),
            c.inner.state_dir.clone(),
            c.inner.name.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<()> {
            cgroups
                .remove(&cg)
                .map_err(|source| ContainerError::Cgroup {
                    name: name.clone(),
                    source,
                })?;
            rootfs::unmount_all_under(&LinuxSyscall, &sd).map_err(|source| {
                ContainerError::Rootfs {
                    name: name.clone(),
                    source,
                }
            })?;
            match std::fs::remove_dir_all(&sd) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(ContainerError::Io {
                    name,
                    op: format!("remove {}", sd.display()),
                    source,
                }),
            }
        })
        .await
        .map_err(|e| ContainerError::Task {
            name: c.inner.name.clone(),
            message: e.to_string(),
        })?
    }

    /// Runs `argv` inside a running container (exec probes, lifecycle hooks): in its
    /// namespaces and cgroup, as its user with its capabilities, environment and working
    /// directory. Killed after `timeout`.
    pub async fn exec_in(
        &self,
        c: &Container,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        if c.state() != ContainerState::Running {
            return Err(c.error_state("running"));
        }
        let name = c.inner.name.clone();
        let exec_err = |message: String| ContainerError::Exec {
            name: name.clone(),
            message,
        };
        let mut process = c.inner.identity.process.clone();
        process.args = argv.to_vec();
        let (pid, cgroup, cgroups) = (c.inner.pid, c.inner.cgroup.clone(), self.cgroups.clone());
        let spawned = tokio::task::spawn_blocking(move || {
            exec_blocking(pid, &cgroup, cgroups.as_ref(), process)
        })
        .await
        .map_err(|e| exec_err(e.to_string()))?
        .map_err(exec_err)?;
        let (child, pidfd, kill_fd, output_read) = spawned;

        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut out = Vec::new();
            let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(output_read) else {
                return out;
            };
            let mut buf = [0u8; 4096];
            loop {
                match rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
                        out.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            out
        });
        let mut wait = Box::pin(reap(child, pidfd));
        let (status, timed_out) = match tokio::time::timeout(timeout, &mut wait).await {
            Ok(s) => (s, false),
            Err(_) => {
                let _ = process::pidfd_send_signal(kill_fd.as_fd(), Signal::SIGKILL);
                (wait.await, true)
            }
        };
        let status = status.map_err(|e| exec_err(format!("wait: {e}")))?;
        let output = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let exit = status_to_exit(status, false).map_or(255, |e| e.exit_code);
        Ok(ExecResult {
            exit_code: exit,
            output,
            timed_out,
        })
    }
}

/// The blocking part of exec: namespaces opened, the child forked into the container's
/// PID namespace, moved into its cgroup, and exec'd.
fn exec_blocking(
    target: Pid,
    cgroup: &str,
    cgroups: &dyn CgroupManager,
    process: ProcessPlan,
) -> std::result::Result<(Pid, OwnedFd, OwnedFd, OwnedFd), String> {
    let open = |ns: &str| {
        let path = PathBuf::from(format!("/proc/{}/ns/{ns}", target.as_raw()));
        process::open_fd(&path, OFlag::O_RDONLY).map_err(|e| e.to_string())
    };
    let pid_ns = open("pid")?;
    let mut ns_fds = Vec::new();
    let mut joins = Vec::new();
    // runc's nsexec order: ipc, uts, net, then mnt (after which paths are the container's).
    for (ns, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let fd = open(ns)?;
        joins.push((std::os::fd::AsRawFd::as_raw_fd(&fd), flag));
        ns_fds.push(fd);
    }
    let plan = InitPlan {
        joins,
        unshare: CloneFlags::empty(),
        hostname: None,
        rootfs: None,
        process,
    };
    let (sync_read, sync_write) = process::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (report_read, report_write) = process::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (output_read, output_write) = process::pipe().map_err(|e| format!("pipe: {e}"))?;
    let stdin =
        process::open_fd(Path::new("/dev/null"), OFlag::O_RDONLY).map_err(|e| e.to_string())?;
    let stderr = output_write.try_clone().map_err(|e| format!("dup: {e}"))?;
    let fds = ChildFds {
        stdin,
        stdout: output_write,
        stderr,
        sync_read,
        report_write,
        ns: ns_fds,
        wait_start: false,
    };
    let child = process::spawn(&plan, fds, PidNamespace::Join(pid_ns.as_fd()))
        .map_err(|e| format!("fork: {e}"))?;
    let kill_and_reap = || {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    };
    let pidfd = match process::pidfd_open(child) {
        Ok(fd) => fd,
        Err(e) => {
            kill_and_reap();
            return Err(format!("pidfd_open: {e}"));
        }
    };
    let kill_fd = match pidfd.try_clone() {
        Ok(fd) => fd,
        Err(e) => {
            kill_and_reap();
            return Err(format!("dup pidfd: {e}"));
        }
    };
    if let Err(e) = cgroups.add_pid(cgroup, child.as_raw()) {
        kill_and_reap();
        return Err(e.to_string());
    }
    if let Err(e) = process::send_byte(&sync_write, b'c') {
        kill_and_reap();
        return Err(format!("release the exec process: {e}"));
    }
    match process::read_report(report_read.as_fd()) {
        Ok(Report::Closed) => Ok((child, pidfd, kill_fd, output_read)),
        Ok(Report::Failed(message)) => {
            let _ = waitpid(child, None);
            Err(message)
        }
        Ok(Report::Ready) => {
            kill_and_reap();
            Err("unexpected report from the exec process".into())
        }
        Err(e) => {
            kill_and_reap();
            Err(format!("read the exec process's report: {e}"))
        }
    }
}

/// The rootfs part of a spec.
fn rootfs_plan(
    spec: &ContainerSpec,
    state_dir: &Path,
) -> std::result::Result<RootfsPlan, RootfsError> {
    let (root, overlay) = match &spec.rootfs {
        RootfsSource::Layers(layers) => (
            state_dir.join("rootfs"),
            Some(OverlayDirs::create(layers.clone(), state_dir)?),
        ),
        // An rshared rootfs is a mount of its own in the state directory, the plain
        // rootfs bound there ([`rootfs::prepare_host_root`]).
        RootfsSource::Path(_) if rootfs::shares_with_host(&spec.mounts) => {
            (state_dir.join("rootfs"), None)
        }
        RootfsSource::Path(p) => (p.clone(), None),
    };
    Ok(RootfsPlan {
        root,
        overlay,
        readonly: spec.readonly_rootfs,
        privileged: spec.privileged,
        host_network: spec.namespaces.network == NsMode::Host,
        dev_shm: spec.dev_shm.clone(),
        mounts: spec.mounts.clone(),
        masked_paths: spec.masked_paths.clone(),
        readonly_paths: spec.readonly_paths.clone(),
        devices: spec.devices.clone(),
        cwd: spec.cwd.clone(),
    })
}

/// The process part of a spec.
fn process_plan(spec: &ContainerSpec) -> ProcessPlan {
    ProcessPlan {
        user: spec.user.clone(),
        capabilities: spec.capabilities.clone(),
        no_new_privs: spec.no_new_privs,
        cwd: spec.cwd.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
    }
}

/// The command line of a process, for diagnostics (`/proc/<pid>/cmdline`).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| OsStr::from_bytes(s).to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::BindMount;

    #[test]
    fn exit_reasons() {
        let exit = |code, oom| ContainerExit {
            exit_code: code,
            signal: None,
            oom_killed: oom,
            finished_at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(exit(0, false).reason(), "Completed");
        assert_eq!(exit(3, false).reason(), "Error");
        assert_eq!(exit(137, true).reason(), "OOMKilled");
        let signaled = status_to_exit(
            WaitStatus::Signaled(Pid::from_raw(1), Signal::SIGKILL, false),
            false,
        )
        .unwrap();
        assert_eq!((signaled.exit_code, signaled.signal), (137, Some(9)));
        let exited = status_to_exit(WaitStatus::Exited(Pid::from_raw(1), 3), false).unwrap();
        assert_eq!((exited.exit_code, exited.signal), (3, None));
        assert!(status_to_exit(WaitStatus::StillAlive, false).is_none());
    }

    #[test]
    fn plans_from_a_spec() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ContainerSpec::new(
            "app",
            RootfsSource::Layers(vec!["/l/top".into(), "/l/base".into()]),
            vec!["/bin/sh".into()],
        );
        spec.namespaces.network = NsMode::Host;
        spec.readonly_rootfs = true;
        spec.mounts.push(BindMount::new("/src", "/dst", true));
        let plan = rootfs_plan(&spec, dir.path()).unwrap();
        assert_eq!(plan.root, dir.path().join("rootfs"));
        assert_eq!(
            plan.overlay.as_ref().unwrap().upper,
            dir.path().join("upper")
        );
        assert!(dir.path().join("work").is_dir());
        assert!(plan.host_network && plan.readonly);
        assert_eq!(plan.mounts.len(), 1);
        assert_eq!(plan.masked_paths.len(), 11);
        let p = process_plan(&spec);
        assert!(p.no_new_privs);
        assert_eq!(p.capabilities.len(), 14);
        assert_eq!(join_cgroup("pod1", "abc"), "pod1/abc");
        assert_eq!(join_cgroup("", "abc"), "abc");
        assert_eq!(new_id().unwrap().len(), 64);
    }
}
