//! The machine's readings for the Node status (upstream: cadvisor's MachineInfo and the
//! eviction manager's summary stats): /proc/meminfo, /proc/cpuinfo, statvfs of the agent's
//! root, os-release, machine and boot ids, the cgroup version, the node's addresses. The
//! parsers are pure and tested; `read_*` do the reading.
use std::path::Path;

use super::node_status::{MachineInfo, Usage};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no {field}")]
    Missing { path: String, field: &'static str },
}

fn read(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

/// A field of /proc/meminfo in bytes (the file gives kB).
pub fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// PRETTY_NAME of /etc/os-release, unquoted.
pub fn os_pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim_matches('"').to_string())
    })
}

/// The number of logical CPUs listed in /proc/cpuinfo.
pub fn count_processors(cpuinfo: &str) -> u32 {
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count() as u32
}

/// Kubernetes' name for the machine architecture (GOARCH).
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn statvfs(root: &Path) -> Result<(u64, u64), Error> {
    let s = rustix::fs::statvfs(root).map_err(|e| Error::Read {
        path: root.display().to_string(),
        source: e.into(),
    })?;
    Ok((s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
}

/// The node's InternalIPs: the given ones, else every non-loopback IPv4 address.
fn internal_ips(given: &[String]) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut ips: Vec<String> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
                .filter(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string())
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

/// Reads what the machine is; `root` is the filesystem the agent keeps its state on.
pub fn read_machine_info(
    hostname: &str,
    root: &Path,
    node_ips: &[String],
) -> Result<MachineInfo, Error> {
    let meminfo = read("/proc/meminfo")?;
    let (capacity, _) = statvfs(root)?;
    let optional = |p: &str| read(p).map(|s| s.trim().to_string()).unwrap_or_default();
    Ok(MachineInfo {
        hostname: hostname.into(),
        num_cores: count_processors(&read("/proc/cpuinfo")?).max(1),
        memory_bytes: meminfo_bytes(&meminfo, "MemTotal").ok_or(Error::Missing {
            path: "/proc/meminfo".into(),
            field: "MemTotal",
        })?,
        ephemeral_storage_bytes: capacity,
        kernel_version: optional("/proc/sys/kernel/osrelease"),
        os_image: os_pretty_name(&optional("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
        machine_id: optional("/etc/machine-id"),
        system_uuid: optional("/sys/class/dmi/id/product_uuid"),
        boot_id: optional("/proc/sys/kernel/random/boot_id"),
        architecture: go_arch(std::env::consts::ARCH).into(),
        cgroup_version: if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            2
        } else {
            1
        },
        internal_ips: internal_ips(node_ips),
    })
}

/// Reads what the machine has left.
pub fn read_usage(root: &Path) -> Result<Usage, Error> {
    let meminfo = read("/proc/meminfo")?;
    let (capacity, available) = statvfs(root)?;
    let pid_max: u64 = read("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()
        .unwrap_or(32768);
    let running = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    Ok(Usage {
        memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(0),
        nodefs_available_bytes: available,
        nodefs_capacity_bytes: capacity,
        pids_available: pid_max.saturating_sub(running),
        pids_max: pid_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let meminfo =
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal"), Some(24576000 * 1024));
        assert_eq!(
            meminfo_bytes(meminfo, "MemAvailable"),
            Some(20000000 * 1024)
        );
        assert_eq!(meminfo_bytes(meminfo, "Mem"), None);
        assert_eq!(
            os_pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            count_processors("processor\t: 0\nmodel\t: x\n\nprocessor\t: 1\n"),
            2
        );
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    #[test]
    fn this_machine_reads() {
        let m = read_machine_info("here", Path::new("/"), &[]).unwrap();
        assert!(m.num_cores >= 1 && m.memory_bytes > 0 && m.ephemeral_storage_bytes > 0);
        assert!(!m.kernel_version.is_empty());
        let u = read_usage(Path::new("/")).unwrap();
        assert!(u.memory_available_bytes > 0 && u.memory_available_bytes <= m.memory_bytes);
        assert!(u.pids_available > 0 && u.pids_available < u.pids_max);
        let given = read_machine_info("here", Path::new("/"), &["198.51.100.7".into()]).unwrap();
        assert_eq!(given.internal_ips, vec!["198.51.100.7"]);
    }
}
