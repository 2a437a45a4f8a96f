//! Cross-node pod traffic and outbound masquerade for the cni pod network, what kind's
//! kindnet does beside its CNI config:
//! - a route to every other Node's pod CIDRs via that Node's InternalIP of the same
//!   family (`ip route replace <podCIDR> via <InternalIP>`), added and removed as Nodes
//!   come and go. The routes carry the protocol number [`ROUTE_PROTOCOL`] so that the
//!   agent lists, changes and deletes only its own, never a route someone else made;
//! - masquerade of pod traffic leaving the cluster CIDR (`--cluster-cidr`), in an
//!   nftables table of the agent's own, [`MASQUERADE_TABLE`] (kindnet's
//!   `kindnet-ipmasq`), replaced whole in one transaction.
//!
//! [`desired_routes`] and [`route_changes`] are the pure core; [`IpRoute`] the kernel
//! through `ip` (iproute2) and `nft`.
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use ipnet::IpNet;
use kube::Client;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rekube_crds::Node;

/// The `proto` of the agent's routes (any number iproute2 does not name; 0x52, "R").
pub const ROUTE_PROTOCOL: u8 = 82;
/// The agent's masquerade table (in the `ip` and `ip6` families).
pub const MASQUERADE_TABLE: &str = "rekube-masquerade";
/// How often routes are checked against the Nodes when nothing changes.
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("running {command}: {message}")]
    Command { command: String, message: String },
}

/// The routes this node needs: each other Node's pod CIDRs (`spec.podCIDRs`, else
/// `spec.podCIDR`) via its first InternalIP of the same family. Nodes without either
/// get none.
pub fn desired_routes(nodes: &[Node], self_name: &str) -> BTreeMap<IpNet, IpAddr> {
    let mut routes = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(self_name) {
            continue;
        }
        let spec = node.spec.clone().unwrap_or_default();
        let cidrs: Vec<String> = match spec.pod_cidrs {
            Some(c) if !c.is_empty() => c,
            _ => spec.pod_cidr.into_iter().collect(),
        };
        let internal: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        for cidr in cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()) {
            let via = internal
                .iter()
                .find(|ip| ip.is_ipv4() == matches!(cidr, IpNet::V4(_)));
            if let Some(via) = via {
                routes.insert(cidr.trunc(), *via);
            }
        }
    }
    routes
}

/// What to change to get from `current` (the agent's routes in the kernel) to `desired`:
/// the routes to replace (missing or via another gateway) and those to delete.
pub fn route_changes(
    desired: &BTreeMap<IpNet, IpAddr>,
    current: &BTreeMap<IpNet, IpAddr>,
) -> (Vec<(IpNet, IpAddr)>, Vec<IpNet>) {
    let replace = desired
        .iter()
        .filter(|(dst, via)| current.get(dst) != Some(via))
        .map(|(d, v)| (*d, *v))
        .collect();
    let delete = current
        .keys()
        .filter(|dst| !desired.contains_key(dst))
        .copied()
        .collect();
    (replace, delete)
}

/// The masquerade table for `cluster_cidrs` (one table per family that has a CIDR;
/// none without a CIDR): pod traffic to anywhere outside the cluster CIDR leaves with the
/// node's address (traffic to the node itself never reaches postrouting).
pub fn masquerade_ruleset(cluster_cidrs: &[IpNet]) -> String {
    let mut out = String::new();
    for (family, addr) in [("ip", "ip"), ("ip6", "ip6")] {
        let cidrs: Vec<String> = cluster_cidrs
            .iter()
            .filter(|c| matches!(c, IpNet::V4(_)) == (family == "ip"))
            .map(|c| c.trunc().to_string())
            .collect();
        // Always recreated whole: add (in case it is absent), delete, define.
        out.push_str(&format!(
            "add table {family} {MASQUERADE_TABLE}\ndelete table {family} {MASQUERADE_TABLE}\n"
        ));
        if cidrs.is_empty() {
            continue;
        }
        let set = cidrs.join(", ");
        out.push_str(&format!(
            "table {family} {MASQUERADE_TABLE} {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\t{addr} saddr {{ {set} }} {addr} daddr != {{ {set} }} masquerade\n\
             \t}}\n\
             }}\n"
        ));
    }
    out
}

