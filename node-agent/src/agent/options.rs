//! `rekube-node-agent run` flags, named and defaulted as the kubelet's where they exist.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::node_status::Reservation;
use crate::image::gc::GcPolicy;
use crate::kubelet::container_gc::ContainerGcPolicy;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid --{flag} {value:?}: {message}")]
    Invalid {
        flag: &'static str,
        value: String,
        message: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct AgentOptions {
    /// The Node's name (kubelet --hostname-override); the host name when empty.
    #[arg(long, default_value = "")]
    pub node_name: String,
    /// Labels to add to the Node at registration: key=value,...
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// The Node's InternalIP addresses (every non-loopback IPv4 address when empty).
    #[arg(long, value_delimiter = ',')]
    pub node_ip: Vec<String>,
    /// Where the agent keeps its state (images, containers, pods).
    #[arg(long, default_value = "/var/lib/rekube")]
    pub root_dir: PathBuf,
    /// The namespace of the node heartbeat Leases.
    #[arg(long, default_value = "rekube-node-lease")]
    pub node_lease_namespace: String,
    /// Read the pods' Secrets and ConfigMaps as the ServiceAccount named after the node in
    /// this namespace (a token the agent requests, bound to its Node; the node authorizer
    /// of rekube-controllers grants it exactly its pods' references). Empty: read them
    /// with the agent's own credentials. The chart sets it.
    #[arg(long, default_value = "")]
    pub node_identity_namespace: String,
    /// The DaemonSet running this agent (NAMESPACE/NAME; the chart sets it). When the
    /// agent is stopped and finds it gone or being deleted (`helm uninstall`), it stops
    /// every pod of the node and removes what it made there (containers, mounts, cgroups,
    /// pod networks, proxy rules) before it exits; it does not start while the DaemonSet
    /// is missing.
    #[arg(long)]
    pub owner_daemonset: Option<String>,
    /// The Lease's duration; it is renewed every quarter of it.
    #[arg(long, default_value_t = 40)]
    pub node_lease_duration_seconds: i32,
    /// How often the node status is computed and posted when it changed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub node_status_update_frequency: Duration,
    /// How often the node status is posted even when unchanged.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub node_status_report_frequency: Duration,
    /// The most pods this node runs.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Resources reserved for system and Kubernetes daemons: cpu=100m,memory=256Mi,ephemeral-storage=1Gi.
    #[arg(long, default_value = "")]
    pub kube_reserved: String,
    /// Hard eviction thresholds (upstream defaults).
    #[arg(long, default_value = "memory.available<100Mi,nodefs.available<10%")]
    pub eviction_hard: String,
    /// Namespace files and per-pod files (hostname, hosts, resolv.conf, /dev/shm).
    #[arg(long, default_value = "/run/rekube")]
    pub run_dir: PathBuf,
    /// The cgroup the pod cgroups are made under (kubelet's `kubepods`).
    #[arg(long, default_value = "rekube")]
    pub cgroup_parent: String,
    /// Where containers' CRI log files go: `<dir>/<namespace>_<pod>_<uid>/<container>/<n>.log`.
    #[arg(long, default_value = "/var/log/pods")]
    pub pod_log_dir: PathBuf,
    /// The most a container's log file grows to before it is rotated.
    #[arg(long, default_value = "10Mi")]
    pub container_log_max_size: String,
    /// The most log files kept per container (the live one included); at least 2.
    #[arg(long, default_value_t = 5)]
    pub container_log_max_files: i32,
    /// The most processes in one pod (the pod cgroup's pids.max); -1 is unlimited.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub pod_max_pids: i64,
    /// Image GC starts when the image filesystem's usage reaches this percentage.
    #[arg(long, default_value_t = 85)]
    pub image_gc_high_threshold: u8,
    /// Image GC frees down to this percentage.
    #[arg(long, default_value_t = 80)]
    pub image_gc_low_threshold: u8,
    /// Images younger than this are never collected.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub minimum_image_ttl_duration: Duration,
    /// How often image GC runs (upstream's fixed ImageGCPeriod; a flag here for tests).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub image_gc_period: Duration,
    /// Dead containers younger than this (since creation) are never collected.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub minimum_container_ttl_duration: Duration,
    /// The most dead instances kept per (pod, container); below zero for no limit.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub maximum_dead_containers_per_container: i32,
    /// The most dead containers kept on the node; below zero for no limit.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub maximum_dead_containers: i32,
    /// The longest CrashLoopBackOff wait (KubeletConfiguration
    /// crashLoopBackOff.maxContainerRestartPeriod, KEP-4603), between 1s and 300s; the
    /// first wait is the smaller of 10s and this.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub crash_loop_back_off_max_container_restart_period: Duration,
    /// Run no containers: a hollow node (kubemark) that reports every pod's sandbox ready
    /// and its containers running, for scale tests.
    #[arg(long)]
    pub hollow: bool,
    /// How pods get their network: `cni` (the plugins of --cni-conf-dir's first config;
    /// an empty dir gets the agent's default network, bridge + host-local over the Node's
    /// podCIDR + portmap), or `loopback` (no CNI: a pod's IP from the podCIDR on its
    /// loopback only, reachable from nowhere; for agents sharing one network namespace,
    /// as single-namespace tests do).
    #[arg(long, value_enum, default_value = "cni")]
    pub pod_network: PodNetworkMode,
    /// The directory of CNI network configs (containerd's `conf_dir`).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are, comma-separated (containerd's `bin_dirs`).
    #[arg(long, default_value = "/opt/cni/bin", value_delimiter = ',')]
    pub cni_bin_dir: Vec<PathBuf>,
    /// libcni's cache (results/, for DELs after a restart); the default network's
    /// host-local keeps its reservations in networks/ under it.
    #[arg(long, default_value = "/var/lib/cni")]
    pub cni_cache_dir: PathBuf,
    /// A CSI driver the node's PersistentVolumes may name, `NAME=unix:///path/to/csi.sock`
    /// (repeatable): its node service stages and publishes them, and its NodeGetInfo
    /// becomes the Node's `csi.volume.kubernetes.io/nodeid` annotation and topology
    /// labels. A static driver, beside those registered through
    /// --plugin-registration-dir.
    #[arg(long = "csi-driver")]
    pub csi_drivers: Vec<String>,
    /// The plugin registration directory (the kubelet's `<root-dir>/plugins_registry`):
    /// CSI drivers register by making a socket serving the plugin registration API there
    /// (node-driver-registrar, `rekube-csi registrar`), and are deregistered when it goes.
    /// Default: `<root-dir>/plugins_registry`.
    #[arg(long)]
    pub plugin_registration_dir: Option<PathBuf>,
    /// The service proxy (kube-proxy's flags; never run by a hollow agent). Its
    /// --cluster-cidr is also the cni pod network's: traffic from it to outside it is
    /// masqueraded.
    #[command(flatten)]
    pub proxy: crate::proxy::options::ProxyOptions,
}

/// `--pod-network`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNetworkMode {
    Cni,
    Loopback,
}

