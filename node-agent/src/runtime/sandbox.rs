//! The pod sandbox: what containerd's CRI `RunPodSandbox`/`StopPodSandbox`/
//! `RemovePodSandbox` (`internal/cri/server/sandbox_run.go`, `podsandbox/sandbox_run.go`)
//! and the pause container give a pod, without a pause image:
//!
//! - network, UTS and IPC namespaces created once per pod and held by bind-mounting
//!   them onto files under the run directory (`netns/<uid>`, `utsns/<uid>`,
//!   `ipcns/<uid>`), as `ip netns add` and containerd's `netns` package do; the hostname
//!   set in the UTS namespace; the network set up through the [`PodNetwork`] seam (today:
//!   [`LoopbackNetwork`], loopback up, as containerd before CNI);
//! - hostNetwork/hostIPC/hostPID honoured: no namespace created, the host's used
//!   (hostNetwork also keeps the host's UTS namespace, as upstream);
//! - the pod's /dev/shm (a 64 MiB tmpfs, containerd's default), its /etc/hostname,
//!   /etc/hosts (kubelet's managed hosts file) and /etc/resolv.conf;
//! - shareProcessNamespace: a pause process, PID 1 of the pod's PID namespace, that
//!   reaps orphans (kubernetes/build/pause/linux/pause.c), its namespace bound to
//!   `pidns/<uid>`;
//! - the pod cgroup `pod<uid>` (kubelet's pod-level cgroup).
//!
//! The namespaces are made by a short-lived thread that unshares them and bind-mounts
//! its own `/proc/thread-self/ns/*` (namespaces are per thread until they are joined),
//! so no process has to be forked and waited for.

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::Runtime;
use super::cgroups::{CgroupError, Resources};
use super::process;
use super::spec::{BindMount, ContainerSpec, NsMode};

/// Errors making or removing a sandbox; each names the pod.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox of pod {pod}: {op}: {source}")]
    Io {
        pod: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox of pod {pod}: {source}")]
    Cgroup {
        pod: String,
        #[source]
        source: CgroupError,
    },
    #[error("sandbox of pod {pod}: network: {source}")]
    Network {
        pod: String,
        #[source]
        source: NetworkError,
    },
    #[error("sandbox of pod {pod}: invalid pod uid {uid:?}")]
    BadUid { pod: String, uid: String },
    #[error("sandbox of pod {pod}: runtime task failed: {message}")]
    Task { pod: String, message: String },
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Errors of the pod network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{op} in network namespace {netns}: {source}")]
    Io {
        op: &'static str,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    /// The network plugin cannot set up pods yet (containerd's "cni plugin not
    /// initialized").
    #[error("network plugin not ready: {message}")]
    NotReady { message: String },
    /// A CNI call failed (containerd's wording: "failed to setup network for sandbox").
    #[error("failed to {op} network for sandbox {sandbox:?}: {source}")]
    Cni {
        op: &'static str,
        sandbox: String,
        #[source]
        source: Box<crate::cni::Error>,
    },
}

/// A hostPort of the pod (CRI's `PortMapping`; CNI's `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`, as portmap takes it.
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The seam for pod networking (CNI's ADD and DEL): set up the interfaces of a pod's
/// network namespace and return its IPs; tear them down.
pub trait PodNetwork: Send + Sync {
    fn setup(&self, pod: &SandboxConfig, netns: &Path) -> Result<Vec<IpAddr>, NetworkError>;
    fn teardown(&self, pod: &SandboxConfig, netns: &Path) -> Result<(), NetworkError>;
    /// Releases what belongs to no pod of `valid` (pod UIDs): after an agent restart, the
    /// attachments of sandboxes that are gone (CNI's GC).
    fn garbage_collect(&self, _valid: &[String]) -> Result<(), NetworkError> {
        Ok(())
    }
    /// Whether pods can be set up now (the CRI's NetworkReady condition; CNI's STATUS).
    fn status(&self) -> Result<(), NetworkError> {
        Ok(())
    }
}

/// Loopback only: `lo` up in the pod's network namespace, no pod IP.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopbackNetwork;

impl PodNetwork for LoopbackNetwork {
    fn setup(&self, _pod: &SandboxConfig, netns: &Path) -> Result<Vec<IpAddr>, NetworkError> {
        in_netns(netns, set_loopback_up)?;
        Ok(Vec::new())
    }

    fn teardown(&self, _pod: &SandboxConfig, _netns: &Path) -> Result<(), NetworkError> {
        Ok(())
    }
}

/// Runs `f` on a fresh thread inside the network namespace at `netns` (the thread
/// leaves with it, as CNI's `ns.Do` with a locked OS thread).
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, NetworkError> {
    let path = netns.to_path_buf();
    let shown = path.display().to_string();
    let err = |op: &'static str, source| NetworkError::Io {
        op,
        netns: shown.clone(),
        source,
    };
    std::thread::spawn(
        move || -> std::result::Result<T, (&'static str, std::io::Error)> {
            let fd = process::open_fd(&path, OFlag::O_RDONLY).map_err(|e| ("open", e))?;
            nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| ("setns", e.into()))?;
            f().map_err(|e| ("configure", e))
        },
    )
    .join()
    .map_err(|_| err("run", std::io::Error::other("thread panicked")))?
    .map_err(|(op, e)| err(op, e))
}

