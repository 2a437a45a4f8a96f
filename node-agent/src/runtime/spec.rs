//! What one container is made of, as pure data: [`ContainerSpec`] (the part of an OCI
//! runtime spec rekube uses) and the pure decisions that fill it, each following the code
//! that makes it upstream:
//!
//! - [`combine_command`]: containerd's CRI `WithProcessArgs` (ENTRYPOINT/CMD vs
//!   command/args, from moby's daemon/commit.go), after kubelet's
//!   `ExpandContainerCommandAndArgs` ([`expand_command_and_args`]);
//! - [`make_environment`]: kubelet's `makeEnvironmentVariables` (`$(VAR)` expansion over
//!   the variables declared before, then service variables);
//! - [`merge_env`]: containerd's `WithEnv`/`replaceOrAppendEnvValues` (HOSTNAME, image
//!   ENV, then the container's env);
//! - [`resolve_user`]: containerd's `WithUser`, `WithUserID`, `WithAdditionalGIDs` and the
//!   CRI's `generateUserString` (USER as `uid`, `uid:gid`, `name`, `name:group`, with
//!   `/etc/passwd` and `/etc/group` read from the image's rootfs);
//! - the defaults: capabilities, masked and read-only paths of containerd's
//!   `pkg/oci/spec.go` and CRI plugin, `no_new_privs` unless allowPrivilegeEscalation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use caps::Capability;
use nix::sys::signal::Signal;

use super::cgroups::Resources;
use super::expansion::{expand, mapping_func_for};

/// Errors deciding a container's spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified for container {0}")]
    NoCommand(String),
    #[error("invalid USER value {0:?}")]
    InvalidUser(String),
    #[error("user {user:?} not found in {file}")]
    UnknownUser { user: String, file: String },
    #[error("group {group:?} not found in {file}")]
    UnknownGroup { group: String, file: String },
    #[error("user group {0:?} is specified without user")]
    GroupWithoutUser(String),
    #[error(
        "error gathering device information while adding custom device {path:?}: not a device node"
    )]
    NotADevice { path: String },
    #[error("error gathering device information while adding custom device {path:?}: {source}")]
    Device {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The capabilities a container gets by default: containerd's CRI defaults (and
/// Docker's), which Kubernetes documents as the default set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// containerd's default masked paths (`pkg/oci/spec.go` `populateDefaultUnixSpec`).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// containerd's `defaultUnixEnv`: the PATH a container gets when its image sets none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSource {
    /// Image layers as overlayfs lower directories, top layer first; the runtime adds a
    /// writable upper directory per container.
    Layers(Vec<PathBuf>),
    /// A ready directory used in place (bind-mounted onto itself), as an OCI bundle's
    /// `root.path`.
    Path(PathBuf),
}

/// How a container gets one kind of namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsMode {
    /// The host's (hostNetwork, hostPID, hostIPC).
    Host,
    /// A new one for this container alone.
    New,
    /// The one held at this path (a sandbox's bind-mounted namespace file).
    Join(PathBuf),
}

/// The namespaces of a container besides its own mount namespace (always new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    pub network: NsMode,
    pub uts: NsMode,
    pub ipc: NsMode,
    pub pid: NsMode,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            network: NsMode::New,
            uts: NsMode::New,
            ipc: NsMode::New,
            pid: NsMode::New,
        }
    }
}

/// The CRI's `MountPropagation` (cri-api runtime/v1): what becomes of mounts made under a
/// bind mount, on the host or in the container, as containerd's `WithMounts` sets it on
/// the bind mount (the kubelet's `translateMountPropagation` picks it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountPropagation {
    /// `PROPAGATION_PRIVATE`: `rprivate`, no mount propagates either way.
    #[default]
    Private,
    /// `PROPAGATION_HOST_TO_CONTAINER`: `rslave`, the host's mounts reach the container;
    /// the source must be on a shared or slave mount.
    HostToContainer,
    /// `PROPAGATION_BIDIRECTIONAL`: `rshared`, mounts propagate both ways; the source must
    /// be on a shared mount, and the container's rootfs becomes rshared.
    Bidirectional,
}

/// A bind mount into the container (volumes, /etc/hosts, /etc/hostname, /etc/resolv.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub readonly: bool,
    /// Private unless a volumeMount asks otherwise (the CRI's default; containerd's own
    /// mounts, /etc/hosts, /etc/hostname, /etc/resolv.conf and /dev/shm, are private too).
    pub propagation: MountPropagation,
}

impl BindMount {
    pub fn new(
        source: impl Into<PathBuf>,
        destination: impl Into<PathBuf>,
        readonly: bool,
    ) -> Self {
        BindMount {
            source: source.into(),
            destination: destination.into(),
            readonly,
            propagation: MountPropagation::Private,
        }
    }

    pub fn with_propagation(mut self, propagation: MountPropagation) -> Self {
        self.propagation = propagation;
        self
    }
}

