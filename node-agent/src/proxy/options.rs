//! kube-proxy's flags, as `rekube-node-agent run` and `rekube-node-agent proxy` take them
//! (upstream's names and meaning; the sync periods prefixed `--proxy-` beside the kubelet's
//! flags), and their reading into one [`ProxierConfig`] per IP family. Pure.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use super::convert::parse_cidr_sloppy;
use super::nftables::{LocalDetector, NodePortAddresses, ProxierConfig};
use super::types::IpFamily;

/// `--proxy-mode`. Unknown values (`ipvs`) are refused when the flags are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    /// One nftables table per IP family (`ip rekube-proxy`, `ip6 rekube-proxy`).
    Nftables,
    /// `REKUBE-*` chains in the filter and nat tables of iptables and ip6tables, written
    /// with iptables-restore.
    Iptables,
    /// No service proxy in this agent (another one runs, or the agent shares the host's
    /// network namespace in tests).
    None,
}

#[derive(Args, Debug, Clone)]
pub struct ProxyOptions {
    /// Which proxy mode to use: nftables (the default), iptables, or none (no service
    /// proxy).
    #[arg(long, value_enum, default_value = "nftables")]
    pub proxy_mode: ProxyMode,
    /// The CIDR range of the pods (comma-separated, one per family): traffic from
    /// elsewhere to a ClusterIP is masqueraded, and Local traffic policies short-circuit
    /// pod traffic. Empty: no pod/non-pod distinction.
    #[arg(long, default_value = "")]
    pub cluster_cidr: String,
    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The addresses NodePorts answer on, as CIDRs (comma-separated), or `primary` (the
    /// node's IPs, nftables mode's default); 0.0.0.0/0 and ::/0 mean every local address.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<String>,
    /// How often the rules are resynced after a failed sync (kube-proxy's --sync-period).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub proxy_sync_period: Duration,
    /// The least time between the end of one sync and the start of the next; changes in
    /// between are coalesced (kube-proxy's --min-sync-period).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub proxy_min_sync_period: Duration,
    /// The address and port of the proxy's health server (`/healthz`, `/livez`); empty
    /// turns it off.
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid --{flag} {value:?}: {message}")]
    Invalid {
        flag: &'static str,
        value: String,
        message: String,
    },
}

fn invalid(flag: &'static str, value: &str, message: &str) -> Error {
    Error::Invalid {
        flag,
        value: value.to_string(),
        message: message.to_string(),
    }
}

impl ProxyOptions {
    /// `--cluster-cidr`: at most one CIDR per family.
    pub fn cluster_cidrs(&self) -> Result<Vec<IpNet>, Error> {
        let mut cidrs: Vec<IpNet> = Vec::new();
        for s in self
            .cluster_cidr
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let cidr = parse_cidr_sloppy(s)
                .ok_or_else(|| invalid("cluster-cidr", s, "not a CIDR (e.g. 10.244.0.0/16)"))?;
            if cidrs.iter().any(|c| family_of(c) == family_of(&cidr)) {
                return Err(invalid(
                    "cluster-cidr",
                    &self.cluster_cidr,
                    "more than one CIDR of one IP family",
                ));
            }
            cidrs.push(cidr);
        }
        Ok(cidrs)
    }