/// A CPU amount in millicores: "2", "0.5", "250m" (a quantity, as kubelet's flags take).
pub fn parse_cpu_millis(s: &str) -> Option<u64> {
    let q = crate::kubelet::quantity::parse_quantity(s).ok()?;
    u64::try_from(q.milli_value()).ok()
}

/// A byte amount: "1024", "100Mi", "1Gi", "500M", "2G", "64Ki", "1k" (a quantity).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let q = crate::kubelet::quantity::parse_quantity(s).ok()?;
    u64::try_from(q.value()).ok()
}

fn invalid(flag: &'static str, value: &str, message: &str) -> Error {
    Error::Invalid {
        flag,
        value: value.into(),
        message: message.into(),
    }
}

/// key=value pairs separated by commas.
pub fn parse_map(flag: &'static str, s: &str) -> Result<BTreeMap<String, String>, Error> {
    s.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| invalid(flag, kv, "expected key=value"))
        })
        .collect()
}

/// The container log and pod process limits the flags ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerLimits {
    pub log_max_size: u64,
    pub log_max_files: usize,
    /// `None`: unlimited.
    pub pod_max_pids: Option<i64>,
}

/// Host directories the agent must never own: recovery removes every entry of the run
/// directory and of `<root-dir>/containers`, and pod removal deletes under the log
/// directory.
const SHARED_DIRS: [&str; 22] = [
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run",
    "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log", "/var/run",
    "/var/tmp", "/mnt",
];

