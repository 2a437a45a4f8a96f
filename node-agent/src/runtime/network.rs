//! The pod network until real pod networking lands: [`PodCidrNetwork`], a
//! [`PodNetwork`] that gives each pod an IP from its Node's `spec.podCIDR` (allocated as
//! CNI's host-local IPAM does: one file per address, holding the pod's UID) and puts it
//! in the pod's network namespace, on the loopback device as the alias `lo:0` with a /32.
//! The address is the pod's `status.podIP`, its /etc/hosts entry and what probes dial
//! inside the namespace; it is not routed to from outside the pod yet (a veth and routes
//! are the networking issue's). Without a podCIDR (no node IPAM) a pod gets loopback
//! only and no IP, as [`LoopbackNetwork`].
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ipnet::Ipv4Net;

use super::sandbox::{LoopbackNetwork, NetworkError, PodNetwork, SandboxConfig, in_netns};

/// The node's current pod CIDR, shared with whoever watches the Node.
pub type SharedPodCidr = Arc<RwLock<Option<String>>>;

/// CNI host-local's file-per-address allocator over a directory.
#[derive(Debug, Clone)]
pub struct HostLocalIpam {
    dir: PathBuf,
}

impl HostLocalIpam {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        HostLocalIpam { dir: dir.into() }
    }

    /// The addresses a pod may get: the range's hosts without the first (the gateway,
    /// as host-local's default `rangeStart`), in order.
    pub fn candidates(range: &Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
        range.hosts().skip(1)
    }

    /// The address held by `owner`, or the first free one of `range`, reserved for it.
    pub fn allocate(&self, range: &Ipv4Net, owner: &str) -> std::io::Result<Ipv4Addr> {
        std::fs::create_dir_all(&self.dir)?;
        if let Some(ip) = self
            .held_by(owner)?
            .into_iter()
            .find(|ip| range.contains(ip))
        {
            return Ok(ip);
        }
        for ip in Self::candidates(range) {
            let file = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, owner.as_bytes())?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "no IP addresses available in range set: {range}"
        )))
    }

    fn held_by(&self, owner: &str) -> std::io::Result<Vec<Ipv4Addr>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Ok(ip) = e.file_name().to_string_lossy().parse::<Ipv4Addr>() else {
                continue;
            };
            if std::fs::read_to_string(e.path()).is_ok_and(|o| o == owner) {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// Frees every address `owner` holds.
    pub fn release(&self, owner: &str) -> std::io::Result<()> {
        for ip in self.held_by(owner)? {
            match std::fs::remove_file(self.dir.join(ip.to_string())) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// See the module docs.
pub struct PodCidrNetwork {
    pod_cidr: SharedPodCidr,
    ipam: HostLocalIpam,
}

impl PodCidrNetwork {
    /// Addresses are recorded under `ipam_dir` (in the run directory: a previous run's
    /// reservations go with its sandboxes).
    pub fn new(pod_cidr: SharedPodCidr, ipam_dir: impl Into<PathBuf>) -> Self {
        PodCidrNetwork {
            pod_cidr,
            ipam: HostLocalIpam::new(ipam_dir),
        }
    }

    fn range(&self) -> Option<Ipv4Net> {
        let cidr = self.pod_cidr.read().unwrap().clone()?;
        match cidr.parse::<Ipv4Net>() {
            Ok(net) => Some(net.trunc()),
            Err(e) => {
                tracing::warn!(%cidr, error = %e, "node podCIDR is not an IPv4 network");
                None
            }
        }
    }
}

impl PodNetwork for PodCidrNetwork {
    fn setup(&self, pod: &SandboxConfig, netns: &Path) -> Result<Vec<IpAddr>, NetworkError> {
        let Some(range) = self.range() else {
            return LoopbackNetwork.setup(pod, netns);
        };
        let ip = self
            .ipam
            .allocate(&range, &pod.pod_uid)
            .map_err(|source| NetworkError::Io {
                op: "allocate an address",
                netns: netns.display().to_string(),
                source,
            })?;
        let configured = in_netns(netns, move || {
            super::sandbox::set_loopback_up()?;
            add_loopback_alias(ip)
        });
        if let Err(e) = configured {
            let _ = self.ipam.release(&pod.pod_uid);
            return Err(e);
        }
        Ok(vec![IpAddr::V4(ip)])
    }

    fn teardown(&self, pod: &SandboxConfig, netns: &Path) -> Result<(), NetworkError> {
        // The address goes with the namespace; the reservation is released here.
        self.ipam
            .release(&pod.pod_uid)
            .map_err(|source| NetworkError::Io {
                op: "release the address",
                netns: netns.display().to_string(),
                source,
            })
    }
}

/// `ip addr add IP/32 dev lo label lo:0`, through the classic ioctls on the alias.
fn add_loopback_alias(ip: Ipv4Addr) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = super::sandbox::ifreq_socket()?;
    let ifreq_with = |addr: Ipv4Addr| {
        let mut ifr = super::sandbox::ifreq_named(b"lo:0");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(addr).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in the ifreq's sockaddr union member.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&sin as *const libc::sockaddr_in).cast::<u8>(),
                (&mut ifr.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_in>(),
            );
        }
        ifr
    };
    for (request, value) in [
        (libc::SIOCSIFADDR, ip),
        (libc::SIOCSIFNETMASK, Ipv4Addr::BROADCAST),
    ] {
        let ifr = ifreq_with(value);
        // SAFETY: an ioctl on a socket with a properly initialised ifreq.
        if unsafe { libc::ioctl(sock.as_raw_fd(), request, &ifr) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_local_allocates_in_order_keeps_owners_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = HostLocalIpam::new(dir.path());
        let range: Ipv4Net = "10.244.3.0/30".parse().unwrap();
        // A /30 has two hosts, .1 (the gateway) and .2.
        assert_eq!(
            ipam.allocate(&range, "pod-a").unwrap(),
            Ipv4Addr::new(10, 244, 3, 2)
        );
        // The same owner gets the same address again.
        assert_eq!(
            ipam.allocate(&range, "pod-a").unwrap(),
            Ipv4Addr::new(10, 244, 3, 2)
        );
        let full = ipam.allocate(&range, "pod-b").unwrap_err();
        assert_eq!(
            full.to_string(),
            "no IP addresses available in range set: 10.244.3.0/30"
        );
        ipam.release("pod-a").unwrap();
        assert_eq!(
            ipam.allocate(&range, "pod-b").unwrap(),
            Ipv4Addr::new(10, 244, 3, 2)
        );
        let wide: Ipv4Net = "10.244.4.0/24".parse().unwrap();
        let got: Vec<Ipv4Addr> = HostLocalIpam::candidates(&wide).take(2).collect();
        assert_eq!(
            got,
            [Ipv4Addr::new(10, 244, 4, 2), Ipv4Addr::new(10, 244, 4, 3)]
        );
    }
}