/// A device node's type (OCI `linux.devices[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Block,
    Char,
}

impl DeviceKind {
    /// The type letter of the OCI spec and of device cgroup rules.
    pub fn letter(self) -> char {
        match self {
            DeviceKind::Block => 'b',
            DeviceKind::Char => 'c',
        }
    }
}

/// A device of the container: the node made at `path` in it (OCI `linux.devices`) and
/// the access its device cgroup allows (`linux.resources.devices`), as containerd's
/// CRI `WithDevices` adds both for each CRI `Device` (kubelet's `makeBlockVolumes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDevice {
    /// Absolute path inside the container (the volumeDevice's `devicePath`).
    pub path: PathBuf,
    pub kind: DeviceKind,
    pub major: u64,
    pub minor: u64,
    /// The host node's permission bits, owner and group.
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The host's node (what is bound where mknod is refused).
    pub host_path: PathBuf,
    /// The cgroup access: `mrw`, or `r` for a read-only volume.
    pub access: String,
}

impl ContainerDevice {
    /// The device cgroup rule allowing it (`b 7:3 mrw`).
    pub fn cgroup_rule(&self) -> String {
        format!(
            "{} {}:{} {}",
            self.kind.letter(),
            self.major,
            self.minor,
            self.access
        )
    }
}

/// containerd's `oci.DeviceFromPath` over the status of the host's node (`mode` as
/// stat's `st_mode`), with the container's path and the access (`oci.WithDevices`): a
/// block or character device, or the refusal containerd gives anything else.
pub fn device_from_stat(
    host_path: &Path,
    container_path: &Path,
    mode: u32,
    rdev: u64,
    uid: u32,
    gid: u32,
    access: &str,
) -> Result<ContainerDevice, SpecError> {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFBLK => DeviceKind::Block,
        libc::S_IFCHR => DeviceKind::Char,
        _ => {
            return Err(SpecError::NotADevice {
                path: host_path.display().to_string(),
            });
        }
    };
    Ok(ContainerDevice {
        path: container_path.to_path_buf(),
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        file_mode: mode & !libc::S_IFMT,
        uid,
        gid,
        host_path: host_path.to_path_buf(),
        access: access.to_string(),
    })
}

/// containerd's CRI `WithDevices` for one CRI device: the host path's symlinks resolved
/// (`ResolveSymbolicLink`), then [`device_from_stat`] of what it names.
pub fn device_from_path(
    host_path: &Path,
    container_path: &Path,
    access: &str,
) -> Result<ContainerDevice, SpecError> {
    use std::os::unix::fs::MetadataExt;
    let gathering = |source: std::io::Error| SpecError::Device {
        path: host_path.display().to_string(),
        source,
    };
    let resolved = std::fs::canonicalize(host_path).map_err(gathering)?;
    let meta = std::fs::symlink_metadata(&resolved).map_err(gathering)?;
    device_from_stat(
        &resolved,
        container_path,
        meta.mode(),
        meta.rdev(),
        meta.uid(),
        meta.gid(),
        access,
    )
}

/// The process identity: OCI `process.user`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Where the container's stdout and stderr go: a CRI-format log file (kubelet's
/// `/var/log/pods/<ns>_<name>_<uid>/<container>/<restart>.log`), rotated by size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub path: PathBuf,
    /// kubelet `--container-log-max-size` (default 10Mi).
    pub max_size: u64,
    /// kubelet `--container-log-max-files` (default 5, at least 2).
    pub max_files: usize,
}

impl LogConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogConfig {
            path: path.into(),
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// One container, as the runtime creates it.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The container's name in its pod (for messages and logs).
    pub name: String,
    pub rootfs: RootfsSource,
    /// securityContext.readOnlyRootFilesystem.
    pub readonly_rootfs: bool,
    /// The full argv (see [`combine_command`]).
    pub args: Vec<String>,
    /// `NAME=value` (see [`merge_env`]).
    pub env: Vec<String>,
    /// workingDir, or the image's WORKDIR, or `/`.
    pub cwd: PathBuf,
    pub user: UserSpec,
    pub namespaces: Namespaces,
    /// The hostname set in a new UTS namespace (a container without a sandbox).
    pub hostname: Option<String>,
    /// Bind mounts in order (volumes, then the sandbox's /etc files).
    pub mounts: Vec<BindMount>,
    /// Device nodes made in the container besides the default ones (a pod's
    /// volumeDevices), each allowed by its cgroup with its own access.
    pub devices: Vec<ContainerDevice>,
    /// The sandbox's shared /dev/shm (bind-mounted); `None`: a private tmpfs.
    pub dev_shm: Option<PathBuf>,
    pub capabilities: Vec<Capability>,
    pub privileged: bool,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    /// `!allowPrivilegeEscalation` (true unless it is set, or the container is privileged).
    pub no_new_privs: bool,
    pub resources: Resources,
    /// The cgroup the container's cgroup is made under, relative to the runtime's parent
    /// (the pod's cgroup, `pod<uid>`); empty for the parent itself.
    pub cgroup_parent: String,
    /// The image's STOPSIGNAL (SIGTERM by default).
    pub stop_signal: Signal,
    /// Where stdout/stderr go; `None`: /dev/null.
    pub log: Option<LogConfig>,
}

