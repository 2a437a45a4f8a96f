//! The container runtime: what containerd + runc are to the kubelet, as a library the
//! SyncPod layer calls directly (no CRI socket, no shim). Its structure is youki's: the
//! kernel behind [`syscall::Syscall`], cgroups behind [`cgroups::CgroupManager`], and the
//! OCI-spec-like [`spec::ContainerSpec`] as pure data.
//!
//! - [`sandbox`]: the pod sandbox (network, UTS, IPC namespaces held by bind mounts under
//!   the run directory, the shared /dev/shm, a pause process for a shared PID namespace,
//!   the pod cgroup, the [`sandbox::PodNetwork`] seam);
//! - [`container`]: create, start, wait, stop, remove, and exec into a container;
//! - [`process`]: the fork and the child's setup (namespaces, rootfs, user, capabilities);
//! - [`rootfs`]: overlayfs and the mounts inside the container;
//! - [`mountinfo`]: mount propagation on the host (the kubelet's `MakeRShared` of its
//!   root directory, containerd's shared/slave checks of a volume's source);
//! - [`logs`]: CRI-format log files with rotation;
//! - [`recovery`]: removing what a previous agent process left;
//! - [`network`]: the pod IP from the node's podCIDR (host-local IPAM), on loopback until
//!   real pod networking;
//! - [`leaks`] and [`busybox`]: test and benchmark helpers (nothing left behind; a
//!   busybox rootfs).
//!
//! The API, in SyncPod order: [`Runtime::create_sandbox`], [`Runtime::create_container`]
//! (with [`sandbox::Sandbox::apply_to`] on the spec), [`Runtime::start_container`],
//! [`Runtime::wait_container`], [`Runtime::stop_container`], [`Runtime::remove_container`],
//! [`Runtime::remove_sandbox`]; [`Runtime::exec_in`] for exec probes and hooks.

pub mod bpf;
pub mod busybox;
pub mod cgroups;
pub mod container;
pub mod devicefilter;
pub mod expansion;
pub mod leaks;
pub mod logs;
pub mod mountinfo;
pub mod network;
pub mod process;
pub mod recovery;
pub mod rootfs;
pub mod sandbox;
pub mod spec;
pub mod syscall;

use std::path::PathBuf;
use std::sync::Arc;

pub use container::{Container, ContainerError, ContainerExit, ContainerState, ExecResult};
pub use sandbox::{LoopbackNetwork, PodNetwork, Sandbox, SandboxConfig, SandboxError};
pub use spec::ContainerSpec;

/// Where the runtime keeps things and names its cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Per-container directories (overlay upper, work and mount point), like
    /// containerd's snapshotter state: `/var/lib/rekube/containers`.
    pub state_dir: PathBuf,
    /// Namespace files and per-pod files (hostname, hosts, resolv.conf, shm):
    /// `/run/rekube`.
    pub run_dir: PathBuf,
    /// The cgroup every pod cgroup is made under: `rekube` (kubelet's `kubepods`).
    pub cgroup_parent: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_dir: PathBuf::from("/var/lib/rekube/containers"),
            run_dir: PathBuf::from("/run/rekube"),
            cgroup_parent: "rekube".to_string(),
        }
    }
}

/// The runtime: configuration, the cgroup manager and the pod network.
#[derive(Clone)]
pub struct Runtime {
    config: RuntimeConfig,
    cgroups: Arc<dyn cgroups::CgroupManager>,
    network: Arc<dyn PodNetwork>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("cgroup_version", &self.cgroups.version())
            .finish()
    }
}

impl Runtime {
    /// A runtime on the host's cgroup version with a loopback-only pod network.
    pub fn new(config: RuntimeConfig) -> Result<Self, cgroups::CgroupError> {
        let cgroups: Arc<dyn cgroups::CgroupManager> =
            Arc::from(cgroups::host_manager(&config.cgroup_parent)?);
        Ok(Self::with_parts(config, cgroups, Arc::new(LoopbackNetwork)))
    }

    /// A runtime on the host's cgroup version with `network` for pods.
    pub fn with_network(
        config: RuntimeConfig,
        network: Arc<dyn PodNetwork>,
    ) -> Result<Self, cgroups::CgroupError> {
        let cgroups: Arc<dyn cgroups::CgroupManager> =
            Arc::from(cgroups::host_manager(&config.cgroup_parent)?);
        Ok(Self::with_parts(config, cgroups, network))
    }

    pub fn with_parts(
        config: RuntimeConfig,
        cgroups: Arc<dyn cgroups::CgroupManager>,
        network: Arc<dyn PodNetwork>,
    ) -> Self {
        Runtime {
            config,
            cgroups,
            network,
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn cgroups(&self) -> &Arc<dyn cgroups::CgroupManager> {
        &self.cgroups
    }
}