/// A socket for interface ioctls.
pub(crate) fn ifreq_socket() -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    Ok(socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// A zeroed `ifreq` naming interface `name` (at most 15 bytes).
pub(crate) fn ifreq_named(name: &[u8]) -> libc::ifreq {
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.iter().take(libc::IFNAMSIZ - 1).enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    ifr
}

/// `ip link set lo up`: SIOCGIFFLAGS, IFF_UP, SIOCSIFFLAGS on "lo".
pub fn set_loopback_up() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = ifreq_socket()?;
    let mut ifr = ifreq_named(b"lo");
    // SAFETY: ioctls on a socket with a properly initialised ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What a pod needs from its sandbox (the CRI's `PodSandboxConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    /// The pod's hostname (spec.hostname, else the pod name, truncated to 63 chars).
    pub hostname: String,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub share_process_namespace: bool,
    /// /etc/hosts; `None`: kubelet's managed hosts file with the loopback entries.
    pub hosts: Option<String>,
    /// /etc/resolv.conf; `None`: the host's.
    pub resolv_conf: Option<String>,
    /// Limits of the pod cgroup.
    pub resources: Resources,
    /// Size of /dev/shm in bytes.
    pub shm_size: u64,
    /// The pod's hostPorts.
    pub port_mappings: Vec<PortMapping>,
}

impl SandboxConfig {
    pub fn new(
        pod_uid: impl Into<String>,
        pod_name: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        let pod_name = pod_name.into();
        SandboxConfig {
            pod_uid: pod_uid.into(),
            hostname: pod_name.clone(),
            pod_name,
            namespace: namespace.into(),
            host_network: false,
            host_pid: false,
            host_ipc: false,
            share_process_namespace: false,
            hosts: None,
            resolv_conf: None,
            resources: Resources::default(),
            shm_size: 64 * 1024 * 1024,
            port_mappings: Vec::new(),
        }
    }

    fn pod(&self) -> String {
        format!("{}/{}", self.namespace, self.pod_name)
    }
}

/// kubelet's managed hosts file (`managedHostsHeader` and the loopback entries).
pub fn managed_hosts(hostname: &str, pod_ips: &[IpAddr]) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// A pod's sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub config: SandboxConfig,
    pub netns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    /// The shared PID namespace (shareProcessNamespace).
    pub pidns: Option<PathBuf>,
    /// The pod directory: hostname, hosts, resolv.conf, shm/.
    pub dir: PathBuf,
    /// The pod's /dev/shm (`None` with hostIPC: the host's).
    pub shm: Option<PathBuf>,
    /// The pod cgroup, relative to the runtime's parent.
    pub cgroup: String,
    pub ips: Vec<IpAddr>,
    pause: Option<(Pid, OwnedFd)>,
}