    /// `--nodeport-addresses`: CIDRs, or None for `primary` (also the default).
    pub fn nodeport_cidrs(&self) -> Result<Option<Vec<IpNet>>, Error> {
        let values: Vec<&str> = self
            .nodeport_addresses
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if values.is_empty() || values == ["primary"] {
            return Ok(None);
        }
        values
            .iter()
            .map(|s| {
                parse_cidr_sloppy(s).ok_or_else(|| {
                    invalid("nodeport-addresses", s, "not a CIDR, or \"primary\" alone")
                })
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// The sync periods, checked (upstream: both positive, min not above the period).
    pub fn sync_periods(&self) -> Result<(Duration, Duration), Error> {
        if self.proxy_sync_period.is_zero() {
            return Err(invalid("proxy-sync-period", "0s", "must be greater than 0"));
        }
        if self.proxy_min_sync_period > self.proxy_sync_period {
            return Err(invalid(
                "proxy-min-sync-period",
                &humantime::format_duration(self.proxy_min_sync_period).to_string(),
                "must not be longer than --proxy-sync-period",
            ));
        }
        Ok((self.proxy_min_sync_period, self.proxy_sync_period))
    }

    /// `--healthz-bind-address`: an IP and port, or None when empty.
    pub fn healthz_address(&self) -> Result<Option<SocketAddr>, Error> {
        let value = self.healthz_bind_address.trim();
        if value.is_empty() {
            return Ok(None);
        }
        value.parse().map(Some).map_err(|_| {
            invalid(
                "healthz-bind-address",
                value,
                "not an IP address and port (e.g. 0.0.0.0:10256)",
            )
        })
    }

    /// Every flag checked (what [`Self::proxier_configs`] would refuse), before the agent
    /// touches anything.
    pub fn validate(&self) -> Result<(), Error> {
        self.cluster_cidrs()?;
        self.nodeport_cidrs()?;
        self.sync_periods()?;
        self.healthz_address()?;
        Ok(())
    }

    /// One proxier configuration per IP family the node has (its IPs' families, and those
    /// of `--cluster-cidr`; IPv4 when neither says). `local_ips` are the node's interface
    /// addresses, for `--nodeport-addresses` CIDRs.
    pub fn proxier_configs(
        &self,
        node_name: &str,
        node_ips: &[IpAddr],
        local_ips: &[IpAddr],
    ) -> Result<Vec<ProxierConfig>, Error> {
        let cluster_cidrs = self.cluster_cidrs()?;
        let nodeport_cidrs = self.nodeport_cidrs()?;
        self.sync_periods()?;
        let mut families: Vec<IpFamily> = node_ips
            .iter()
            .map(IpFamily::of)
            .chain(cluster_cidrs.iter().map(family_of))
            .collect();
        families.sort();
        families.dedup();
        if families.is_empty() {
            families.push(IpFamily::V4);
        }
        Ok(families
            .into_iter()
            .map(|family| {
                let mut config = ProxierConfig::new(family, node_name);
                config.node_ip = node_ips.iter().copied().find(|ip| family.matches(ip));
                config.masquerade_all = self.masquerade_all;
                config.local_detector = cluster_cidrs
                    .iter()
                    .find(|c| family_of(c) == family)
                    .map_or(LocalDetector::None, |c| LocalDetector::ByCidr(*c));
                config.node_port_addresses =
                    node_port_addresses(family, nodeport_cidrs.as_deref(), node_ips, local_ips);
                config
            })
            .collect())
    }
}

fn family_of(net: &IpNet) -> IpFamily {
    IpFamily::of(&net.addr())
}

/// Upstream's `NodePortAddresses` for one family: `primary` is the node's IPs of the
/// family (every local address when it has none); a zero-prefix CIDR is every local
/// address; otherwise the local addresses inside the CIDRs of the family.
pub fn node_port_addresses(
    family: IpFamily,
    cidrs: Option<&[IpNet]>,
    node_ips: &[IpAddr],
    local_ips: &[IpAddr],
) -> NodePortAddresses {
    let Some(cidrs) = cidrs else {
        let ips: Vec<IpAddr> = node_ips
            .iter()
            .copied()
            .filter(|ip| family.matches(ip))
            .collect();
        return if ips.is_empty() {
            NodePortAddresses::All
        } else {
            NodePortAddresses::Ips(ips)
        };
    };
    let cidrs: Vec<&IpNet> = cidrs.iter().filter(|c| family_of(c) == family).collect();
    if cidrs.iter().any(|c| c.prefix_len() == 0) {
        return NodePortAddresses::All;
    }
    NodePortAddresses::Ips(
        local_ips
            .iter()
            .copied()
            .filter(|ip| family.matches(ip) && cidrs.iter().any(|c| c.contains(ip)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        proxy: ProxyOptions,
    }

    fn parse(args: &[&str]) -> Result<ProxyOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.proxy)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_upstreams() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.proxy_mode, ProxyMode::Nftables);
        assert_eq!(o.proxy_sync_period, Duration::from_secs(30));
        assert_eq!(o.proxy_min_sync_period, Duration::from_secs(1));
        assert!(!o.masquerade_all);
        let configs = o.proxier_configs("n", &[ip("192.168.1.5")], &[]).unwrap();
        assert_eq!(configs.len(), 1);
        let c = &configs[0];
        assert_eq!(c.family, IpFamily::V4);
        assert_eq!(c.table, "rekube-proxy");
        assert_eq!(c.node_ip, Some(ip("192.168.1.5")));
        assert_eq!(c.local_detector, LocalDetector::None);
        assert_eq!(
            c.node_port_addresses,
            NodePortAddresses::Ips(vec![ip("192.168.1.5")])
        );
        assert_eq!(c.masquerade_mark, 0x4000);
    }

    #[test]
    fn unknown_modes_are_refused_at_parsing() {
        for mode in ["ipvs", "kernelspace", "userspace"] {
            let err = parse(&["--proxy-mode", mode]).expect_err(mode);
            assert!(err.to_string().contains("invalid value"), "{mode}: {err}");
        }
        assert_eq!(
            parse(&["--proxy-mode", "none"]).unwrap().proxy_mode,
            ProxyMode::None
        );
        assert_eq!(
            parse(&["--proxy-mode", "iptables"]).unwrap().proxy_mode,
            ProxyMode::Iptables
        );
    }

    #[test]
    fn flags_map_onto_the_proxier_config() {
        let o = parse(&[
            "--cluster-cidr",
            "10.244.0.0/16,fd00:244::/48",
            "--masquerade-all",
            "--nodeport-addresses",
            "192.168.0.0/16,::/0",
        ])
        .unwrap();
        let configs = o
            .proxier_configs(
                "n",
                &[ip("192.168.1.5")],
                &[
                    ip("127.0.0.1"),
                    ip("192.168.1.5"),
                    ip("192.168.2.7"),
                    ip("10.0.0.1"),
                ],
            )
            .unwrap();
        assert_eq!(
            configs.len(),
            2,
            "the families of node IPs and cluster CIDRs"
        );
        let (v4, v6) = (&configs[0], &configs[1]);
        assert!(v4.masquerade_all && v6.masquerade_all);
        assert_eq!(
            v4.local_detector,
            LocalDetector::ByCidr("10.244.0.0/16".parse().unwrap())
        );
        assert_eq!(
            v6.local_detector,
            LocalDetector::ByCidr("fd00:244::/48".parse().unwrap())
        );
        assert_eq!(
            v4.node_port_addresses,
            NodePortAddresses::Ips(vec![ip("192.168.1.5"), ip("192.168.2.7")])
        );
        assert_eq!(v6.node_port_addresses, NodePortAddresses::All);
        assert_eq!(v6.node_ip, None);
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--cluster-cidr", "10.244.0.0"],
                "invalid --cluster-cidr \"10.244.0.0\": not a CIDR (e.g. 10.244.0.0/16)",
            ),
            (
                &["--cluster-cidr", "10.0.0.0/8,10.1.0.0/16"],
                "invalid --cluster-cidr \"10.0.0.0/8,10.1.0.0/16\": more than one CIDR of one IP family",
            ),
            (
                &["--nodeport-addresses", "primary,10.0.0.0/8"],
                "invalid --nodeport-addresses \"primary\": not a CIDR, or \"primary\" alone",
            ),
            (
                &["--proxy-sync-period", "0s"],
                "invalid --proxy-sync-period \"0s\": must be greater than 0",
            ),
            (
                &[
                    "--proxy-min-sync-period",
                    "1m",
                    "--proxy-sync-period",
                    "30s",
                ],
                "invalid --proxy-min-sync-period \"1m\": must not be longer than --proxy-sync-period",
            ),
        ];
        for (args, want) in cases {
            let o = parse(args).unwrap();
            let err = o.proxier_configs("n", &[], &[]).unwrap_err();
            assert_eq!(err.to_string(), *want, "{args:?}");
        }
    }

    #[test]
    fn healthz_bind_address_is_upstreams() {
        assert_eq!(
            parse(&[]).unwrap().healthz_address(),
            Ok(Some("0.0.0.0:10256".parse().unwrap()))
        );
        assert_eq!(
            parse(&["--healthz-bind-address", "[::1]:9999"])
                .unwrap()
                .healthz_address(),
            Ok(Some("[::1]:9999".parse().unwrap()))
        );
        assert_eq!(
            parse(&["--healthz-bind-address", ""])
                .unwrap()
                .healthz_address(),
            Ok(None)
        );
        for bad in ["10256", "0.0.0.0", "localhost:10256"] {
            let err = parse(&["--healthz-bind-address", bad])
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid --healthz-bind-address \"{bad}\": not an IP address and port (e.g. 0.0.0.0:10256)"
                )
            );
        }
    }

    #[test]
    fn primary_without_node_ips_is_every_local_address() {
        assert_eq!(
            node_port_addresses(IpFamily::V4, None, &[], &[ip("10.0.0.1")]),
            NodePortAddresses::All
        );
        assert_eq!(
            node_port_addresses(IpFamily::V6, None, &[ip("10.0.0.1")], &[]),
            NodePortAddresses::All
        );
    }
}