impl ContainerSpec {
    /// A container with upstream's defaults: root, `/`, the default PATH, new namespaces,
    /// default capabilities, masked and read-only paths, no_new_privs.
    pub fn new(name: impl Into<String>, rootfs: RootfsSource, args: Vec<String>) -> Self {
        ContainerSpec {
            name: name.into(),
            rootfs,
            readonly_rootfs: false,
            args,
            env: vec![DEFAULT_PATH_ENV.to_string()],
            cwd: PathBuf::from("/"),
            user: UserSpec::default(),
            namespaces: Namespaces::default(),
            hostname: None,
            mounts: Vec::new(),
            devices: Vec::new(),
            dev_shm: None,
            capabilities: DEFAULT_CAPABILITIES.to_vec(),
            privileged: false,
            masked_paths: DEFAULT_MASKED_PATHS.iter().map(PathBuf::from).collect(),
            readonly_paths: DEFAULT_READONLY_PATHS.iter().map(PathBuf::from).collect(),
            no_new_privs: true,
            resources: Resources::default(),
            cgroup_parent: String::new(),
            stop_signal: Signal::SIGTERM,
            log: None,
        }
    }

    /// securityContext.privileged: every capability the runtime has, the host's devices,
    /// /sys writable, nothing masked or read-only, and
    /// privilege escalation allowed (upstream validation requires it).
    pub fn set_privileged(&mut self) {
        self.privileged = true;
        // containerd's `WithAllCurrentCapabilities`: every capability the runtime itself
        // has (more would be refused by capset).
        self.capabilities = caps::read(None, caps::CapSet::Effective)
            .unwrap_or_default()
            .into_iter()
            .collect();
        self.capabilities.sort_by_key(|c| c.index());
        self.masked_paths.clear();
        self.readonly_paths.clear();
        self.no_new_privs = false;
    }

    /// securityContext.capabilities add/drop over the default set, as containerd's
    /// `WithCapabilities` (`ALL` in drop clears the set before adding).
    pub fn apply_capability_changes(&mut self, add: &[String], drop: &[String]) {
        let parse = |name: &str| -> Option<Capability> {
            let upper = name.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            full.parse().ok()
        };
        let mut set: BTreeSet<usize> = self
            .capabilities
            .iter()
            .map(|c| c.index() as usize)
            .collect();
        if drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
            set.clear();
        } else {
            for cap in drop.iter().filter_map(|d| parse(d)) {
                set.remove(&(cap.index() as usize));
            }
        }
        if add.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
            set.extend(caps::all().into_iter().map(|c| c.index() as usize));
        } else {
            set.extend(
                add.iter()
                    .filter_map(|a| parse(a))
                    .map(|c| c.index() as usize),
            );
        }
        let mut all: Vec<Capability> = caps::all().into_iter().collect();
        all.sort_by_key(|c| c.index());
        self.capabilities = all
            .into_iter()
            .filter(|c| set.contains(&(c.index() as usize)))
            .collect();
    }

    /// The value of `name` in [`ContainerSpec::env`].
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|e| {
            let (k, v) = e.split_once('=')?;
            (k == name).then_some(v)
        })
    }
}

/// kubelet's `ExpandContainerCommandAndArgs`: `$(VAR)` in command and args resolved
/// against the container's environment.
pub fn expand_command_and_args(
    command: &[String],
    args: &[String],
    env: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let contexts: [&[(String, String)]; 1] = [env];
    let mapping = mapping_func_for(&contexts);
    (
        command.iter().map(|c| expand(c, &mapping)).collect(),
        args.iter().map(|a| expand(a, &mapping)).collect(),
    )
}

/// containerd CRI's `WithProcessArgs` (after moby's daemon/commit.go): a command replaces
/// the image's ENTRYPOINT and drops its CMD; args alone replace CMD and keep ENTRYPOINT.
/// An ENTRYPOINT of `[""]` means none.
pub fn combine_command(
    container: &str,
    image_entrypoint: &[String],
    image_cmd: &[String],
    command: &[String],
    args: &[String],
) -> Result<Vec<String>, SpecError> {
    let mut command = command.to_vec();
    let mut args = args.to_vec();
    if command.is_empty() {
        if args.is_empty() {
            args = image_cmd.to_vec();
        }
        if !(image_entrypoint.len() == 1 && image_entrypoint[0].is_empty()) {
            command = image_entrypoint.to_vec();
        }
    }
    if command.is_empty() && args.is_empty() {
        return Err(SpecError::NoCommand(container.to_string()));
    }
    command.extend(args);
    Ok(command)
}