/// The kernel's routes and nftables through `ip` and `nft`, in the agent's network
/// namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct IpRoute;

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, RouteError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |message: String| RouteError::Command {
        command: command.clone(),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl IpRoute {
    /// The agent's routes (`proto` [`ROUTE_PROTOCOL`]) with a gateway, both families.
    pub fn list(&self) -> Result<BTreeMap<IpNet, IpAddr>, RouteError> {
        let proto = ROUTE_PROTOCOL.to_string();
        let mut out = BTreeMap::new();
        for family in ["-4", "-6"] {
            let json = run(
                "ip",
                &["-j", family, "route", "show", "proto", &proto],
                None,
            )?;
            let routes: Vec<serde_json::Value> =
                serde_json::from_str(json.trim()).unwrap_or_default();
            for r in routes {
                let (Some(dst), Some(via)) = (r["dst"].as_str(), r["gateway"].as_str()) else {
                    continue;
                };
                if let (Ok(dst), Ok(via)) = (dst.parse::<IpNet>(), via.parse::<IpAddr>()) {
                    out.insert(dst, via);
                }
            }
        }
        Ok(out)
    }

    pub fn replace(&self, dst: &IpNet, via: &IpAddr) -> Result<(), RouteError> {
        let (dst, via, proto) = (dst.to_string(), via.to_string(), ROUTE_PROTOCOL.to_string());
        run(
            "ip",
            &["route", "replace", &dst, "via", &via, "proto", &proto],
            None,
        )
        .map(drop)
    }

    pub fn delete(&self, dst: &IpNet) -> Result<(), RouteError> {
        let (dst, proto) = (dst.to_string(), ROUTE_PROTOCOL.to_string());
        run("ip", &["route", "del", &dst, "proto", &proto], None).map(drop)
    }

    /// Replaces the masquerade table with [`masquerade_ruleset`] in one transaction.
    pub fn apply_masquerade(&self, cluster_cidrs: &[IpNet]) -> Result<(), RouteError> {
        run(
            "nft",
            &["-f", "-"],
            Some(&masquerade_ruleset(cluster_cidrs)),
        )
        .map(drop)
    }

    /// Removes every route and table of the agent's, and the default network's bridge
    /// (`cleanup`, once the node's pods are gone).
    pub fn remove_all(&self) -> Result<(), RouteError> {
        for dst in self.list()?.keys() {
            self.delete(dst)?;
        }
        self.apply_masquerade(&[])?;
        let bridge = crate::cni::default_network::DEFAULT_BRIDGE;
        if run("ip", &["link", "show", bridge], None).is_ok() {
            run("ip", &["link", "del", bridge], None)?;
        }
        Ok(())
    }
}

/// `rekube-node-agent cleanup`'s pod network part: [`IpRoute::remove_all`] in the agent's
/// network namespace, or in the one at `netns`.
pub fn cleanup(netns: Option<&std::path::Path>) -> Result<(), RouteError> {
    let Some(path) = netns else {
        return IpRoute.remove_all();
    };
    let path = path.to_path_buf();
    // The commands run from a thread inside the namespace inherit it.
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| RouteError::Command {
            command: format!("open {}", path.display()),
            message: e.to_string(),
        })?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            RouteError::Command {
                command: format!("setns {}", path.display()),
                message: e.to_string(),
            }
        })?;
        IpRoute.remove_all()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(RouteError::Command {
            command: "cleanup".into(),
            message: "thread panicked".into(),
        })
    })
}