/// cgroups other managers own (systemd's slices and scopes, the kubelet's and container
/// engines' parents): recovery kills every process under `--cgroup-parent`.
const SHARED_CGROUPS: [&str; 9] = [
    "system.slice",
    "user.slice",
    "init.scope",
    "machine.slice",
    "kubepods",
    "kubepods.slice",
    "docker",
    "lxc",
    "machine",
];

/// The directories and cgroup the agent owns, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPaths {
    pub root_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    pub cgroup_parent: String,
}

fn check_dir(flag: &'static str, dir: &std::path::Path) -> Result<(), Error> {
    let value = dir.display().to_string();
    let fail = |message: &str| Err(invalid(flag, &value, message));
    if value.is_empty() {
        return fail("must not be empty");
    }
    if !dir.is_absolute() {
        return fail("must be an absolute path");
    }
    if dir.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) {
        return fail("must not contain '.' or '..'");
    }
    let normal = value.trim_end_matches('/');
    if normal.is_empty() {
        return fail("must not be / (the agent removes what it finds there)");
    }
    if SHARED_DIRS.contains(&normal) {
        return fail("is a shared host directory (the agent removes what it finds there)");
    }
    Ok(())
}

/// The cgroup (relative to the hierarchy roots) that holds the agent's own process, from
/// /proc/self/cgroup's text, when it is `parent` or below it: recovery would kill it.
pub fn own_cgroup_under(self_cgroup: &str, parent: &str) -> Option<String> {
    self_cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?.trim_start_matches('/');
        let inside = path == parent || path.starts_with(&format!("{parent}/"));
        inside.then(|| format!("/{path}"))
    })
}