impl Sandbox {
    /// The pause process holding the shared PID namespace.
    pub fn pause_pid(&self) -> Option<i32> {
        self.pause.as_ref().map(|(p, _)| p.as_raw())
    }

    /// The sandbox's own directory (its /etc files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `spec` a container of this pod: its namespaces, /dev/shm, /etc files and
    /// cgroup parent (what containerd's CRI does from the sandbox's spec).
    pub fn apply_to(&self, spec: &mut ContainerSpec) {
        let ns = |p: &Option<PathBuf>| p.clone().map_or(NsMode::Host, NsMode::Join);
        spec.namespaces.network = ns(&self.netns);
        spec.namespaces.uts = ns(&self.utsns);
        spec.namespaces.ipc = ns(&self.ipcns);
        spec.namespaces.pid = if self.config.host_pid {
            NsMode::Host
        } else {
            self.pidns.clone().map_or(NsMode::New, NsMode::Join)
        };
        spec.hostname = None;
        spec.dev_shm = Some(
            self.shm
                .clone()
                .unwrap_or_else(|| PathBuf::from("/dev/shm")),
        );
        for (file, dest) in [
            ("hostname", "/etc/hostname"),
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
        ] {
            spec.mounts.push(BindMount::new(
                self.dir.join(file),
                dest,
                spec.readonly_rootfs,
            ));
        }
        spec.cgroup_parent = self.cgroup.clone();
    }
}

fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Unshares `flags` on a fresh thread, sets the hostname, and binds the thread's
/// namespaces onto `files` (`(ns name, target)`).
fn hold_new_namespaces(
    flags: CloneFlags,
    hostname: Option<String>,
    files: Vec<(&'static str, PathBuf)>,
) -> std::io::Result<()> {
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(flags)?;
        if let Some(h) = hostname {
            nix::unistd::sethostname(h)?;
        }
        for (ns, target) in files {
            std::fs::File::create(&target)?;
            let source = PathBuf::from(format!("/proc/thread-self/ns/{ns}"));
            nix::mount::mount(
                Some(&source),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                std::io::Error::new(
                    std::io::Error::from(e).kind(),
                    format!("bind {ns} namespace onto {}: {e}", target.display()),
                )
            })?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// Unmounts and removes a namespace file (absent is fine).
fn release_ns_file(path: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pause process: PID 1 of the pod's PID namespace, reaping whatever is reparented
/// to it, until SIGKILL (pause.c without the image).
fn pause_main() -> ! {
    process::reset_signals();
    // SAFETY: closing inherited descriptors of the forked copy.
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    let _ = nix::sys::prctl::set_name(c"rekube-pause");
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = set.thread_block();
    loop {
        let _ = set.wait();
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if matches!(status, nix::sys::wait::WaitStatus::StillAlive) {
                break;
            }
        }
    }
}

/// Forks the pause process into a new PID namespace (on the calling blocking thread).
fn spawn_pause() -> std::io::Result<Pid> {
    let own = process::open_fd(Path::new("/proc/thread-self/ns/pid"), OFlag::O_RDONLY)?;
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)?;
    // SAFETY: the child only runs `pause_main`, which never returns and takes no lock.
    let r = unsafe { nix::unistd::fork() };
    if let Ok(nix::unistd::ForkResult::Child) = r {
        pause_main();
    }
    if let Err(e) = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID) {
        panic!("restore the PID namespace of the runtime thread: {e}");
    }
    match r? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => unreachable!(),
    }
}