/// An env var of the container spec: a literal `value` (expanded) or a value resolved
/// from `valueFrom` (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef: used
/// as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    Resolved(String),
}

/// kubelet's `makeEnvironmentVariables` after sources are resolved: `env_from` pairs
/// (already prefixed) first, then each `env` entry in order, literal values expanded
/// against the variables defined so far and then the service variables; service
/// variables the pod does not define come last. Later definitions win, in place.
pub fn make_environment(
    env_from: &[(String, String)],
    env: &[(String, EnvValue)],
    service_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut result: Vec<(String, String)> = Vec::new();
    let set = |result: &mut Vec<(String, String)>, name: &str, value: String| match result
        .iter_mut()
        .find(|(k, _)| k == name)
    {
        Some(entry) => entry.1 = value,
        None => result.push((name.to_string(), value)),
    };
    for (name, value) in env_from {
        set(&mut result, name, value.clone());
    }
    for (name, value) in env {
        let value = match value {
            EnvValue::Resolved(v) => v.clone(),
            EnvValue::Literal(v) => {
                let contexts: [&[(String, String)]; 2] = [&result, service_env];
                expand(v, mapping_func_for(&contexts))
            }
        };
        set(&mut result, name, value);
    }
    for (name, value) in service_env {
        if !result.iter().any(|(k, _)| k == name) {
            result.push((name.clone(), value.clone()));
        }
    }
    result
}

/// containerd's `replaceOrAppendEnvValues`: overrides replace same-named defaults in
/// place or are appended; an override without `=` unsets the name.
pub fn replace_or_append_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut results: Vec<Option<String>> = defaults.iter().cloned().map(Some).collect();
    for value in overrides {
        let k = key(value);
        let existing = results
            .iter()
            .position(|r| r.as_deref().is_some_and(|r| key(r) == k));
        if !value.contains('=') {
            if let Some(i) = existing {
                results[i] = None;
            }
            continue;
        }
        match existing {
            Some(i) => results[i] = Some(value.clone()),
            None => results.push(Some(value.clone())),
        }
    }
    results.into_iter().flatten().collect()
}

/// The container's final environment, as containerd's CRI builds it: the default PATH
/// (when the image sets none), `HOSTNAME`, the image's ENV, then the container's env.
pub fn merge_env(
    hostname: &str,
    image_env: &[String],
    container_env: &[(String, String)],
) -> Vec<String> {
    let mut env = Vec::new();
    if !image_env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH_ENV.to_string());
    }
    env = replace_or_append_env(&env, &[format!("HOSTNAME={hostname}")]);
    let mut overrides: Vec<String> = image_env.to_vec();
    overrides.extend(container_env.iter().map(|(k, v)| format!("{k}={v}")));
    replace_or_append_env(&env, &overrides)
}

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// /etc/passwd lines `name:password:uid:gid:gecos:home:shell`; malformed lines skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// /etc/group lines `name:password:gid:member,member`; malformed lines skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The user database of an image: its /etc/passwd and /etc/group (absent files are empty).
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    pub passwd: Option<Vec<PasswdEntry>>,
    pub group: Option<Vec<GroupEntry>>,
}

impl UserDb {
    pub fn from_texts(passwd: Option<&str>, group: Option<&str>) -> Self {
        UserDb {
            passwd: passwd.map(parse_passwd),
            group: group.map(parse_group),
        }
    }

    /// Reads `etc/passwd` and `etc/group` from the topmost of `layers` (top first) that
    /// has them, refusing symlinks so that an image cannot point the runtime at a host
    /// file.
    pub fn from_layers(layers: &[PathBuf]) -> Result<Self, SpecError> {
        let read = |rel: &str| -> Result<Option<String>, SpecError> {
            for layer in layers {
                let etc = layer.join("etc");
                match std::fs::symlink_metadata(&etc) {
                    Ok(m) if m.is_dir() => {}
                    _ => continue,
                }
                let path = layer.join(rel);
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                {
                    Ok(mut f) => {
                        let mut s = String::new();
                        std::io::Read::read_to_string(&mut f, &mut s).map_err(|source| {
                            SpecError::Read {
                                path: path.display().to_string(),
                                source,
                            }
                        })?;
                        return Ok(Some(s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
                    Err(source) => {
                        return Err(SpecError::Read {
                            path: path.display().to_string(),
                            source,
                        });
                    }
                }
            }
            Ok(None)
        };
        Ok(UserDb::from_texts(
            read("etc/passwd")?.as_deref(),
            read("etc/group")?.as_deref(),
        ))
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|u| u.uid == uid)
    }

    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|u| u.name == name)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.group.as_ref()?.iter().find(|g| g.name == name)
    }
}