impl AgentOptions {
    /// --root-dir, --run-dir, --pod-log-dir and --cgroup-parent, refused before anything
    /// starts when they name something the agent cannot own: start-up recovery kills every
    /// process under the cgroup parent and removes the entries of the run directory and
    /// of `<root-dir>/containers`.
    pub fn owned_paths(&self) -> Result<OwnedPaths, Error> {
        let dirs = [
            ("root-dir", &self.root_dir),
            ("run-dir", &self.run_dir),
            ("pod-log-dir", &self.pod_log_dir),
        ];
        for (flag, dir) in dirs {
            check_dir(flag, dir)?;
        }
        // What start-up recovery empties: the run directory and <root-dir>/containers
        // (and the image store lives in <root-dir>/images).
        let (root, run, logs) = (&self.root_dir, &self.run_dir, &self.pod_log_dir);
        let refuse = |flag: &'static str, dir: &PathBuf, message: String| {
            Err(invalid(flag, &dir.display().to_string(), &message))
        };
        if root == run {
            return refuse("root-dir", root, "must differ from --run-dir".into());
        }
        for (flag, dir) in [("root-dir", root), ("run-dir", run)] {
            if logs == dir {
                return refuse("pod-log-dir", logs, format!("must differ from --{flag}"));
            }
        }
        for (flag, dir) in [("root-dir", root), ("pod-log-dir", logs)] {
            if dir.starts_with(run) {
                return refuse(
                    flag,
                    dir,
                    format!("must not be inside --run-dir {run:?} (the agent empties it at start)"),
                );
            }
        }
        for (flag, dir) in [("run-dir", run), ("pod-log-dir", logs)] {
            for sub in ["containers", "images", "pods"] {
                let owned = root.join(sub);
                if dir.starts_with(&owned) || owned.starts_with(dir) {
                    return refuse(
                        flag,
                        dir,
                        format!(
                            "must not be {owned:?}, inside it or contain it (the agent's containers, images and pod volumes)"
                        ),
                    );
                }
            }
        }
        let parent = &self.cgroup_parent;
        let fail = |message: &str| Err(invalid("cgroup-parent", parent, message));
        if parent.trim_matches('/').is_empty() {
            return fail(
                "must not be empty or / (the pods' cgroups would be the host's root cgroup)",
            );
        }
        if parent.starts_with('/') {
            return fail("must be relative to the cgroup hierarchy's root");
        }
        if parent
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return fail("must not contain empty, '.' or '..' components");
        }
        let first = parent.split('/').next().unwrap_or("");
        if SHARED_CGROUPS.contains(&parent.as_str())
            || ["kubepods", "kubepods.slice", "docker"].contains(&first)
        {
            return fail(
                "is a cgroup another manager owns (the agent kills every process under it)",
            );
        }
        Ok(OwnedPaths {
            root_dir: self.root_dir.clone(),
            run_dir: self.run_dir.clone(),
            pod_log_dir: self.pod_log_dir.clone(),
            cgroup_parent: parent.clone(),
        })
    }

    /// --plugin-registration-dir, `<root-dir>/plugins_registry` when not given; an
    /// absolute path without `.` or `..`.
    pub fn plugin_registration_dir(&self) -> Result<PathBuf, Error> {
        match &self.plugin_registration_dir {
            None => Ok(self
                .root_dir
                .join(crate::plugin_manager::PLUGINS_REGISTRY_DIR)),
            Some(dir) => {
                check_dir("plugin-registration-dir", dir)?;
                Ok(dir.clone())
            }
        }
    }

    /// The image GC policy (kubelet's validation: low below high, both at most 100).
    pub fn image_gc_policy(&self) -> Result<GcPolicy, Error> {
        let (high, low) = (self.image_gc_high_threshold, self.image_gc_low_threshold);
        if high > 100 {
            return Err(invalid(
                "image-gc-high-threshold",
                &high.to_string(),
                "must be at most 100",
            ));
        }
        if low >= high {
            return Err(invalid(
                "image-gc-low-threshold",
                &low.to_string(),
                "must be below --image-gc-high-threshold",
            ));
        }
        Ok(GcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            min_age: self.minimum_image_ttl_duration,
        })
    }

    /// The container GC policy (upstream `NewContainerGC` refuses a negative minimum
    /// age; clap's duration parser already cannot produce one, and the counts take any
    /// value, below zero meaning no limit).
    pub fn container_gc_policy(&self) -> ContainerGcPolicy {
        ContainerGcPolicy {
            min_age: self.minimum_container_ttl_duration,
            max_per_pod_container: self.maximum_dead_containers_per_container,
            max_containers: self.maximum_dead_containers,
        }
    }

    /// --crash-loop-back-off-max-container-restart-period, checked as the kubelet's
    /// configuration validation checks crashLoopBackOff.maxContainerRestartPeriod.
    pub fn crash_loop_max_container_restart_period(&self) -> Result<Duration, Error> {
        let d = self.crash_loop_back_off_max_container_restart_period;
        if d < Duration::from_secs(1) || d > Duration::from_secs(300) {
            return Err(invalid(
                "crash-loop-back-off-max-container-restart-period",
                &humantime::format_duration(d).to_string(),
                "must be between 1s and 300s",
            ));
        }
        Ok(d)
    }

    /// --container-log-max-size, --container-log-max-files and --pod-max-pids, checked
    /// as the kubelet's configuration validation does.
    pub fn container_limits(&self) -> Result<ContainerLimits, Error> {
        let size = &self.container_log_max_size;
        let log_max_size = parse_bytes(size)
            .filter(|b| *b > 0)
            .ok_or_else(|| invalid("container-log-max-size", size, "not a positive size"))?;
        let log_max_files = usize::try_from(self.container_log_max_files)
            .ok()
            .filter(|n| *n >= 2)
            .ok_or_else(|| {
                invalid(
                    "container-log-max-files",
                    &self.container_log_max_files.to_string(),
                    "must be at least 2",
                )
            })?;
        let pod_max_pids = match self.pod_max_pids {
            -1 => None,
            n if n > 0 => Some(n),
            n => {
                return Err(invalid(
                    "pod-max-pids",
                    &n.to_string(),
                    "must be positive, or -1 for unlimited",
                ));
            }
        };
        Ok(ContainerLimits {
            log_max_size,
            log_max_files,
            pod_max_pids,
        })
    }

    /// The reservation the flags ask for (upstream: --kube-reserved, --eviction-hard,
    /// --max-pods).
    pub fn reservation(&self) -> Result<Reservation, Error> {
        let mut r = Reservation {
            max_pods: self.max_pods,
            ..Default::default()
        };
        for (k, v) in parse_map("kube-reserved", &self.kube_reserved)? {
            match k.as_str() {
                "cpu" => {
                    r.cpu_milli = parse_cpu_millis(&v)
                        .ok_or_else(|| invalid("kube-reserved", &v, "not a cpu amount"))?
                }
                "memory" => {
                    r.memory_bytes = parse_bytes(&v)
                        .ok_or_else(|| invalid("kube-reserved", &v, "not a memory amount"))?
                }
                "ephemeral-storage" => {
                    r.ephemeral_storage_bytes = parse_bytes(&v)
                        .ok_or_else(|| invalid("kube-reserved", &v, "not a storage amount"))?
                }
                _ => {
                    return Err(invalid(
                        "kube-reserved",
                        &k,
                        "unknown resource (cpu, memory, ephemeral-storage)",
                    ));
                }
            }
        }
        for threshold in self
            .eviction_hard
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (signal, value) = threshold
                .split_once('<')
                .ok_or_else(|| invalid("eviction-hard", threshold, "expected signal<quantity"))?;
            let percent = |v: &str| -> Result<u8, Error> {
                v.strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| invalid("eviction-hard", v, "expected a percentage"))
            };
            match signal {
                "memory.available" => {
                    r.eviction_memory_available_bytes = parse_bytes(value)
                        .ok_or_else(|| invalid("eviction-hard", value, "not a memory amount"))?
                }
                "nodefs.available" => r.eviction_nodefs_available_percent = percent(value)?,
                "pid.available" => r.eviction_pid_available_percent = Some(percent(value)?),
                _ => {
                    return Err(invalid(
                        "eviction-hard",
                        signal,
                        "unknown signal (memory.available, nodefs.available, pid.available)",
                    ));
                }
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: AgentOptions,
    }

    fn opts(args: &[&str]) -> AgentOptions {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        Cli::parse_from(all).o
    }

    #[test]
    fn plugin_registration_dir_from_flags() {
        assert_eq!(
            opts(&[]).plugin_registration_dir(),
            Ok(PathBuf::from("/var/lib/rekube/plugins_registry"))
        );
        assert_eq!(
            opts(&["--root-dir", "/t/a"]).plugin_registration_dir(),
            Ok(PathBuf::from("/t/a/plugins_registry"))
        );
        assert_eq!(
            opts(&[
                "--plugin-registration-dir",
                "/var/lib/kubelet/plugins_registry"
            ])
            .plugin_registration_dir(),
            Ok(PathBuf::from("/var/lib/kubelet/plugins_registry"))
        );
        assert_eq!(
            opts(&["--plugin-registration-dir", "plugins_registry"])
                .plugin_registration_dir()
                .unwrap_err()
                .to_string(),
            r#"invalid --plugin-registration-dir "plugins_registry": must be an absolute path"#
        );
    }

    #[test]
    fn container_limits_from_flags() {
        assert_eq!(
            opts(&[]).container_limits(),
            Ok(ContainerLimits {
                log_max_size: 10 << 20,
                log_max_files: 5,
                pod_max_pids: None
            })
        );
        assert_eq!(
            opts(&[
                "--container-log-max-size",
                "1Mi",
                "--container-log-max-files",
                "2",
                "--pod-max-pids",
                "1024"
            ])
            .container_limits(),
            Ok(ContainerLimits {
                log_max_size: 1 << 20,
                log_max_files: 2,
                pod_max_pids: Some(1024)
            })
        );
        let err = |args: &[&str]| opts(args).container_limits().unwrap_err().to_string();
        assert_eq!(
            err(&["--container-log-max-size", "lots"]),
            r#"invalid --container-log-max-size "lots": not a positive size"#
        );
        assert_eq!(
            err(&["--container-log-max-size", "0"]),
            r#"invalid --container-log-max-size "0": not a positive size"#
        );
        assert_eq!(
            err(&["--container-log-max-files", "1"]),
            r#"invalid --container-log-max-files "1": must be at least 2"#
        );
        assert_eq!(
            err(&["--pod-max-pids", "0"]),
            r#"invalid --pod-max-pids "0": must be positive, or -1 for unlimited"#
        );
    }

    #[test]
    fn image_gc_policy_from_flags() {
        assert_eq!(opts(&[]).image_gc_policy(), Ok(GcPolicy::default()));
        assert_eq!(
            opts(&[
                "--image-gc-high-threshold",
                "2",
                "--image-gc-low-threshold",
                "1",
                "--minimum-image-ttl-duration",
                "0s"
            ])
            .image_gc_policy(),
            Ok(GcPolicy {
                high_threshold_percent: 2,
                low_threshold_percent: 1,
                min_age: Duration::ZERO
            })
        );
        let err = |args: &[&str]| opts(args).image_gc_policy().unwrap_err().to_string();
        assert_eq!(
            err(&["--image-gc-high-threshold", "101"]),
            r#"invalid --image-gc-high-threshold "101": must be at most 100"#
        );
        assert_eq!(
            err(&["--image-gc-low-threshold", "85"]),
            r#"invalid --image-gc-low-threshold "85": must be below --image-gc-high-threshold"#
        );
    }

    #[test]
    fn container_gc_policy_from_flags() {
        assert_eq!(
            opts(&[]).container_gc_policy(),
            ContainerGcPolicy::default()
        );
        assert_eq!(
            ContainerGcPolicy::default(),
            ContainerGcPolicy {
                min_age: Duration::ZERO,
                max_per_pod_container: 1,
                max_containers: -1
            },
            "the kubelet's defaults"
        );
        assert_eq!(
            opts(&[
                "--minimum-container-ttl-duration",
                "1m",
                "--maximum-dead-containers-per-container",
                "-1",
                "--maximum-dead-containers",
                "100"
            ])
            .container_gc_policy(),
            ContainerGcPolicy {
                min_age: Duration::from_secs(60),
                max_per_pod_container: -1,
                max_containers: 100
            }
        );
        // A negative age does not parse (upstream: "invalid minimum garbage collection age").
        assert!(Cli::try_parse_from(["x", "--minimum-container-ttl-duration", "-1s"]).is_err());
        assert!(Cli::try_parse_from(["x", "--maximum-dead-containers", "lots"]).is_err());
    }

    #[test]
    fn crash_loop_max_container_restart_period_from_flags() {
        let get = |args: &[&str]| {
            opts(args)
                .crash_loop_max_container_restart_period()
                .map_err(|e| e.to_string())
        };
        assert_eq!(get(&[]), Ok(Duration::from_secs(300)));
        let flag = "--crash-loop-back-off-max-container-restart-period";
        assert_eq!(get(&[flag, "1s"]), Ok(Duration::from_secs(1)));
        assert_eq!(get(&[flag, "5m"]), Ok(Duration::from_secs(300)));
        assert_eq!(
            get(&[flag, "999ms"]),
            Err(r#"invalid --crash-loop-back-off-max-container-restart-period "999ms": must be between 1s and 300s"#.into())
        );
        assert_eq!(
            get(&[flag, "0s"]),
            Err(r#"invalid --crash-loop-back-off-max-container-restart-period "0s": must be between 1s and 300s"#.into())
        );
        assert_eq!(
            get(&[flag, "301s"]),
            Err(r#"invalid --crash-loop-back-off-max-container-restart-period "5m 1s": must be between 1s and 300s"#.into())
        );
    }

    #[test]
    fn owned_paths_from_flags() {
        let d = opts(&[]).owned_paths().unwrap();
        assert_eq!(
            (d.root_dir, d.run_dir, d.pod_log_dir, d.cgroup_parent),
            (
                PathBuf::from("/var/lib/rekube"),
                PathBuf::from("/run/rekube"),
                PathBuf::from("/var/log/pods"),
                "rekube".to_string()
            )
        );
        assert!(
            opts(&["--cgroup-parent", "system.slice/rekube"])
                .owned_paths()
                .is_ok()
        );
        assert!(
            opts(&["--root-dir", "/srv/rekube", "--run-dir", "/run/rk"])
                .owned_paths()
                .is_ok()
        );
        // The e2e layout: run and log directories inside the root directory.
        assert!(
            opts(&[
                "--root-dir",
                "/t/a",
                "--run-dir",
                "/t/a/run",
                "--pod-log-dir",
                "/t/a/logs"
            ])
            .owned_paths()
            .is_ok()
        );
        let err = |args: &[&str]| opts(args).owned_paths().unwrap_err().to_string();
        // clap refuses an empty path; the check does too (for options built otherwise).
        assert!(Cli::try_parse_from(["x", "--run-dir", ""]).is_err());
        let mut o = opts(&[]);
        o.root_dir = PathBuf::new();
        assert_eq!(
            o.owned_paths().unwrap_err().to_string(),
            r#"invalid --root-dir "": must not be empty"#
        );
        let mut o = opts(&[]);
        o.run_dir = PathBuf::new();
        assert_eq!(
            o.owned_paths().unwrap_err().to_string(),
            r#"invalid --run-dir "": must not be empty"#
        );
        for (args, message) in [
            (
                &["--cgroup-parent", ""][..],
                r#"invalid --cgroup-parent "": must not be empty or / (the pods' cgroups would be the host's root cgroup)"#,
            ),
            (
                &["--cgroup-parent", "/"],
                r#"invalid --cgroup-parent "/": must not be empty or / (the pods' cgroups would be the host's root cgroup)"#,
            ),
            (
                &["--cgroup-parent", "/rekube"],
                r#"invalid --cgroup-parent "/rekube": must be relative to the cgroup hierarchy's root"#,
            ),
            (
                &["--cgroup-parent", "rekube/../system.slice"],
                r#"invalid --cgroup-parent "rekube/../system.slice": must not contain empty, '.' or '..' components"#,
            ),
            (
                &["--cgroup-parent", "rekube//x"],
                r#"invalid --cgroup-parent "rekube//x": must not contain empty, '.' or '..' components"#,
            ),
            (
                &["--cgroup-parent", "system.slice"],
                r#"invalid --cgroup-parent "system.slice": is a cgroup another manager owns (the agent kills every process under it)"#,
            ),
            (
                &["--cgroup-parent", "kubepods/besteffort"],
                r#"invalid --cgroup-parent "kubepods/besteffort": is a cgroup another manager owns (the agent kills every process under it)"#,
            ),
            (
                &["--cgroup-parent", "user.slice"],
                r#"invalid --cgroup-parent "user.slice": is a cgroup another manager owns (the agent kills every process under it)"#,
            ),
            (
                &["--root-dir", "/"],
                r#"invalid --root-dir "/": must not be / (the agent removes what it finds there)"#,
            ),
            (
                &["--root-dir", "var/lib/rekube"],
                r#"invalid --root-dir "var/lib/rekube": must be an absolute path"#,
            ),
            (
                &["--root-dir", "/var/lib/../rekube"],
                r#"invalid --root-dir "/var/lib/../rekube": must not contain '.' or '..'"#,
            ),
            (
                &["--run-dir", "/"],
                r#"invalid --run-dir "/": must not be / (the agent removes what it finds there)"#,
            ),
            (
                &["--run-dir", "/run"],
                r#"invalid --run-dir "/run": is a shared host directory (the agent removes what it finds there)"#,
            ),
            (
                &["--run-dir", "/tmp/"],
                r#"invalid --run-dir "/tmp/": is a shared host directory (the agent removes what it finds there)"#,
            ),
            (
                &["--run-dir", "run/rekube"],
                r#"invalid --run-dir "run/rekube": must be an absolute path"#,
            ),
            (
                &["--pod-log-dir", "/var/log"],
                r#"invalid --pod-log-dir "/var/log": is a shared host directory (the agent removes what it finds there)"#,
            ),
            (
                &["--run-dir", "/var/lib/rekube"],
                r#"invalid --root-dir "/var/lib/rekube": must differ from --run-dir"#,
            ),
            (
                &["--root-dir", "/run/rekube/state"],
                r#"invalid --root-dir "/run/rekube/state": must not be inside --run-dir "/run/rekube" (the agent empties it at start)"#,
            ),
            (
                &["--pod-log-dir", "/run/rekube/logs"],
                r#"invalid --pod-log-dir "/run/rekube/logs": must not be inside --run-dir "/run/rekube" (the agent empties it at start)"#,
            ),
            (
                &["--pod-log-dir", "/var/lib/rekube"],
                r#"invalid --pod-log-dir "/var/lib/rekube": must differ from --root-dir"#,
            ),
            (
                &["--pod-log-dir", "/run/rekube"],
                r#"invalid --pod-log-dir "/run/rekube": must differ from --run-dir"#,
            ),
            (
                &["--run-dir", "/var/lib/rekube/containers"],
                r#"invalid --run-dir "/var/lib/rekube/containers": must not be "/var/lib/rekube/containers", inside it or contain it (the agent's containers, images and pod volumes)"#,
            ),
            (
                &["--pod-log-dir", "/var/lib/rekube/images/logs"],
                r#"invalid --pod-log-dir "/var/lib/rekube/images/logs": must not be "/var/lib/rekube/images", inside it or contain it (the agent's containers, images and pod volumes)"#,
            ),
            (
                &["--pod-log-dir", "/var/lib/rekube/pods"],
                r#"invalid --pod-log-dir "/var/lib/rekube/pods": must not be "/var/lib/rekube/pods", inside it or contain it (the agent's containers, images and pod volumes)"#,
            ),
        ] {
            assert_eq!(err(args), message, "{args:?}");
        }
    }

    #[test]
    fn the_agent_s_own_cgroup_under_the_parent() {
        let v1 = "9:name=systemd:/system.slice/rekube.service\n5:devices:/\n4:memory:/rekube/agent\n0::/";
        assert_eq!(own_cgroup_under(v1, "rekube"), Some("/rekube/agent".into()));
        assert_eq!(
            own_cgroup_under(v1, "system.slice/rekube.service"),
            Some("/system.slice/rekube.service".into())
        );
        assert_eq!(own_cgroup_under(v1, "rekube-test"), None);
        assert_eq!(own_cgroup_under(v1, "system.slice/rekube"), None);
        let v2 = "0::/kubepods.slice/rekube";
        assert_eq!(
            own_cgroup_under(v2, "kubepods.slice/rekube"),
            Some("/kubepods.slice/rekube".into())
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu_millis("250m"), Some(250));
        assert_eq!(parse_cpu_millis("2"), Some(2000));
        assert_eq!(parse_cpu_millis("0.5"), Some(500));
        assert_eq!(parse_cpu_millis("x"), None);
        assert_eq!(parse_bytes("100Mi"), Some(100 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("1Zi"), None);
    }

    #[test]
    fn reservation_from_flags() {
        let d = opts(&[]).reservation().unwrap();
        assert_eq!(d, Reservation::default(), "upstream's defaults");
        let r = opts(&[
            "--kube-reserved",
            "cpu=100m,memory=256Mi",
            "--eviction-hard",
            "memory.available<200Mi,nodefs.available<5%,pid.available<10%",
            "--max-pods",
            "20",
        ])
        .reservation()
        .unwrap();
        assert_eq!(
            (r.cpu_milli, r.memory_bytes, r.max_pods),
            (100, 256 << 20, 20)
        );
        assert_eq!(r.eviction_memory_available_bytes, 200 << 20);
        assert_eq!(
            (
                r.eviction_nodefs_available_percent,
                r.eviction_pid_available_percent
            ),
            (5, Some(10))
        );
        for (flag, value) in [
            ("--kube-reserved", "gpu=1"),
            ("--kube-reserved", "cpu"),
            ("--eviction-hard", "memory.available<lots"),
            ("--eviction-hard", "nodefs.available<120%"),
        ] {
            assert!(
                opts(&[flag, value]).reservation().is_err(),
                "{flag} {value}"
            );
        }
    }
}