impl Runtime {
    /// Creates a pod's sandbox (kubelet's `createPodSandbox`).
    pub async fn create_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox> {
        let runtime = self.clone();
        let cfg = config.clone();
        let pod = config.pod();
        let mut sandbox =
            tokio::task::spawn_blocking(move || runtime.create_sandbox_blocking(&cfg))
                .await
                .map_err(|e| SandboxError::Task {
                    pod: pod.clone(),
                    message: e.to_string(),
                })??;
        if let Some(netns) = sandbox.netns.clone() {
            let network = self.network.clone();
            let cfg = config.clone();
            let result = tokio::task::spawn_blocking(move || network.setup(&cfg, &netns)).await;
            let result = match result {
                Ok(r) => r.map_err(|source| SandboxError::Network {
                    pod: pod.clone(),
                    source,
                }),
                Err(e) => Err(SandboxError::Task {
                    pod: pod.clone(),
                    message: e.to_string(),
                }),
            };
            match result {
                Ok(ips) => sandbox.ips = ips,
                Err(e) => {
                    let _ = self.remove_sandbox(&mut sandbox).await;
                    return Err(e);
                }
            }
            // The hosts file names the pod IPs once they are known.
            if config.hosts.is_none() && !sandbox.ips.is_empty() {
                let hosts = managed_hosts(&config.hostname, &sandbox.ips);
                if let Err(source) = std::fs::write(sandbox.dir.join("hosts"), hosts) {
                    // The pause process, namespaces and cgroup go with the failure.
                    let _ = self.remove_sandbox(&mut sandbox).await;
                    return Err(SandboxError::Io {
                        pod: pod.clone(),
                        op: "write hosts".into(),
                        source,
                    });
                }
            }
        }
        Ok(sandbox)
    }

    fn create_sandbox_blocking(&self, config: &SandboxConfig) -> Result<Sandbox> {
        let pod = config.pod();
        if !valid_uid(&config.pod_uid) {
            return Err(SandboxError::BadUid {
                pod,
                uid: config.pod_uid.clone(),
            });
        }
        let uid = &config.pod_uid;
        let run = &self.config.run_dir;
        let mut sandbox = Sandbox {
            config: config.clone(),
            netns: None,
            utsns: None,
            ipcns: None,
            pidns: None,
            dir: run.join("pods").join(uid),
            shm: None,
            cgroup: format!("pod{uid}"),
            ips: Vec::new(),
            pause: None,
        };
        let result = self.fill_sandbox(&mut sandbox);
        if let Err(e) = result {
            let _ = self.teardown_blocking(&mut sandbox);
            return Err(e);
        }
        Ok(sandbox)
    }