/// containerd's `WithUser`: `uid`, `name`, `uid:gid`, `name:group` (and mixes). A numeric
/// uid absent from /etc/passwd gets gid 0; a name must exist.
pub fn parse_user(user: &str, db: &UserDb) -> Result<(u32, u32), SpecError> {
    let parts: Vec<&str> = user.split(':').collect();
    match parts.as_slice() {
        [u] => {
            match u.parse::<u32>() {
                Ok(uid) => Ok((uid, db.user_by_uid(uid).map_or(0, |e| e.gid))),
                Err(_) => db.user_by_name(u).map(|e| (e.uid, e.gid)).ok_or_else(|| {
                    SpecError::UnknownUser {
                        user: u.to_string(),
                        file: "/etc/passwd".into(),
                    }
                }),
            }
        }
        [u, g] => {
            let uid = match u.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => {
                    db.user_by_name(u)
                        .ok_or_else(|| SpecError::UnknownUser {
                            user: u.to_string(),
                            file: "/etc/passwd".into(),
                        })?
                        .uid
                }
            };
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    db.group_by_name(g)
                        .ok_or_else(|| SpecError::UnknownGroup {
                            group: g.to_string(),
                            file: "/etc/group".into(),
                        })?
                        .gid
                }
            };
            Ok((uid, gid))
        }
        _ => Err(SpecError::InvalidUser(user.to_string())),
    }
}

/// The container's user, as containerd's CRI decides it: runAsUser/runAsGroup (as the
/// CRI's `generateUserString`) or else the image's USER, resolved by [`parse_user`]; the
/// additional gids are the primary gid, the groups /etc/group lists the user in, then
/// supplementalGroups (`WithAdditionalGIDs` + `WithSupplementalGroups`, policy Merge).
pub fn resolve_user(
    image_user: &str,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    supplemental_groups: &[i64],
    db: &UserDb,
) -> Result<UserSpec, SpecError> {
    let image_user_part = image_user.split(':').next().unwrap_or("");
    let user_str = match (run_as_user, run_as_group) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u.to_string(),
        (None, Some(g)) => {
            // Upstream's CRI refuses a group without a user; kubelet's API allows it, so
            // the image's user (or root) is kept with the group.
            let user = if image_user_part.is_empty() {
                "0"
            } else {
                image_user_part
            };
            format!("{user}:{g}")
        }
        (None, None) => image_user.to_string(),
    };
    let (uid, gid) = if user_str.is_empty() {
        (0, 0)
    } else {
        parse_user(&user_str, db)?
    };
    // The name /etc/group lists members by.
    let lookup = match run_as_user {
        Some(u) => u.to_string(),
        None if !image_user_part.is_empty() => image_user_part.to_string(),
        None => "0".to_string(),
    };
    let username = match lookup.parse::<u32>() {
        Ok(uid) => db.user_by_uid(uid).map(|u| u.name.clone()),
        Err(_) => Some(lookup),
    };
    let mut gids = vec![gid];
    if let (Some(name), Some(groups)) = (username, db.group.as_ref()) {
        for g in groups {
            if g.name != name && g.members.contains(&name) && !gids.contains(&g.gid) {
                gids.push(g.gid);
            }
        }
    }
    for g in supplemental_groups {
        let g = *g as u32;
        if !gids.contains(&g) {
            gids.push(g);
        }
    }
    Ok(UserSpec {
        uid,
        gid,
        additional_gids: gids,
    })
}

