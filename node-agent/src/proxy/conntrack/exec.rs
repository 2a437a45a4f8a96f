//! [`Conntrack`] through Debian's `conntrack` tool (conntrack-tools, the same netlink
//! calls upstream makes with vishvananda/netlink): `conntrack -L -p udp -f ipv4` to list,
//! one `conntrack -D` with the filter's `--orig-dst`/`--orig-port-dst`/`--reply-src`/
//! `--reply-port-src` per filter to delete. Optionally in a network namespace, as
//! [`crate::proxy::nftables::nft::Nft`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Conntrack, ConntrackError, Entry, Filter, Tuple};
use crate::proxy::types::{IpFamily, Protocol};

#[derive(Debug, Clone, Default)]
pub struct ConntrackTool {
    netns: Option<PathBuf>,
}

impl ConntrackTool {
    /// `conntrack` inside the network namespace at `netns`, or in the agent's own when None.
    pub fn new(netns: Option<&Path>) -> Self {
        ConntrackTool {
            netns: netns.map(Path::to_path_buf),
        }
    }

    /// Runs conntrack; returns (stdout, stderr) of a run that succeeded, or deleted nothing.
    fn exec(&self, args: &[String]) -> Result<(String, String), ConntrackError> {
        let mut cmd = match &self.netns {
            None => Command::new("conntrack"),
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg("conntrack");
                c
            }
        };
        let out = cmd.args(args).output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConntrackError::Missing
            } else {
                ConntrackError::Failed {
                    args: args.join(" "),
                    message: e.to_string(),
                }
            }
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // `-D` exits 1 when nothing matched ("0 flow entries have been deleted").
        if out.status.success() || stderr.contains(" 0 flow entries have been deleted") {
            return Ok((stdout, stderr));
        }
        if out.status.code() == Some(127) && self.netns.is_some() {
            return Err(ConntrackError::Missing);
        }
        Err(ConntrackError::Failed {
            args: args.join(" "),
            message: stderr.trim().to_string(),
        })
    }
}

fn family_arg(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

/// The entries in `conntrack -L` output: `udp 17 29 src=A dst=B sport=1 dport=2
/// [UNREPLIED] src=B dst=A sport=2 dport=1 mark=0 use=1` (the first tuple is the original
/// direction, the second the reply). Lines that do not parse are skipped.
pub fn parse_entries(output: &str) -> Vec<Entry> {
    output.lines().filter_map(parse_entry).collect()
}

fn parse_entry(line: &str) -> Option<Entry> {
    let mut words = line.split_whitespace();
    let protocol = words.find_map(|w| match w {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    })?;
    let mut tuples = [Tuple::default(), Tuple::default()];
    let mut seen = [0usize; 4];
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let field = match key {
            "src" => 0,
            "dst" => 1,
            "sport" => 2,
            "dport" => 3,
            _ => continue,
        };
        let side = seen[field];
        if side > 1 {
            continue;
        }
        seen[field] += 1;
        let t = &mut tuples[side];
        match field {
            0 => t.src_ip = Some(value.parse::<IpAddr>().ok()?),
            1 => t.dst_ip = Some(value.parse::<IpAddr>().ok()?),
            2 => t.src_port = value.parse().ok()?,
            _ => t.dst_port = value.parse().ok()?,
        }
    }
    if seen[0] < 2 || seen[1] < 2 {
        return None;
    }
    let [original, reply] = tuples;
    Some(Entry {
        protocol,
        original,
        reply,
    })
}

/// `conntrack -D` arguments deleting what `filter` matches.
pub fn delete_args(family: IpFamily, filter: &Filter) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-D".into(),
        "-p".into(),
        filter.protocol.lower().into(),
        "-f".into(),
        family_arg(family).into(),
    ];
    if let Some(ip) = filter.orig_dst_ip {
        args.extend(["--orig-dst".into(), ip.to_string()]);
    }
    if let Some(port) = filter.orig_dst_port {
        args.extend(["--orig-port-dst".into(), port.to_string()]);
    }
    if let Some(ip) = filter.reply_src_ip {
        args.extend(["--reply-src".into(), ip.to_string()]);
    }
    if let Some(port) = filter.reply_src_port {
        args.extend(["--reply-port-src".into(), port.to_string()]);
    }
    args
}

/// "N flow entries have been deleted." in conntrack's message.
fn deleted_count(stderr: &str) -> usize {
    stderr
        .lines()
        .find_map(|l| {
            let (before, _) = l.split_once(" flow entries have been deleted")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

impl Conntrack for ConntrackTool {
    fn list(&self, family: IpFamily, protocol: Protocol) -> Result<Vec<Entry>, ConntrackError> {
        let args: Vec<String> = ["-L", "-p", protocol.lower(), "-f", family_arg(family)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (stdout, _) = self.exec(&args)?;
        Ok(parse_entries(&stdout))
    }

    fn clear(&self, family: IpFamily, filters: &[Filter]) -> Result<usize, ConntrackError> {
        let mut deleted = 0;
        for filter in filters {
            let (_, stderr) = self.exec(&delete_args(family, filter))?;
            deleted += deleted_count(&stderr);
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conntrack_list_output() {
        let out = "udp      17 29 src=10.0.0.1 dst=172.30.0.10 sport=40000 dport=53 [UNREPLIED] src=10.244.1.5 dst=10.0.0.1 sport=5353 dport=40000 mark=0 use=1\n\
                   udp      17 115 src=fd00::1 dst=fd00:96::a sport=1 dport=2 src=fd00:244::5 dst=fd00::1 sport=3 dport=1 [ASSURED] mark=0 use=1\n\
                   garbage\n";
        let entries = parse_entries(out);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            Entry {
                protocol: Protocol::Udp,
                original: Tuple {
                    src_ip: Some("10.0.0.1".parse().unwrap()),
                    dst_ip: Some("172.30.0.10".parse().unwrap()),
                    src_port: 40000,
                    dst_port: 53,
                },
                reply: Tuple {
                    src_ip: Some("10.244.1.5".parse().unwrap()),
                    dst_ip: Some("10.0.0.1".parse().unwrap()),
                    src_port: 5353,
                    dst_port: 40000,
                },
            }
        );
        assert_eq!(
            entries[1].reply.src_ip,
            Some("fd00:244::5".parse().unwrap())
        );
    }

    #[test]
    fn delete_arguments_and_count() {
        let f = crate::proxy::conntrack::cleanup::filter_for_port_nat(
            30053,
            "10.244.1.5".parse().unwrap(),
            5353,
            Protocol::Udp,
        );
        assert_eq!(
            delete_args(IpFamily::V4, &f).join(" "),
            "-D -p udp -f ipv4 --orig-port-dst 30053 --reply-src 10.244.1.5 --reply-port-src 5353"
        );
        assert_eq!(
            deleted_count(
                "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n"
            ),
            3
        );
    }
}