    fn fill_sandbox(&self, sb: &mut Sandbox) -> Result<()> {
        let config = sb.config.clone();
        let pod = config.pod();
        let uid = &config.pod_uid;
        let run = &self.config.run_dir;
        let io = |op: String| {
            let pod = pod.clone();
            move |source| SandboxError::Io { pod, op, source }
        };

        self.cgroups
            .create(&sb.cgroup, &config.resources)
            .map_err(|source| SandboxError::Cgroup {
                pod: pod.clone(),
                source,
            })?;

        // Pod files.
        std::fs::create_dir_all(&sb.dir).map_err(io(format!("create {}", sb.dir.display())))?;
        std::fs::write(sb.dir.join("hostname"), format!("{}\n", config.hostname))
            .map_err(io("write hostname".into()))?;
        let hosts = match &config.hosts {
            Some(h) => h.clone(),
            None if config.host_network => {
                let host = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                format!("# Kubernetes-managed hosts file (host network).\n{host}")
            }
            None => managed_hosts(&config.hostname, &[]),
        };
        std::fs::write(sb.dir.join("hosts"), hosts).map_err(io("write hosts".into()))?;
        let resolv = match &config.resolv_conf {
            Some(r) => r.clone(),
            None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(sb.dir.join("resolv.conf"), resolv)
            .map_err(io("write resolv.conf".into()))?;

        // Namespaces held by bind mounts.
        let mut flags = CloneFlags::empty();
        let mut files = Vec::new();
        let mut wanted: Vec<(&'static str, CloneFlags, &'static str)> = Vec::new();
        if !config.host_network {
            wanted.push(("net", CloneFlags::CLONE_NEWNET, "netns"));
            wanted.push(("uts", CloneFlags::CLONE_NEWUTS, "utsns"));
        }
        if !config.host_ipc {
            wanted.push(("ipc", CloneFlags::CLONE_NEWIPC, "ipcns"));
        }
        for (ns, flag, dir) in wanted {
            let d = run.join(dir);
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
            let file = d.join(uid);
            flags |= flag;
            files.push((ns, file.clone()));
            match ns {
                "net" => sb.netns = Some(file),
                "uts" => sb.utsns = Some(file),
                _ => sb.ipcns = Some(file),
            }
        }
        if !flags.is_empty() {
            let hostname = (!config.host_network).then(|| config.hostname.clone());
            hold_new_namespaces(flags, hostname, files).map_err(io("create namespaces".into()))?;
        }

        // The pod's /dev/shm.
        if !config.host_ipc {
            let shm = sb.dir.join("shm");
            std::fs::create_dir_all(&shm).map_err(io(format!("create {}", shm.display())))?;
            let data = format!("mode=1777,size={}", config.shm_size);
            nix::mount::mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(data.as_str()),
            )
            .map_err(|e| io(format!("mount tmpfs on {}", shm.display()))(e.into()))?;
            sb.shm = Some(shm);
        }

        // The shared PID namespace and its pause process.
        if config.share_process_namespace && !config.host_pid {
            let pid = spawn_pause().map_err(io("start the pause process".into()))?;
            let pidfd = process::pidfd_open(pid);
            let pidfd = match pidfd {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    return Err(io("pidfd_open the pause process".into())(e));
                }
            };
            sb.pause = Some((pid, pidfd));
            let pause_cgroup = format!("{}/pause", sb.cgroup);
            self.cgroups
                .create(&pause_cgroup, &Resources::default())
                .and_then(|()| self.cgroups.add_pid(&pause_cgroup, pid.as_raw()))
                .map_err(|source| SandboxError::Cgroup {
                    pod: pod.clone(),
                    source,
                })?;
            let d = run.join("pidns");
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
            let file = d.join(uid);
            std::fs::File::create(&file).map_err(io(format!("create {}", file.display())))?;
            sb.pidns = Some(file.clone());
            let source = PathBuf::from(format!("/proc/{}/ns/pid", pid.as_raw()));
            nix::mount::mount(
                Some(&source),
                &file,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| io(format!("bind the pid namespace onto {}", file.display()))(e.into()))?;
        }
        Ok(())
    }

    /// Removes a pod's sandbox (kubelet's `killPodWithSyncResult` end, the CRI's
    /// StopPodSandbox + RemovePodSandbox): the pause process killed, the network torn
    /// down, the namespace files, /dev/shm, pod files and pod cgroup removed. The pod's
    /// containers must have been removed first; whatever is left in the pod cgroup is
    /// killed.
    pub async fn remove_sandbox(&self, sandbox: &mut Sandbox) -> Result<()> {
        let pod = sandbox.config.pod();
        if let Some(netns) = sandbox.netns.clone() {
            let network = self.network.clone();
            let cfg = sandbox.config.clone();
            tokio::task::spawn_blocking(move || network.teardown(&cfg, &netns))
                .await
                .map_err(|e| SandboxError::Task {
                    pod: pod.clone(),
                    message: e.to_string(),
                })?
                .map_err(|source| SandboxError::Network {
                    pod: pod.clone(),
                    source,
                })?;
        }
        let runtime = self.clone();
        let mut taken = Sandbox {
            config: sandbox.config.clone(),
            netns: sandbox.netns.clone(),
            utsns: sandbox.utsns.clone(),
            ipcns: sandbox.ipcns.clone(),
            pidns: sandbox.pidns.clone(),
            dir: sandbox.dir.clone(),
            shm: sandbox.shm.clone(),
            cgroup: sandbox.cgroup.clone(),
            ips: sandbox.ips.clone(),
            pause: sandbox.pause.take(),
        };
        tokio::task::spawn_blocking(move || runtime.teardown_blocking(&mut taken))
            .await
            .map_err(|e| SandboxError::Task {
                pod,
                message: e.to_string(),
            })?
    }

    fn teardown_blocking(&self, sb: &mut Sandbox) -> Result<()> {
        let pod = sb.config.pod();
        let io = |op: String| {
            let pod = pod.clone();
            move |source| SandboxError::Io { pod, op, source }
        };
        if let Some((pid, pidfd)) = sb.pause.take() {
            // Killing PID 1 kills everything left in the pod's PID namespace.
            let _ = process::pidfd_send_signal(pidfd.as_fd(), Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        for p in [&sb.pidns, &sb.netns, &sb.utsns, &sb.ipcns]
            .into_iter()
            .flatten()
        {
            release_ns_file(p).map_err(io(format!("release {}", p.display())))?;
        }
        if let Some(shm) = &sb.shm {
            match nix::mount::umount2(shm, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(io(format!("unmount {}", shm.display()))(e.into())),
            }
        }
        match std::fs::remove_dir_all(&sb.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("remove {}", sb.dir.display()))(e)),
        }
        self.cgroups
            .remove(&sb.cgroup)
            .map_err(|source| SandboxError::Cgroup { pod, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::RootfsSource;

    #[test]
    fn managed_hosts_file() {
        let h = managed_hosts("web-0", &["10.1.2.3".parse().unwrap()]);
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.1.2.3\tweb-0\n"));
        assert_eq!(managed_hosts("x", &[]).lines().count(), 7);
    }

    #[test]
    fn uids() {
        assert!(valid_uid("0b1c2d3e-aaaa-bbbb-cccc-1234567890ab"));
        for bad in ["", "../x", "a/b", "a b"] {
            assert!(!valid_uid(bad), "{bad}");
        }
    }

    fn sandbox(host_network: bool, host_pid: bool, share: bool) -> Sandbox {
        let mut config = SandboxConfig::new("u1", "web", "default");
        config.host_network = host_network;
        config.host_pid = host_pid;
        config.share_process_namespace = share;
        let run = PathBuf::from("/run/rekube");
        Sandbox {
            netns: (!host_network).then(|| run.join("netns/u1")),
            utsns: (!host_network).then(|| run.join("utsns/u1")),
            ipcns: Some(run.join("ipcns/u1")),
            pidns: (share && !host_pid).then(|| run.join("pidns/u1")),
            dir: run.join("pods/u1"),
            shm: Some(run.join("pods/u1/shm")),
            cgroup: "podu1".into(),
            ips: vec![],
            pause: None,
            config,
        }
    }

    #[test]
    fn apply_to_a_container_spec() {
        let base = ContainerSpec::new(
            "c",
            RootfsSource::Path("/r".into()),
            vec!["/bin/true".into()],
        );
        let cases = [
            (
                "pod network",
                false,
                false,
                false,
                NsMode::Join("/run/rekube/netns/u1".into()),
                NsMode::New,
            ),
            (
                "host network",
                true,
                false,
                false,
                NsMode::Host,
                NsMode::New,
            ),
            (
                "shared pid",
                false,
                false,
                true,
                NsMode::Join("/run/rekube/netns/u1".into()),
                NsMode::Join("/run/rekube/pidns/u1".into()),
            ),
            (
                "host pid",
                false,
                true,
                true,
                NsMode::Join("/run/rekube/netns/u1".into()),
                NsMode::Host,
            ),
        ];
        for (name, hn, hp, share, net, pid) in cases {
            let mut spec = base.clone();
            sandbox(hn, hp, share).apply_to(&mut spec);
            assert_eq!(spec.namespaces.network, net, "{name}");
            assert_eq!(spec.namespaces.pid, pid, "{name}");
            assert_eq!(
                spec.namespaces.ipc,
                NsMode::Join("/run/rekube/ipcns/u1".into()),
                "{name}"
            );
            assert_eq!(spec.cgroup_parent, "podu1", "{name}");
            assert_eq!(
                spec.dev_shm,
                Some(PathBuf::from("/run/rekube/pods/u1/shm")),
                "{name}"
            );
            let dests: Vec<&Path> = spec
                .mounts
                .iter()
                .map(|m| m.destination.as_path())
                .collect();
            assert_eq!(
                dests,
                vec![
                    Path::new("/etc/hostname"),
                    Path::new("/etc/hosts"),
                    Path::new("/etc/resolv.conf")
                ]
            );
        }
    }
}
