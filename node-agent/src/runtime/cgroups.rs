//! Pod and container cgroups behind one trait, as youki's `libcgroups` (`common.rs`
//! `CgroupManager`, `v1/`, `v2/`). The numbers follow kubelet's
//! `pkg/kubelet/cm/helpers_linux.go` (`MilliCPUToShares`, `MilliCPUToQuota`) and
//! `kuberuntime_container_linux.go` (shares from the request, or from the limit when only
//! a limit is set); cgroup v2's `cpu.weight` uses runc's `ConvertCPUSharesToCgroupV2Value`.
//! Removal follows runc's `cgroups.RemovePath`: kill what is left, then rmdir with
//! retries while the kernel still reports the cgroup busy.
//!
//! [`CgroupV1`] uses the cgroups-rs crate on the host's v1 hierarchies; [`CgroupV2`]
//! writes the unified hierarchy's files itself under a configurable root, so its code
//! paths are tested on a plain directory standing in for /sys/fs/cgroup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::cgroup::Cgroup;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::hierarchies::V1;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{CgroupPid, MaxValue};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{bpf, devicefilter};

/// kubelet's `MinShares`.
pub const MIN_SHARES: u64 = 2;
/// kubelet's `MaxShares`.
pub const MAX_SHARES: u64 = 262_144;
/// kubelet's `SharesPerCPU`.
pub const SHARES_PER_CPU: u64 = 1024;
/// kubelet's `MilliCPUToCPU`.
pub const MILLI_CPU_TO_CPU: i64 = 1000;
/// kubelet's `QuotaPeriod` (100 ms, in µs).
pub const QUOTA_PERIOD: u64 = 100_000;
/// kubelet's `MinQuotaPeriod` (1 ms, in µs).
pub const MIN_QUOTA_PERIOD: i64 = 1000;

/// kubelet's `MilliCPUToShares`: 0 → 2, else milli × 1024 / 1000 clamped to [2, 262144].
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = (milli_cpu as u64 * SHARES_PER_CPU) / MILLI_CPU_TO_CPU as u64;
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// kubelet's `MilliCPUToQuota`: 0 → no quota, else milli × period / 1000, at least 1000.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: u64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    let quota = (milli_cpu * period as i64) / MILLI_CPU_TO_CPU;
    quota.max(MIN_QUOTA_PERIOD)
}

/// runc's `ConvertCPUSharesToCgroupV2Value`: shares [2, 262144] → weight [1, 10000].
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.saturating_sub(2)) * 9999) / 262_142
}

/// runc's default device allowlist (libcontainer/specconv `AllowedDevices`, which
/// containerd's CRI keeps): mknod of anything, use of the default nodes and ptys.
pub const DEFAULT_ALLOWED_DEVICES: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The device rules of a container: the default allowlist (every device when
/// privileged), then each of its own devices with the access it was given (containerd's
/// `WithDevices`: `b 7:3 mrw`, `b 7:3 r` for a read-only volume device).
pub fn container_device_rules(
    privileged: bool,
    devices: &[super::spec::ContainerDevice],
) -> Vec<String> {
    let defaults = if privileged {
        vec!["a".to_string()]
    } else {
        DEFAULT_ALLOWED_DEVICES
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    defaults
        .into_iter()
        .chain(
            devices
                .iter()
                .map(super::spec::ContainerDevice::cgroup_rule),
        )
        .collect()
}

/// The limits of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    /// µs per period; `None`: unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Bytes.
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Device access: `None` inherits the parent's; `Some(rules)` denies everything,
    /// then allows each rule (`"c 1:3 rwm"`, `"a"` for all): v1's `devices.deny` and
    /// `devices.allow`, v2's eBPF device filter ([`apply_device_filter`]).
    pub devices: Option<Vec<String>>,
}

impl Resources {
    /// A container's resources from its requests and limits, as kubelet's
    /// `calculateLinuxResources`: shares from the CPU request (from the limit when only a
    /// limit is set; 2 when neither), CFS quota from the CPU limit with a 100 ms period,
    /// the memory limit as is.
    pub fn from_requests_limits(
        cpu_request_milli: Option<i64>,
        cpu_limit_milli: Option<i64>,
        memory_limit_bytes: Option<i64>,
    ) -> Self {
        let request = cpu_request_milli.unwrap_or(0);
        let limit = cpu_limit_milli.unwrap_or(0);
        let cpu_shares = if request == 0 && limit != 0 {
            milli_cpu_to_shares(limit)
        } else {
            milli_cpu_to_shares(request)
        };
        let (cpu_quota, cpu_period) = if limit > 0 {
            (
                Some(milli_cpu_to_quota(limit, QUOTA_PERIOD)),
                Some(QUOTA_PERIOD),
            )
        } else {
            (None, None)
        };
        Resources {
            cpu_shares: Some(cpu_shares),
            cpu_quota,
            cpu_period,
            memory_limit: memory_limit_bytes.filter(|m| *m > 0),
            pids_limit: None,
            devices: None,
        }
    }
}

/// OOM events of a memory cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OomEvents {
    /// Processes the OOM killer killed in the cgroup (v1 `memory.oom_control`
    /// `oom_kill`, v2 `memory.events` `oom_kill`).
    pub oom_kill: u64,
    /// The cgroup is out of memory right now (v1 `under_oom`).
    pub under_oom: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Errors managing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("create cgroup {path}: {message}")]
    Create { path: String, message: String },
    #[error("set {file} of cgroup {path} to {value}: {message}")]
    Apply {
        path: String,
        file: String,
        value: String,
        message: String,
    },
    #[error("add process {pid} to cgroup {path}: {message}")]
    AddPid {
        path: String,
        pid: i32,
        message: String,
    },
    #[error("read {file} of cgroup {path}: {message}")]
    Read {
        path: String,
        file: String,
        message: String,
    },
    #[error("remove cgroup {path}: {message}")]
    Remove { path: String, message: String },
    #[error("cgroup path {0:?} must be relative and free of '..'")]
    BadPath(String),
}

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// The cgroups of pods and containers under one parent (kubelet's `kubepods`, rekube's
/// `rekube` by default). Paths are relative to that parent: `pod<uid>`,
/// `pod<uid>/<container-id>`.
pub trait CgroupManager: Send + Sync {
    fn version(&self) -> CgroupVersion;
    /// The parent, relative to the hierarchy root.
    fn parent(&self) -> &str;
    /// Creates the cgroup (and its ancestors) if needed and applies `resources`.
    fn create(&self, path: &str, resources: &Resources) -> Result<()>;
    /// Applies `resources` to an existing cgroup.
    fn apply(&self, path: &str, resources: &Resources) -> Result<()>;
    /// Moves a process (all its threads) into the cgroup.
    fn add_pid(&self, path: &str, pid: i32) -> Result<()>;
    /// The processes in the cgroup (not its descendants).
    fn pids(&self, path: &str) -> Result<Vec<i32>>;
    fn oom_events(&self, path: &str) -> Result<OomEvents>;
    /// Reads one interface file (`cpu.cfs_quota_us`, `memory.max`, ...), trimmed.
    fn read(&self, path: &str, file: &str) -> Result<String>;
    /// Kills every process left in the cgroup and its descendants, then removes them,
    /// deepest first, retrying while the kernel reports them busy. Absent is fine.
    fn remove(&self, path: &str) -> Result<()>;
    /// Every cgroup below the parent (relative paths, sorted), for leak checks.
    fn list(&self) -> Result<Vec<String>>;
}