/// The working directory: workingDir, else the image's WORKDIR, else `/`.
pub fn working_dir(container: Option<&str>, image: Option<&str>) -> PathBuf {
    [container, image]
        .into_iter()
        .flatten()
        .find(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// The stop signal from the image's STOPSIGNAL (`SIGTERM`, `TERM` or a number).
pub fn parse_stop_signal(value: &str) -> Option<Signal> {
    let v = value.trim();
    if v.is_empty() {
        return Some(Signal::SIGTERM);
    }
    if let Ok(n) = v.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = v.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

/// Whether `path` is absolute and free of `..` (mount destinations must be).
pub fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests: one tuple per case
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn combine_command_table() {
        // (name, entrypoint, cmd, command, args, expected)
        let cases: &[(&str, &[&str], &[&str], &[&str], &[&str], Option<&[&str]>)] = &[
            (
                "image only",
                &["/ep"],
                &["c1", "c2"],
                &[],
                &[],
                Some(&["/ep", "c1", "c2"]),
            ),
            (
                "cmd only image",
                &[],
                &["/bin/sh"],
                &[],
                &[],
                Some(&["/bin/sh"]),
            ),
            (
                "command replaces entrypoint and drops cmd",
                &["/ep"],
                &["c1"],
                &["/cmd"],
                &[],
                Some(&["/cmd"]),
            ),
            (
                "args replace cmd keep entrypoint",
                &["/ep"],
                &["c1"],
                &[],
                &["a1"],
                Some(&["/ep", "a1"]),
            ),
            (
                "command and args",
                &["/ep"],
                &["c1"],
                &["/cmd"],
                &["a1", "a2"],
                Some(&["/cmd", "a1", "a2"]),
            ),
            (
                "args without any entrypoint",
                &[],
                &["c1"],
                &[],
                &["/a1"],
                Some(&["/a1"]),
            ),
            (
                "empty-string entrypoint means none",
                &[""],
                &["c1"],
                &[],
                &[],
                Some(&["c1"]),
            ),
            (
                "empty-string entrypoint and args",
                &[""],
                &["c1"],
                &[],
                &["/x"],
                Some(&["/x"]),
            ),
            ("nothing at all", &[], &[], &[], &[], None),
            (
                "entrypoint without cmd",
                &["/ep"],
                &[],
                &[],
                &[],
                Some(&["/ep"]),
            ),
        ];
        for (name, ep, cmd, command, args, expected) in cases {
            let got = combine_command("c", &s(ep), &s(cmd), &s(command), &s(args));
            match expected {
                Some(e) => assert_eq!(got.unwrap(), s(e), "{name}"),
                None => assert_eq!(
                    got.unwrap_err().to_string(),
                    "no command specified for container c",
                    "{name}"
                ),
            }
        }
    }

    #[test]
    fn expand_command_and_args_uses_the_container_env() {
        let env = vec![("FOO".to_string(), "bar".to_string())];
        let (c, a) =
            expand_command_and_args(&s(&["echo", "$(FOO)"]), &s(&["$(BAR)", "$$(FOO)"]), &env);
        assert_eq!(c, s(&["echo", "bar"]));
        assert_eq!(a, s(&["$(BAR)", "$(FOO)"]));
    }

    #[test]
    fn make_environment_table() {
        let lit = |v: &str| EnvValue::Literal(v.to_string());
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        type Case<'a> = (
            &'a str,
            Vec<(String, String)>,
            Vec<(String, EnvValue)>,
            Vec<(String, String)>,
            Vec<(String, String)>,
        );
        let cases: Vec<Case> = vec![
            (
                "chained references",
                vec![],
                vec![
                    ("FOO".into(), lit("bar")),
                    ("ZOO".into(), lit("$(FOO)-1")),
                    ("BLU".into(), lit("$(ZOO)-2")),
                ],
                vec![],
                pairs(&[("FOO", "bar"), ("ZOO", "bar-1"), ("BLU", "bar-1-2")]),
            ),
            (
                "a reference to a later variable stays verbatim",
                vec![],
                vec![("A".into(), lit("$(B)")), ("B".into(), lit("b"))],
                vec![],
                pairs(&[("A", "$(B)"), ("B", "b")]),
            ),
            (
                "service variables resolve and come last",
                vec![],
                vec![("URL".into(), lit("http://$(SVC_HOST)"))],
                pairs(&[("SVC_HOST", "10.0.0.1")]),
                pairs(&[("URL", "http://10.0.0.1"), ("SVC_HOST", "10.0.0.1")]),
            ),
            (
                "env overrides envFrom in place; resolved values are not expanded",
                pairs(&[("A", "from"), ("B", "b")]),
                vec![("A".into(), EnvValue::Resolved("$(B)".into()))],
                vec![],
                pairs(&[("A", "$(B)"), ("B", "b")]),
            ),
            (
                "pod variables hide service variables",
                vec![],
                vec![("SVC_HOST".into(), lit("mine"))],
                pairs(&[("SVC_HOST", "10.0.0.1")]),
                pairs(&[("SVC_HOST", "mine")]),
            ),
        ];
        for (name, env_from, env, service, expected) in cases {
            assert_eq!(
                make_environment(&env_from, &env, &service),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn replace_or_append_env_table() {
        let cases: &[(&str, &[&str], &[&str], &[&str])] = &[
            ("append", &["A=1"], &["B=2"], &["A=1", "B=2"]),
            (
                "replace in place",
                &["A=1", "B=2"],
                &["A=3"],
                &["A=3", "B=2"],
            ),
            ("unset", &["A=1", "B=2"], &["A"], &["B=2"]),
            ("unset unknown is ignored", &["A=1"], &["Z"], &["A=1"]),
            ("empty value is a value", &["A=1"], &["A="], &["A="]),
            ("value with =", &[], &["A=b=c"], &["A=b=c"]),
        ];
        for (name, d, o, e) in cases {
            assert_eq!(replace_or_append_env(&s(d), &s(o)), s(e), "{name}");
        }
    }

    #[test]
    fn merge_env_orders_hostname_image_then_container() {
        let env = merge_env(
            "pod-a",
            &s(&["PATH=/img/bin", "LANG=C", "HOSTNAME=image"]),
            &[("LANG".into(), "en".into()), ("X".into(), "1".into())],
        );
        assert_eq!(
            env,
            s(&["HOSTNAME=image", "PATH=/img/bin", "LANG=en", "X=1"])
        );
        let env = merge_env("pod-b", &[], &[]);
        assert_eq!(env, s(&[DEFAULT_PATH_ENV, "HOSTNAME=pod-b"]));
    }

    fn db() -> UserDb {
        UserDb::from_texts(
            Some(
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001:app:/home/app:/bin/sh\n",
            ),
            Some("root:x:0:\nwheel:x:10:root,app\napp:x:1001:\nstaff:x:50:app\nnogroup:x:65534:\n"),
        )
    }

    #[test]
    fn parse_user_table() {
        let db = db();
        let cases: &[(&str, Result<(u32, u32), &str>)] = &[
            ("0", Ok((0, 0))),
            ("1000", Ok((1000, 1001))),
            ("4242", Ok((4242, 0))),
            ("app", Ok((1000, 1001))),
            ("nobody", Ok((65534, 65534))),
            ("1000:50", Ok((1000, 50))),
            ("app:staff", Ok((1000, 50))),
            ("4242:wheel", Ok((4242, 10))),
            ("ghost", Err("user \"ghost\" not found in /etc/passwd")),
            (
                "app:ghosts",
                Err("group \"ghosts\" not found in /etc/group"),
            ),
            ("1:2:3", Err("invalid USER value \"1:2:3\"")),
        ];
        for (input, expected) in cases {
            let got = parse_user(input, &db).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_string), "{input}");
        }
        // Without an /etc/passwd, numeric users still work and names do not.
        let empty = UserDb::default();
        assert_eq!(parse_user("7", &empty).unwrap(), (7, 0));
        assert!(parse_user("app", &empty).is_err());
    }

    #[test]
    fn resolve_user_table() {
        let db = db();
        let cases: &[(
            &str,
            &str,
            Option<i64>,
            Option<i64>,
            &[i64],
            (u32, u32, &[u32]),
        )] = &[
            (
                "image default is root with its groups",
                "",
                None,
                None,
                &[],
                (0, 0, &[0, 10]),
            ),
            (
                "image USER name",
                "app",
                None,
                None,
                &[],
                (1000, 1001, &[1001, 10, 50]),
            ),
            (
                "runAsUser overrides image",
                "app",
                Some(0),
                None,
                &[],
                (0, 0, &[0, 10]),
            ),
            (
                "runAsUser unknown uid",
                "",
                Some(1234),
                None,
                &[],
                (1234, 0, &[0]),
            ),
            (
                "runAsUser and runAsGroup",
                "",
                Some(1000),
                Some(3000),
                &[],
                (1000, 3000, &[3000, 10, 50]),
            ),
            (
                "runAsGroup alone keeps the image user",
                "app",
                None,
                Some(7),
                &[],
                (1000, 7, &[7, 10, 50]),
            ),
            (
                "supplementalGroups appended once",
                "",
                Some(1000),
                None,
                &[50, 2000],
                (1000, 1001, &[1001, 10, 50, 2000]),
            ),
            (
                "image uid:gid",
                "1000:50",
                None,
                None,
                &[],
                (1000, 50, &[50, 10]),
            ),
        ];
        for (name, image, u, g, sup, (uid, gid, gids)) in cases {
            let got = resolve_user(image, *u, *g, sup, &db).unwrap();
            assert_eq!(
                got,
                UserSpec {
                    uid: *uid,
                    gid: *gid,
                    additional_gids: gids.to_vec()
                },
                "{name}"
            );
        }
    }

    #[test]
    fn user_db_reads_the_top_layer_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        let bottom = dir.path().join("bottom");
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::create_dir_all(bottom.join("etc")).unwrap();
        std::fs::write(bottom.join("etc/passwd"), "u:x:5:6::/:/bin/sh\n").unwrap();
        std::fs::write(bottom.join("etc/group"), "g:x:6:u\n").unwrap();
        std::fs::write(top.join("etc/passwd"), "u:x:7:8::/:/bin/sh\n").unwrap();
        let db = UserDb::from_layers(&[top.clone(), bottom.clone()]).unwrap();
        assert_eq!(parse_user("u", &db).unwrap(), (7, 8));
        assert_eq!(db.group.unwrap()[0].name, "g");

        std::fs::remove_file(top.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", top.join("etc/passwd")).unwrap();
        let db = UserDb::from_layers(&[top, bottom]).unwrap();
        assert!(
            db.passwd.is_none(),
            "a symlinked /etc/passwd is not followed"
        );
    }

    #[test]
    fn defaults_follow_containerd() {
        let spec = ContainerSpec::new("c", RootfsSource::Path("/r".into()), s(&["/bin/true"]));
        assert_eq!(spec.capabilities.len(), 14);
        assert!(spec.no_new_privs);
        assert_eq!(spec.masked_paths.len(), 11);
        assert!(spec.masked_paths.contains(&PathBuf::from("/proc/kcore")));
        assert_eq!(spec.readonly_paths.len(), 5);
        assert_eq!(spec.env, s(&[DEFAULT_PATH_ENV]));
        assert_eq!(spec.stop_signal, Signal::SIGTERM);

        let mut p = spec.clone();
        p.set_privileged();
        assert!(p.masked_paths.is_empty() && p.readonly_paths.is_empty() && !p.no_new_privs);
        assert_eq!(
            p.capabilities.len(),
            caps::read(None, caps::CapSet::Effective).unwrap().len()
        );
    }

    #[test]
    fn capability_changes_table() {
        let base = ContainerSpec::new("c", RootfsSource::Path("/r".into()), s(&["/x"]));
        let cases: &[(&str, &[&str], &[&str], usize, &[Capability], &[Capability])] = &[
            (
                "drop one",
                &[],
                &["NET_RAW"],
                13,
                &[],
                &[Capability::CAP_NET_RAW],
            ),
            (
                "add one",
                &["SYS_ADMIN"],
                &[],
                15,
                &[Capability::CAP_SYS_ADMIN],
                &[],
            ),
            (
                "CAP_ prefix accepted",
                &["CAP_NET_ADMIN"],
                &[],
                15,
                &[Capability::CAP_NET_ADMIN],
                &[],
            ),
            (
                "drop ALL add one",
                &["NET_BIND_SERVICE"],
                &["ALL"],
                1,
                &[Capability::CAP_NET_BIND_SERVICE],
                &[Capability::CAP_CHOWN],
            ),
        ];
        for (name, add, drop, len, has, lacks) in cases {
            let mut spec = base.clone();
            spec.apply_capability_changes(&s(add), &s(drop));
            assert_eq!(spec.capabilities.len(), *len, "{name}");
            for c in *has {
                assert!(spec.capabilities.contains(c), "{name}: {c:?}");
            }
            for c in *lacks {
                assert!(!spec.capabilities.contains(c), "{name}: {c:?}");
            }
        }
    }

    #[test]
    fn small_helpers() {
        assert_eq!(working_dir(Some(""), Some("/app")), PathBuf::from("/app"));
        assert_eq!(working_dir(Some("/w"), Some("/app")), PathBuf::from("/w"));
        assert_eq!(working_dir(None, None), PathBuf::from("/"));
        assert_eq!(parse_stop_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_stop_signal("usr1"), Some(Signal::SIGUSR1));
        assert_eq!(parse_stop_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_stop_signal(""), Some(Signal::SIGTERM));
        assert_eq!(parse_stop_signal("NOPE"), None);
        assert!(is_clean_absolute(Path::new("/data/x")));
        assert!(!is_clean_absolute(Path::new("data")));
        assert!(!is_clean_absolute(Path::new("/data/../etc")));
        let mut spec = ContainerSpec::new("c", RootfsSource::Path("/r".into()), s(&["/x"]));
        spec.env.push("PATH=/mine".into());
        assert_eq!(spec.env_value("PATH"), Some("/mine"));
    }

    /// containerd's `DeviceFromPath` and `WithDevices`: block and character nodes with
    /// their numbers, mode bits, owner and the access asked; anything else refused with
    /// containerd's message; the real /dev/null through its symlink-resolving shell.
    #[test]
    fn devices_from_the_hosts_nodes() {
        let dev = nix::sys::stat::makedev(7, 3);
        let got = device_from_stat(
            Path::new("/dev/loop3"),
            Path::new("/dev/xvda"),
            libc::S_IFBLK | 0o660,
            dev,
            0,
            6,
            "r",
        )
        .unwrap();
        assert_eq!(
            got,
            ContainerDevice {
                path: "/dev/xvda".into(),
                kind: DeviceKind::Block,
                major: 7,
                minor: 3,
                file_mode: 0o660,
                uid: 0,
                gid: 6,
                host_path: "/dev/loop3".into(),
                access: "r".into(),
            }
        );
        assert_eq!(got.cgroup_rule(), "b 7:3 r");
        let chr = device_from_stat(
            Path::new("/dev/null"),
            Path::new("/dev/n"),
            libc::S_IFCHR | 0o666,
            nix::sys::stat::makedev(1, 3),
            0,
            0,
            "mrw",
        )
        .unwrap();
        assert_eq!(
            (chr.kind, chr.cgroup_rule()),
            (DeviceKind::Char, "c 1:3 mrw".into())
        );
        for mode in [
            libc::S_IFREG | 0o644,
            libc::S_IFDIR | 0o755,
            libc::S_IFIFO | 0o600,
        ] {
            assert_eq!(
                device_from_stat(Path::new("/x"), Path::new("/y"), mode, 0, 0, 0, "mrw")
                    .unwrap_err()
                    .to_string(),
                "error gathering device information while adding custom device \"/x\": not a device node"
            );
        }
        // The shell: a symlink to /dev/null resolves to the node it names.
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let real = device_from_path(&link, Path::new("/dev/n"), "mrw").unwrap();
        assert_eq!(
            (real.host_path.as_path(), real.kind, real.major, real.minor),
            (Path::new("/dev/null"), DeviceKind::Char, 1, 3)
        );
        let missing = device_from_path(&tmp.path().join("gone"), Path::new("/dev/n"), "mrw");
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .starts_with("error gathering device information while adding custom device"),
        );
    }
}