/// One pass: the kernel's routes made equal to the Nodes'. Each route is its own call:
/// one that the kernel refuses (a Node whose InternalIP is not on this node's links) is
/// logged and the others still go in; the first error is returned.
pub fn sync_routes(kernel: &IpRoute, nodes: &[Node], self_name: &str) -> Result<(), RouteError> {
    let desired = desired_routes(nodes, self_name);
    let (replace, delete) = route_changes(&desired, &kernel.list()?);
    let mut first_error = None;
    for (dst, via) in &replace {
        match kernel.replace(dst, via) {
            Ok(()) => tracing::info!(%dst, %via, "added the route to a node's pods"),
            Err(e) => {
                tracing::warn!(%dst, %via, error = %e, "adding the route to a node's pods");
                first_error.get_or_insert(e);
            }
        }
    }
    for dst in &delete {
        match kernel.delete(dst) {
            Ok(()) => tracing::info!(%dst, "removed the route to a gone node's pods"),
            Err(e) => {
                tracing::warn!(%dst, error = %e, "removing the route to a gone node's pods");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Keeps the routes equal to the Nodes (on every Node change, and every 30 s) and the
/// masquerade table in place, until the task is dropped.
pub async fn run_pod_routes(
    client: Client,
    self_name: String,
    cluster_cidrs: Vec<IpNet>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let kernel = IpRoute;
    if let Err(e) = kernel.apply_masquerade(&cluster_cidrs) {
        tracing::error!(error = %e, "installing the masquerade rules");
    }
    // The Nodes as the watch tells them (its initial list complete at InitDone).
    let mut known: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: BTreeMap<String, Node> = BTreeMap::new();
    let mut synced_once = false;
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    let mut resync = tokio::time::interval(RESYNC);
    // What the last sync aimed at: a Node event that changes no route (heartbeats) costs
    // no call to the kernel.
    let mut last: Option<BTreeMap<IpNet, IpAddr>> = None;
    loop {
        let resyncing = tokio::select! {
            _ = stop.changed() => return,
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Apply(n))) => {
                    known.insert(n.name_any(), n);
                    false
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    known.remove(&n.name_any());
                    false
                }
                Some(Ok(watcher::Event::Init)) => {
                    listing.clear();
                    continue;
                }
                Some(Ok(watcher::Event::InitApply(n))) => {
                    listing.insert(n.name_any(), n);
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    known = std::mem::take(&mut listing);
                    synced_once = true;
                    false
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching nodes for routes");
                    continue;
                }
                None => return,
            },
            _ = resync.tick() => {
                if let Err(e) = kernel.apply_masquerade(&cluster_cidrs) {
                    tracing::error!(error = %e, "installing the masquerade rules");
                }
                true
            }
        };
        if !synced_once {
            continue;
        }
        let nodes: Vec<Node> = known.values().cloned().collect();
        let desired = desired_routes(&nodes, &self_name);
        if !resyncing && last.as_ref() == Some(&desired) {
            continue;
        }
        last = Some(desired);
        let (name, kernel) = (self_name.clone(), kernel);
        match tokio::task::spawn_blocking(move || sync_routes(&kernel, &nodes, &name)).await {
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "syncing the routes to other nodes' pods (retried within 30s)")
            }
            Err(e) => tracing::error!(error = %e, "syncing routes: task failed"),
            Ok(Ok(())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidrs: &[&str], ips: &[(&str, &str)]) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidrs.first().map(|c| c.to_string()),
                pod_cidrs: (!cidrs.is_empty())
                    .then(|| cidrs.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn routes(r: &[(&str, &str)]) -> BTreeMap<IpNet, IpAddr> {
        r.iter()
            .map(|(d, v)| (d.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_route_to_each_other_nodes_pod_cidrs_via_its_internal_ip() {
        let nodes = [
            node("a", &["10.244.0.0/24"], &[("InternalIP", "172.31.0.1")]),
            node(
                "b",
                &["10.244.1.0/24", "fd00:10:244:1::/64"],
                &[
                    ("Hostname", "b"),
                    ("ExternalIP", "203.0.113.2"),
                    ("InternalIP", "172.31.0.2"),
                    ("InternalIP", "fd00::2"),
                ],
            ),
            // Only an IPv4 InternalIP: no route to its IPv6 range.
            node(
                "c",
                &["10.244.2.0/24", "fd00:10:244:2::/64"],
                &[("InternalIP", "172.31.0.3")],
            ),
            // No podCIDR yet, or no InternalIP: nothing.
            node("d", &[], &[("InternalIP", "172.31.0.4")]),
            node("e", &["10.244.4.0/24"], &[("Hostname", "e")]),
        ];
        assert_eq!(
            desired_routes(&nodes, "a"),
            routes(&[
                ("10.244.1.0/24", "172.31.0.2"),
                ("fd00:10:244:1::/64", "fd00::2"),
                ("10.244.2.0/24", "172.31.0.3"),
            ])
        );
        // spec.podCIDR alone (older objects) is read too.
        let mut old = node("f", &["10.244.5.0/24"], &[("InternalIP", "172.31.0.6")]);
        old.spec.as_mut().unwrap().pod_cidrs = None;
        assert_eq!(
            desired_routes(&[old], "a"),
            routes(&[("10.244.5.0/24", "172.31.0.6")])
        );
    }

    #[test]
    fn changes_replace_what_is_missing_or_moved_and_delete_what_is_gone() {
        let desired = routes(&[
            ("10.244.1.0/24", "172.31.0.2"),
            ("10.244.2.0/24", "172.31.0.3"),
            ("10.244.3.0/24", "172.31.0.4"),
        ]);
        let current = routes(&[
            ("10.244.1.0/24", "172.31.0.2"),
            ("10.244.2.0/24", "172.31.0.9"),
            ("10.244.9.0/24", "172.31.0.10"),
        ]);
        let (replace, delete) = route_changes(&desired, &current);
        assert_eq!(
            replace,
            [
                (
                    "10.244.2.0/24".parse().unwrap(),
                    "172.31.0.3".parse().unwrap()
                ),
                (
                    "10.244.3.0/24".parse().unwrap(),
                    "172.31.0.4".parse().unwrap()
                )
            ]
        );
        assert_eq!(delete, ["10.244.9.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(route_changes(&desired, &desired), (vec![], vec![]));
    }

    #[test]
    fn masquerade_leaves_the_cluster_cidr_and_nothing_without_one() {
        let rules = masquerade_ruleset(&["10.244.0.0/16".parse().unwrap()]);
        assert!(
            rules.contains("ip saddr { 10.244.0.0/16 } ip daddr != { 10.244.0.0/16 } masquerade")
        );
        assert!(rules.contains("delete table ip6 rekube-masquerade\n"));
        assert!(!rules.contains("table ip6 rekube-masquerade {"));
        let none = masquerade_ruleset(&[]);
        assert_eq!(
            none,
            "add table ip rekube-masquerade\ndelete table ip rekube-masquerade\n\
             add table ip6 rekube-masquerade\ndelete table ip6 rekube-masquerade\n"
        );
    }
}