fn check_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(CgroupError::BadPath(path.to_string()));
    }
    Ok(())
}

fn join(parent: &str, path: &str) -> String {
    match (parent.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => parent.to_string(),
        (false, false) => format!("{parent}/{path}"),
    }
}

/// Every directory below `root` (relative, sorted, deepest after its parent).
fn walk_dirs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let child = rel.join(e.file_name());
                out.push(child.display().to_string());
                stack.push(child);
            }
        }
    }
    out.sort();
    out
}

/// Kills the pids with SIGKILL until `pids()` is empty or `timeout` passes.
fn kill_until_empty(pids: impl Fn() -> Vec<i32>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = pids();
        if left.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// rmdir with runc's retries (10 ms doubling, 5 tries) while the cgroup is busy.
fn rmdir_retry(dir: &Path) -> std::io::Result<()> {
    let mut delay = Duration::from_millis(10);
    for attempt in 0..5 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 4 => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The v1 controllers rekube uses.
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];

/// cgroup v1 through cgroups-rs: one directory per controller hierarchy.
pub struct CgroupV1 {
    parent: String,
    /// Mount point of each used controller (`/sys/fs/cgroup/memory`, ...).
    mounts: Vec<(String, PathBuf)>,
}

impl CgroupV1 {
    /// Under `parent` (relative to each hierarchy's root), on the host's hierarchies.
    pub fn new(parent: &str) -> Result<Self> {
        check_path(parent)?;
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| CgroupError::Create {
                path: parent.to_string(),
                message: format!("read /proc/self/mountinfo: {e}"),
            })?;
        let mut mounts = Vec::new();
        for m in rekube_csi::mountinfo::parse_lines(&mountinfo).flatten() {
            if m.fs_type != "cgroup" {
                continue;
            }
            for c in V1_CONTROLLERS {
                if m.super_options.split(',').any(|o| o == c)
                    && !mounts.iter().any(|(n, _): &(String, PathBuf)| n == c)
                {
                    mounts.push((c.to_string(), m.mount_point.clone()));
                }
            }
        }
        if mounts.is_empty() {
            return Err(CgroupError::Create {
                path: parent.to_string(),
                message: "no cgroup v1 hierarchy is mounted".into(),
            });
        }
        Ok(CgroupV1 {
            parent: parent.to_string(),
            mounts,
        })
    }

    fn full(&self, path: &str) -> String {
        join(&self.parent, path)
    }

    fn cgroup(&self, path: &str) -> Cgroup {
        Cgroup::load_with_specified_controllers(
            Box::new(V1::new()),
            self.full(path),
            V1_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        self.mounts
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, m)| m.join(self.full(path)))
    }

    fn apply_to(&self, cg: &Cgroup, path: &str, r: &Resources) -> Result<()> {
        let fail = |file: &str, value: String, e: cgroups_rs::error::Error| CgroupError::Apply {
            path: self.full(path),
            file: file.into(),
            value,
            message: e.to_string(),
        };
        if let Some(cpu) = cg.controller_of::<CpuController>() {
            if let Some(shares) = r.cpu_shares {
                cpu.set_shares(shares)
                    .map_err(|e| fail("cpu.shares", shares.to_string(), e))?;
            }
            if let Some(period) = r.cpu_period {
                cpu.set_cfs_period(period)
                    .map_err(|e| fail("cpu.cfs_period_us", period.to_string(), e))?;
            }
            let quota = r.cpu_quota.unwrap_or(-1);
            cpu.set_cfs_quota(quota)
                .map_err(|e| fail("cpu.cfs_quota_us", quota.to_string(), e))?;
        }
        if let Some(mem) = cg.controller_of::<MemController>() {
            // No swap beyond the limit (kubelet's NoSwap): memsw follows the memory limit.
            // memsw must stay ≥ the limit, so it is written on both sides of it.
            let limit = r.memory_limit.unwrap_or(-1);
            let memsw = self
                .dir("memory", path)
                .map(|d| d.join("memory.memsw.limit_in_bytes"));
            let has_memsw = memsw.as_ref().is_some_and(|f| f.exists());
            if has_memsw {
                let _ = mem.set_memswap_limit(limit);
            }
            mem.set_limit(limit)
                .map_err(|e| fail("memory.limit_in_bytes", limit.to_string(), e))?;
            if has_memsw {
                mem.set_memswap_limit(limit)
                    .map_err(|e| fail("memory.memsw.limit_in_bytes", limit.to_string(), e))?;
            }
        }
        if let (Some(rules), Some(dir)) = (&r.devices, self.dir("devices", path)) {
            let write = |file: &str, value: &str| {
                std::fs::write(dir.join(file), value).map_err(|e| CgroupError::Apply {
                    path: self.full(path),
                    file: file.into(),
                    value: value.into(),
                    message: e.to_string(),
                })
            };
            write("devices.deny", "a")?;
            for rule in rules {
                write("devices.allow", rule)?;
            }
        }
        if let Some(pids) = cg.controller_of::<PidController>() {
            let max = match r.pids_limit {
                Some(n) if n > 0 => MaxValue::Value(n),
                _ => MaxValue::Max,
            };
            pids.set_pid_max(max)
                .map_err(|e| fail("pids.max", format!("{:?}", r.pids_limit), e))?;
        }
        Ok(())
    }
}

impl CgroupManager for CgroupV1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn parent(&self) -> &str {
        &self.parent
    }

    fn create(&self, path: &str, resources: &Resources) -> Result<()> {
        check_path(path)?;
        let cg = Cgroup::new_with_specified_controllers(
            Box::new(V1::new()),
            self.full(path),
            Some(V1_CONTROLLERS.iter().map(|s| s.to_string()).collect()),
        )
        .map_err(|e| CgroupError::Create {
            path: self.full(path),
            message: e.to_string(),
        })?;
        self.apply_to(&cg, path, resources)
    }

    fn apply(&self, path: &str, resources: &Resources) -> Result<()> {
        check_path(path)?;
        self.apply_to(&self.cgroup(path), path, resources)
    }

    fn add_pid(&self, path: &str, pid: i32) -> Result<()> {
        check_path(path)?;
        self.cgroup(path)
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| CgroupError::AddPid {
                path: self.full(path),
                pid,
                message: e.to_string(),
            })
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>> {
        check_path(path)?;
        let mut pids = Vec::new();
        for (c, _) in &self.mounts {
            let Some(dir) = self.dir(c, path) else {
                continue;
            };
            match std::fs::read_to_string(dir.join("cgroup.procs")) {
                Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CgroupError::Read {
                        path: self.full(path),
                        file: "cgroup.procs".into(),
                        message: e.to_string(),
                    });
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn oom_events(&self, path: &str) -> Result<OomEvents> {
        let text = self.read(path, "memory.oom_control")?;
        Ok(parse_oom_control(&text))
    }

    fn read(&self, path: &str, file: &str) -> Result<String> {
        check_path(path)?;
        let controller = file.split('.').next().unwrap_or("");
        let dir = self
            .dir(controller, path)
            .ok_or_else(|| CgroupError::Read {
                path: self.full(path),
                file: file.into(),
                message: format!("controller {controller} is not mounted"),
            })?;
        std::fs::read_to_string(dir.join(file))
            .map(|s| s.trim().to_string())
            .map_err(|e| CgroupError::Read {
                path: self.full(path),
                file: file.into(),
                message: e.to_string(),
            })
    }

    fn remove(&self, path: &str) -> Result<()> {
        check_path(path)?;
        for (c, mount) in &self.mounts {
            let base = mount.join(self.full(path));
            if !base.exists() {
                continue;
            }
            let mut dirs: Vec<PathBuf> =
                walk_dirs(&base).into_iter().map(|d| base.join(d)).collect();
            dirs.push(base.clone());
            let all_pids = || {
                dirs.iter()
                    .flat_map(|d| {
                        std::fs::read_to_string(d.join("cgroup.procs"))
                            .unwrap_or_default()
                            .lines()
                            .filter_map(|l| l.trim().parse::<i32>().ok())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<i32>>()
            };
            if !kill_until_empty(all_pids, Duration::from_secs(10)) {
                return Err(CgroupError::Remove {
                    path: format!("{}:{}", c, self.full(path)),
                    message: "processes survived SIGKILL for 10s".into(),
                });
            }
            // Deepest first.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in &dirs {
                rmdir_retry(d).map_err(|e| CgroupError::Remove {
                    path: format!("{}:{}", c, d.display()),
                    message: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        for (c, mount) in &self.mounts {
            let base = mount.join(&self.parent);
            all.extend(walk_dirs(&base).into_iter().map(|d| format!("{c}:{d}")));
        }
        all.sort();
        Ok(all)
    }
}

/// v1 `memory.oom_control`: `oom_kill_disable 0`, `under_oom 0`, `oom_kill N`.
pub fn parse_oom_control(text: &str) -> OomEvents {
    let mut ev = OomEvents::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("under_oom"), Some(v)) => ev.under_oom = v != 0,
            (Some("oom_kill"), Some(v)) => ev.oom_kill = v,
            _ => {}
        }
    }
    ev
}

/// v2 `memory.events`: `low`, `high`, `max`, `oom`, `oom_kill` counters.
pub fn parse_memory_events(text: &str) -> OomEvents {
    let mut ev = OomEvents::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some("oom_kill"), Some(v)) =
            (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
        {
            ev.oom_kill = v;
        }
    }
    ev
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// cgroup v2 (the unified hierarchy), by writing its interface files under `root`.
pub struct CgroupV2 {
    root: PathBuf,
    parent: String,
    /// `root` is a real cgroup2 mount (else a plain directory in tests, where rmdir of a
    /// cgroup also removes the interface files a real cgroupfs would hide).
    real: bool,
}

/// The controllers enabled for children (`cgroup.subtree_control`).
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

impl CgroupV2 {
    /// Under `parent`, on the unified hierarchy mounted at `root` (/sys/fs/cgroup).
    pub fn new(root: impl Into<PathBuf>, parent: &str) -> Result<Self> {
        check_path(parent)?;
        let root = root.into();
        let real = nix::sys::statfs::statfs(&root)
            .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        Ok(CgroupV2 {
            root,
            parent: parent.to_string(),
            real,
        })
    }

    fn dir(&self, path: &str) -> PathBuf {
        self.root.join(join(&self.parent, path))
    }

    fn write(&self, path: &str, file: &str, value: &str) -> Result<()> {
        std::fs::write(self.dir(path).join(file), value).map_err(|e| CgroupError::Apply {
            path: join(&self.parent, path),
            file: file.into(),
            value: value.into(),
            message: e.to_string(),
        })
    }

    /// Enables the controllers for the children of every ancestor of `path`, from the
    /// root down (a cgroup gets a controller only if its parent delegates it).
    fn enable_controllers(&self, path: &str) -> Result<()> {
        let full = join(&self.parent, path);
        let mut ancestors = vec![self.root.clone()];
        let mut cur = self.root.clone();
        let comps: Vec<&str> = full.split('/').filter(|s| !s.is_empty()).collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            cur = cur.join(c);
            ancestors.push(cur.clone());
        }
        for dir in ancestors {
            let available = std::fs::read_to_string(dir.join("cgroup.controllers")).ok();
            let wanted: Vec<&str> = V2_CONTROLLERS
                .iter()
                .copied()
                .filter(|c| {
                    available
                        .as_deref()
                        .is_none_or(|a| a.split_whitespace().any(|x| x == *c))
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let value = wanted
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            std::fs::write(dir.join("cgroup.subtree_control"), &value).map_err(|e| {
                CgroupError::Apply {
                    path: dir.display().to_string(),
                    file: "cgroup.subtree_control".into(),
                    value,
                    message: e.to_string(),
                }
            })?;
        }
        Ok(())
    }
}

impl CgroupManager for CgroupV2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn parent(&self) -> &str {
        &self.parent
    }

    fn create(&self, path: &str, resources: &Resources) -> Result<()> {
        check_path(path)?;
        std::fs::create_dir_all(self.dir(path)).map_err(|e| CgroupError::Create {
            path: join(&self.parent, path),
            message: e.to_string(),
        })?;
        self.enable_controllers(path)?;
        self.apply(path, resources)
    }

    fn apply(&self, path: &str, r: &Resources) -> Result<()> {
        check_path(path)?;
        if let Some(shares) = r.cpu_shares {
            self.write(
                path,
                "cpu.weight",
                &cpu_shares_to_weight(shares).to_string(),
            )?;
        }
        let period = r.cpu_period.unwrap_or(QUOTA_PERIOD);
        let max = match r.cpu_quota {
            Some(q) if q > 0 => format!("{q} {period}"),
            _ => format!("max {period}"),
        };
        self.write(path, "cpu.max", &max)?;
        let mem = r
            .memory_limit
            .filter(|m| *m > 0)
            .map_or_else(|| "max".to_string(), |m| m.to_string());
        self.write(path, "memory.max", &mem)?;
        // No swap beyond the limit (kubelet's NoSwap).
        let swap = if r.memory_limit.is_some_and(|m| m > 0) {
            "0"
        } else {
            "max"
        };
        if !self.real || self.dir(path).join("memory.swap.max").exists() {
            self.write(path, "memory.swap.max", swap)?;
        }
        let pids = r
            .pids_limit
            .filter(|p| *p > 0)
            .map_or_else(|| "max".to_string(), |p| p.to_string());
        self.write(path, "pids.max", &pids)?;
        if let Some(rules) = &r.devices {
            let program = device_program(&join(&self.parent, path), rules)?;
            // A plain directory stands in for cgroupfs in tests: no program to attach.
            if self.real {
                attach_program(&self.dir(path), &join(&self.parent, path), &program)?;
            }
        }
        Ok(())
    }

    fn add_pid(&self, path: &str, pid: i32) -> Result<()> {
        check_path(path)?;
        std::fs::write(self.dir(path).join("cgroup.procs"), pid.to_string()).map_err(|e| {
            CgroupError::AddPid {
                path: join(&self.parent, path),
                pid,
                message: e.to_string(),
            }
        })
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>> {
        check_path(path)?;
        match std::fs::read_to_string(self.dir(path).join("cgroup.procs")) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(CgroupError::Read {
                path: join(&self.parent, path),
                file: "cgroup.procs".into(),
                message: e.to_string(),
            }),
        }
    }

    fn oom_events(&self, path: &str) -> Result<OomEvents> {
        Ok(parse_memory_events(&self.read(path, "memory.events")?))
    }

    fn read(&self, path: &str, file: &str) -> Result<String> {
        check_path(path)?;
        std::fs::read_to_string(self.dir(path).join(file))
            .map(|s| s.trim().to_string())
            .map_err(|e| CgroupError::Read {
                path: join(&self.parent, path),
                file: file.into(),
                message: e.to_string(),
            })
    }

    fn remove(&self, path: &str) -> Result<()> {
        check_path(path)?;
        let base = self.dir(path);
        if !base.exists() {
            return Ok(());
        }
        let mut dirs: Vec<PathBuf> = walk_dirs(&base).into_iter().map(|d| base.join(d)).collect();
        dirs.push(base.clone());
        // cgroup.kill (Linux 5.14) kills the whole subtree at once; the loop below
        // covers older kernels and stragglers.
        if self.real && base.join("cgroup.kill").exists() {
            let _ = std::fs::write(base.join("cgroup.kill"), "1");
        }
        let all_pids = || {
            dirs.iter()
                .flat_map(|d| {
                    std::fs::read_to_string(d.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<i32>>()
        };
        if self.real {
            if !kill_until_empty(all_pids, Duration::from_secs(10)) {
                return Err(CgroupError::Remove {
                    path: join(&self.parent, path),
                    message: "processes survived SIGKILL for 10s".into(),
                });
            }
        } else {
            // A plain directory: "processes" are just numbers in a file; kill none.
            for d in &dirs {
                let _ = std::fs::write(d.join("cgroup.procs"), "");
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            if !self.real {
                // What a cgroupfs rmdir does implicitly: drop the interface files.
                if let Ok(entries) = std::fs::read_dir(d) {
                    for e in entries.flatten() {
                        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
            rmdir_retry(d).map_err(|e| CgroupError::Remove {
                path: d.display().to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>> {
        Ok(walk_dirs(&self.root.join(&self.parent)))
    }
}

/// The encoded device filter for `rules` (runc's `DeviceFilter`).
fn device_program(path: &str, rules: &[String]) -> Result<Vec<u64>> {
    let rules = devicefilter::parse_rules(rules).map_err(|e| CgroupError::Apply {
        path: path.to_string(),
        file: "devices (eBPF)".into(),
        value: rules.join(", "),
        message: e.to_string(),
    })?;
    Ok(devicefilter::encode(&devicefilter::device_filter(&rules)))
}

fn attach_program(dir: &Path, path: &str, program: &[u64]) -> Result<()> {
    bpf::attach_device_filter(dir, program).map_err(|e| CgroupError::Apply {
        path: path.to_string(),
        file: "devices (eBPF)".into(),
        value: format!("{} instructions", program.len()),
        message: e.to_string(),
    })
}

/// cgroup v2's device controller, as runc and youki do it: the eBPF program for `rules`
/// attached to the cgroup directory `dir` (on a cgroup2 mount), replacing the one
/// attached before. [`CgroupV2::apply`] calls it; public for the tests on a hybrid
/// host, where /sys/fs/cgroup/unified is a cgroup2 mount without controllers.
pub fn apply_device_filter(dir: &Path, rules: &[String]) -> Result<()> {
    let path = dir.display().to_string();
    attach_program(dir, &path, &device_program(&path, rules)?)
}

/// The cgroup version of the host: v2 when /sys/fs/cgroup is the unified hierarchy.
pub fn host_cgroup_version() -> CgroupVersion {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(s) if s.filesystem_type().0 == CGROUP2_SUPER_MAGIC => CgroupVersion::V2,
        _ => CgroupVersion::V1,
    }
}

/// A manager for the host's cgroup version, under `parent`.
pub fn host_manager(parent: &str) -> Result<Box<dyn CgroupManager>> {
    Ok(match host_cgroup_version() {
        CgroupVersion::V1 => Box::new(CgroupV1::new(parent)?),
        CgroupVersion::V2 => Box::new(CgroupV2::new("/sys/fs/cgroup", parent)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_cpu_to_shares_table() {
        // Upstream TestMilliCPUToShares cases.
        for (milli, shares) in [
            (0, 2),
            (1, 2),
            (2, 2),
            (100, 102),
            (250, 256),
            (500, 512),
            (1000, 1024),
            (1500, 1536),
            (4000, 4096),
            (257_000, 262_144),
            (300_000, 262_144),
        ] {
            assert_eq!(milli_cpu_to_shares(milli), shares, "{milli}m");
        }
    }

    #[test]
    fn milli_cpu_to_quota_table() {
        // Upstream TestMilliCPUToQuota cases (period 100000).
        for (milli, period, quota) in [
            (0, 100_000, 0),
            (5, 100_000, 1000),
            (9, 100_000, 1000),
            (10, 100_000, 1000),
            (200, 100_000, 20_000),
            (500, 100_000, 50_000),
            (1000, 100_000, 100_000),
            (1500, 100_000, 150_000),
            (1500, 10_000, 15_000),
            (5, 50_000, 1000),
        ] {
            assert_eq!(
                milli_cpu_to_quota(milli, period),
                quota,
                "{milli}m/{period}"
            );
        }
    }

    /// The device rules with a container's volume devices: the defaults first (or "a"),
    /// then exactly each device's major:minor with its access, parsed by the filter.
    #[test]
    fn device_rules_add_the_containers_devices() {
        use crate::runtime::spec::{ContainerDevice, DeviceKind};
        let device = |minor: u64, access: &str| ContainerDevice {
            path: "/dev/xvda".into(),
            kind: DeviceKind::Block,
            major: 7,
            minor,
            file_mode: 0o660,
            uid: 0,
            gid: 6,
            host_path: "/dev/loop3".into(),
            access: access.into(),
        };
        let cases: [(&str, bool, Vec<ContainerDevice>, Vec<&str>); 4] = [
            ("none", false, vec![], vec![]),
            (
                "read-write",
                false,
                vec![device(3, "mrw")],
                vec!["b 7:3 mrw"],
            ),
            (
                "read-only and read-write",
                false,
                vec![device(3, "r"), device(4, "mrw")],
                vec!["b 7:3 r", "b 7:4 mrw"],
            ),
            (
                "privileged",
                true,
                vec![device(3, "mrw")],
                vec!["b 7:3 mrw"],
            ),
        ];
        for (name, privileged, devices, extra) in cases {
            let rules = container_device_rules(privileged, &devices);
            let defaults: Vec<String> = if privileged {
                vec!["a".into()]
            } else {
                DEFAULT_ALLOWED_DEVICES
                    .iter()
                    .map(|r| r.to_string())
                    .collect()
            };
            assert_eq!(rules[..defaults.len()], defaults[..], "{name}");
            assert_eq!(rules[defaults.len()..], extra[..], "{name}");
            devicefilter::parse_rules(&rules).unwrap();
        }
    }

    #[test]
    fn cpu_shares_to_weight_table() {
        for (shares, weight) in [(0, 0), (2, 1), (1024, 39), (262_144, 10_000)] {
            assert_eq!(cpu_shares_to_weight(shares), weight, "{shares}");
        }
    }

    #[test]
    fn resources_from_requests_limits_table() {
        let cases = [
            ("best effort", None, None, None, Some(2), None, None),
            ("request only", Some(250), None, None, Some(256), None, None),
            (
                "limit only: shares from the limit",
                None,
                Some(500),
                None,
                Some(512),
                Some(50_000),
                None,
            ),
            (
                "both",
                Some(100),
                Some(200),
                Some(64 << 20),
                Some(102),
                Some(20_000),
                Some(64 << 20),
            ),
            (
                "tiny limit clamps the quota",
                Some(1),
                Some(1),
                None,
                Some(2),
                Some(1000),
                None,
            ),
        ];
        for (name, req, lim, mem, shares, quota, memory) in cases {
            let r = Resources::from_requests_limits(req, lim, mem);
            assert_eq!(r.cpu_shares, shares, "{name}");
            assert_eq!(r.cpu_quota, quota, "{name}");
            assert_eq!(r.cpu_period, quota.map(|_| QUOTA_PERIOD), "{name}");
            assert_eq!(r.memory_limit, memory, "{name}");
        }
    }

    #[test]
    fn oom_parsers() {
        let v1 = "oom_kill_disable 0\nunder_oom 1\noom_kill 3\n";
        assert_eq!(
            parse_oom_control(v1),
            OomEvents {
                oom_kill: 3,
                under_oom: true
            }
        );
        // Kernels before 4.13 have no oom_kill line.
        assert_eq!(
            parse_oom_control("oom_kill_disable 0\nunder_oom 0\n"),
            OomEvents::default()
        );
        let v2 = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_memory_events(v2).oom_kill, 1);
    }

    #[test]
    fn paths_must_stay_below_the_parent() {
        assert!(check_path("pod1/c1").is_ok());
        for bad in ["/abs", "../up", "pod/../../x", "./x"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let m = CgroupV2::new(dir.path(), "rekube").unwrap();
        assert_eq!(
            m.create("../escape", &Resources::default())
                .unwrap_err()
                .to_string(),
            "cgroup path \"../escape\" must be relative and free of '..'"
        );
    }

    /// The v2 paths through the trait, on a plain directory standing in for the unified
    /// hierarchy (this host runs cgroup v1).
    #[test]
    fn v2_through_the_trait_on_a_fake_cgroupfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        let m: Box<dyn CgroupManager> = Box::new(CgroupV2::new(root, "rekube").unwrap());
        assert_eq!(m.version(), CgroupVersion::V2);

        let pod = Resources {
            pids_limit: Some(100),
            ..Resources::default()
        };
        m.create("pod1", &pod).unwrap();
        let c = Resources::from_requests_limits(Some(250), Some(500), Some(32 << 20));
        m.create("pod1/c1", &c).unwrap();

        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("rekube/pod1/cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
        assert!(!root.join("rekube/pod1/c1/cgroup.subtree_control").exists());
        assert_eq!(m.read("pod1", "pids.max").unwrap(), "100");
        assert_eq!(m.read("pod1/c1", "cpu.weight").unwrap(), "10");
        assert_eq!(m.read("pod1/c1", "cpu.max").unwrap(), "50000 100000");
        assert_eq!(
            m.read("pod1/c1", "memory.max").unwrap(),
            (32u64 << 20).to_string()
        );
        assert_eq!(m.read("pod1/c1", "pids.max").unwrap(), "max");
        assert_eq!(m.read("pod1/c1", "memory.swap.max").unwrap(), "0");

        // Device rules are checked even where no program can be attached.
        let bad = Resources {
            devices: Some(vec!["c 1:3 rwx".to_string()]),
            ..c.clone()
        };
        assert_eq!(
            m.apply("pod1/c1", &bad).unwrap_err().to_string(),
            r#"set devices (eBPF) of cgroup rekube/pod1/c1 to c 1:3 rwx: invalid device rule "c 1:3 rwx": the access must be made of r, w and m"#
        );

        m.apply("pod1/c1", &Resources::default()).unwrap();
        assert_eq!(m.read("pod1/c1", "memory.swap.max").unwrap(), "max");
        assert_eq!(m.read("pod1/c1", "cpu.max").unwrap(), "max 100000");
        assert_eq!(m.read("pod1/c1", "memory.max").unwrap(), "max");

        m.add_pid("pod1/c1", 4242).unwrap();
        assert_eq!(m.pids("pod1/c1").unwrap(), vec![4242]);
        assert_eq!(m.pids("pod1/missing").unwrap(), Vec::<i32>::new());

        std::fs::write(
            root.join("rekube/pod1/c1/memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(m.oom_events("pod1/c1").unwrap().oom_kill, 1);

        assert_eq!(
            m.list().unwrap(),
            vec!["pod1".to_string(), "pod1/c1".to_string()]
        );
        m.remove("pod1").unwrap();
        assert_eq!(m.list().unwrap(), Vec::<String>::new());
        m.remove("pod1").unwrap();
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The v1 paths for real (root, on this host's v1 hierarchies).
    #[test]
    fn v1_for_real_as_root() {
        if !is_root() {
            rekube_crds::testing::missing_prerequisite("the cgroup v1 test needs root");
            return;
        }
        if host_cgroup_version() != CgroupVersion::V1 {
            // Not missing: a unified host has no v1 hierarchies to test (the v2 test runs).
            return;
        }
        let parent = format!("rekube-unit-{}", std::process::id());
        let m = CgroupV1::new(&parent).unwrap();
        let c = Resources {
            pids_limit: Some(20),
            ..Resources::from_requests_limits(Some(250), Some(500), Some(64 << 20))
        };
        m.create("pod1/c1", &c).unwrap();
        assert_eq!(m.read("pod1/c1", "cpu.shares").unwrap(), "256");
        assert_eq!(m.read("pod1/c1", "cpu.cfs_quota_us").unwrap(), "50000");
        assert_eq!(m.read("pod1/c1", "cpu.cfs_period_us").unwrap(), "100000");
        assert_eq!(
            m.read("pod1/c1", "memory.limit_in_bytes").unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(m.read("pod1/c1", "pids.max").unwrap(), "20");
        assert_eq!(m.oom_events("pod1/c1").unwrap(), OomEvents::default());
        if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                m.read("pod1/c1", "memory.memsw.limit_in_bytes").unwrap(),
                (64u64 << 20).to_string()
            );
        }
        m.apply(
            "pod1/c1",
            &Resources {
                devices: Some(container_device_rules(false, &[])),
                ..c.clone()
            },
        )
        .unwrap();
        let list = m.read("pod1/c1", "devices.list").unwrap();
        assert!(
            list.contains("c 1:3 rwm") && list.contains("b *:* m") && !list.contains("a *:* rwm"),
            "{list}"
        );

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        m.add_pid("pod1/c1", child.id() as i32).unwrap();
        assert_eq!(m.pids("pod1/c1").unwrap(), vec![child.id() as i32]);
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        assert!(own.contains(&format!("memory:/{parent}/pod1/c1")), "{own}");

        // Remove kills what is left, then removes the tree.
        m.remove("").unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert_eq!(m.list().unwrap(), Vec::<String>::new());
        assert!(!Path::new("/sys/fs/cgroup/memory").join(&parent).exists());
    }

    /// The v2 paths for real (root, on a unified host: `just test-cgroup2` boots one in a
    /// VM, since this host runs cgroup v1): limits in the interface files, controllers
    /// delegated down the tree, the device filter attached, a process moved in, an OOM
    /// kill counted in memory.events, and remove killing what is left.
    #[test]
    fn v2_for_real_as_root() {
        if !is_root() {
            rekube_crds::testing::missing_prerequisite("the cgroup v2 test needs root");
            return;
        }
        if host_cgroup_version() != CgroupVersion::V2 {
            // Not missing: a v1 or hybrid host has no v2 controllers to test (the v1 test
            // runs; `just test-cgroup2` runs this one in a cgroup v2 VM).
            return;
        }
        let root = Path::new("/sys/fs/cgroup");
        let parent = format!("rekube-unit-v2-{}", std::process::id());
        let m = CgroupV2::new(root, &parent).unwrap();
        assert!(m.real);
        let c = Resources {
            pids_limit: Some(20),
            devices: Some(container_device_rules(false, &[])),
            ..Resources::from_requests_limits(Some(250), Some(500), Some(64 << 20))
        };
        let result = std::panic::catch_unwind(|| {
            m.create("pod1/c1", &c).unwrap();
            for dir in [
                root.to_path_buf(),
                root.join(&parent),
                root.join(&parent).join("pod1"),
            ] {
                let delegated =
                    std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
                for want in V2_CONTROLLERS {
                    assert!(
                        delegated.split_whitespace().any(|x| x == want),
                        "{want} not delegated by {}: {delegated}",
                        dir.display()
                    );
                }
            }
            assert_eq!(m.read("pod1/c1", "cpu.weight").unwrap(), "10");
            assert_eq!(m.read("pod1/c1", "cpu.max").unwrap(), "50000 100000");
            assert_eq!(
                m.read("pod1/c1", "memory.max").unwrap(),
                (64u64 << 20).to_string()
            );
            if root.join(&parent).join("pod1/c1/memory.swap.max").exists() {
                assert_eq!(m.read("pod1/c1", "memory.swap.max").unwrap(), "0");
            }
            assert_eq!(m.read("pod1/c1", "pids.max").unwrap(), "20");
            assert_eq!(m.oom_events("pod1/c1").unwrap(), OomEvents::default());
            let dir = root.join(&parent).join("pod1/c1");
            assert_eq!(bpf::attached_device_programs(&dir).unwrap(), 1);
            // Applying again replaces the device program rather than stacking another.
            m.apply("pod1/c1", &c).unwrap();
            assert_eq!(bpf::attached_device_programs(&dir).unwrap(), 1);

            // Limits lifted.
            m.apply("pod1/c1", &Resources::default()).unwrap();
            assert_eq!(m.read("pod1/c1", "cpu.max").unwrap(), "max 100000");
            assert_eq!(m.read("pod1/c1", "memory.max").unwrap(), "max");
            assert_eq!(m.read("pod1/c1", "pids.max").unwrap(), "max");

            // A process moved in is listed, and its /proc/PID/cgroup names the cgroup.
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            m.add_pid("pod1/c1", child.id() as i32).unwrap();
            assert_eq!(m.pids("pod1/c1").unwrap(), vec![child.id() as i32]);
            let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
            assert_eq!(own.trim(), format!("0::/{parent}/pod1/c1"));

            // An allocation beyond memory.max is OOM-killed and counted in memory.events.
            let small = Resources::from_requests_limits(None, None, Some(16 << 20));
            m.create("pod1/oom", &small).unwrap();
            let out = run_in_cgroup(
                &root.join(&parent).join("pod1/oom"),
                "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo status=$?",
            );
            assert!(out.contains("status=137"), "dd was not killed: {out}");
            assert_eq!(m.oom_events("pod1/oom").unwrap().oom_kill, 1);

            // Remove kills what is left, then removes the tree.
            m.remove("").unwrap();
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9)
            );
            assert_eq!(m.list().unwrap(), Vec::<String>::new());
            assert!(!root.join(&parent).exists());
        });
        let _ = m.remove("");
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    /// A cgroup2 mount: /sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified on a hybrid
    /// one (its controllers are all on v1, but the kernel runs device programs attached
    /// to a task's cgroup2 cgroup all the same).
    fn cgroup2_mount() -> Option<PathBuf> {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| {
                nix::sys::statfs::statfs(p)
                    .is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
            })
    }

    /// `sh -c script` run inside the cgroup `dir`; its output.
    fn run_in_cgroup(dir: &Path, script: &str) -> String {
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
            .unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]);
        // SAFETY: only open/write/close between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The v2 device filter for real: a host block device made with mknod cannot be
    /// opened under the default rules (mknod itself is allowed, as runc allows it), the
    /// default nodes can; privileged rules open it; re-applying replaces the program.
    #[test]
    fn v2_device_filter_for_real_as_root() {
        if !is_root() {
            rekube_crds::testing::missing_prerequisite("the v2 device filter test needs root");
            return;
        }
        let Some(mount) = cgroup2_mount() else {
            rekube_crds::testing::missing_prerequisite(
                "the v2 device filter test needs a cgroup2 mount (unified or hybrid)",
            );
            return;
        };
        // A host block device (the first the kernel lists: a disk or a loop device).
        let mut blocks: Vec<String> = std::fs::read_dir("/sys/dev/block")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        blocks.sort();
        let (major, minor) = blocks[0].split_once(':').unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let node = tmp.path().join("disk");
        let script = format!(
            "mknod {n} b {major} {minor} && echo mknod=ok; \
             head -c0 {n} 2>&1 && echo disk=opened; \
             head -c0 /dev/null && echo null=opened; rm -f {n}",
            n = node.display()
        );
        let dir = mount.join(format!("rekube-devices-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let result = std::panic::catch_unwind(|| {
            apply_device_filter(&dir, &container_device_rules(false, &[])).unwrap();
            apply_device_filter(&dir, &container_device_rules(false, &[])).unwrap();
            assert_eq!(
                bpf::attached_device_programs(&dir).unwrap(),
                1,
                "replaced, not stacked"
            );
            let out = run_in_cgroup(&dir, &script);
            assert!(out.contains("mknod=ok"), "{out}");
            assert!(
                out.contains("Operation not permitted") && !out.contains("disk=opened"),
                "{out}"
            );
            assert!(out.contains("null=opened"), "{out}");

            // A volume device of the container (kubelet's makeBlockVolumes): read-only
            // ("r") opens for reading and refuses a write open; "mrw" allows both. The
            // write open writes nothing (`: >>`).
            let writes = format!(
                "mknod {n} b {major} {minor}; head -c0 {n} && echo disk=opened; \
                 ( : >> {n} ) 2>&1 && echo disk=writable; rm -f {n}",
                n = node.display()
            );
            let device = |access: &str| crate::runtime::spec::ContainerDevice {
                path: "/dev/xvda".into(),
                kind: crate::runtime::spec::DeviceKind::Block,
                major: major.parse().unwrap(),
                minor: minor.parse().unwrap(),
                file_mode: 0o660,
                uid: 0,
                gid: 0,
                host_path: "/dev/unused".into(),
                access: access.into(),
            };
            apply_device_filter(&dir, &container_device_rules(false, &[device("r")])).unwrap();
            let out = run_in_cgroup(&dir, &writes);
            assert!(
                out.contains("disk=opened") && !out.contains("disk=writable"),
                "{out}"
            );
            assert!(out.contains("Operation not permitted"), "{out}");
            apply_device_filter(&dir, &container_device_rules(false, &[device("mrw")])).unwrap();
            let out = run_in_cgroup(&dir, &writes);
            assert!(
                out.contains("disk=opened") && out.contains("disk=writable"),
                "{out}"
            );

            apply_device_filter(&dir, &container_device_rules(true, &[])).unwrap();
            let out = run_in_cgroup(&dir, &script);
            assert!(
                out.contains("mknod=ok") && out.contains("disk=opened"),
                "{out}"
            );
            assert_eq!(bpf::attached_device_programs(&dir).unwrap(), 1);
        });
        std::fs::remove_dir(&dir).unwrap();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }
}
