//! local-nodes: the nodes of `just up`'s local cluster. Each node is a network namespace
//! of its own on a switch with no uplink (the multi-node harness, `rekube_e2e::netns`:
//! `rk-up-n0`, `rk-up-n1`, … with addresses 172.31.250.1, .2, … and the apiserver
//! forwarded onto their loopback), with a `rekube-node-agent run` in it as the node's
//! kubelet and kube-proxy: the CNI pod network over the Node's podCIDR (the reference
//! plugins), routes to the other nodes' pod CIDRs, and the service proxy.
//!
//! Runs in the foreground until SIGTERM or SIGINT (`e2e/scripts/nodes-up.sh` starts it in
//! the background and `just down` stops it), then stops the agents, runs
//! `rekube-node-agent cleanup` in each namespace, removes the agents' cgroup parents and
//! deletes the namespaces. The pods are not its business: `just down` deletes them
//! through the API first, while the agents still run and remove their containers.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use rekube_e2e::agent;
use rekube_e2e::netns::{NodeNetns, TestNetwork, enter_on_spawn};

#[derive(Debug, Parser)]
#[command(
    name = "local-nodes",
    about = "Nodes of the local cluster: rekube-node-agent in network namespaces of their own"
)]
struct Args {
    /// How many nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=9))]
    nodes: u8,
    /// The rekube-node-agent binary.
    #[arg(long)]
    agent: PathBuf,
    /// Each node's state goes under <root>/<node name>.
    #[arg(long)]
    root: PathBuf,
    /// Each agent logs to <logs>/<node name>.log.
    #[arg(long)]
    logs: PathBuf,
    /// The reference CNI plugins.
    #[arg(long, default_value_os_t = rekube_e2e::netns::cni_bin_dir())]
    cni_bin_dir: PathBuf,
    /// The pods' CIDR (the controllers' --cluster-cidr): traffic leaving it is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The service proxy's mode.
    #[arg(long, default_value = "nftables", value_parser = ["nftables", "iptables", "none"])]
    proxy_mode: String,
}

/// What must be there before anything is made.
fn check(args: &Args) -> anyhow::Result<()> {
    if !args.agent.is_file() {
        bail!("the node agent {} is missing", args.agent.display());
    }
    if !args.cni_bin_dir.join("bridge").is_file() {
        bail!(
            "no cni plugins in {} (e2e/scripts/build-kubernetes.sh cni-plugins builds them)",
            args.cni_bin_dir.display()
        );
    }
    Ok(())
}

/// Node `i`'s name.
fn node_name(i: usize) -> String {
    format!("rekube-node-{i}")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SIGTERM and SIGINT are waited for, not handled: blocked before any thread starts so
    // that every thread inherits the mask (the agents, spawned through std, do not).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .context("blocking SIGTERM and SIGINT")?;
    check(&args)?;
    std::fs::create_dir_all(&args.logs)?;
    let image = args.root.join("busybox.tar");
    std::fs::create_dir_all(&args.root)?;
    agent::build_busybox_image(&image).map_err(anyhow::Error::msg)?;

    let net = TestNetwork::new("up", usize::from(args.nodes));
    let mut agents = Vec::new();
    let mut failed = None;
    for (i, node) in net.nodes.iter().enumerate() {
        match start_agent(&args, &node_name(i), node, &image) {
            Ok(child) => agents.push((node_name(i), node, child)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&image);
    if failed.is_none() {
        for (name, node, _) in &agents {
            eprintln!(
                "[local-nodes] node {name}: network namespace {} ({}), log {}",
                node.name,
                node.address,
                args.logs.join(format!("{name}.log")).display()
            );
        }
        let signal = signals.wait().context("waiting for SIGTERM or SIGINT")?;
        eprintln!("[local-nodes] {signal}: stopping the nodes");
    }
    for (name, node, child) in &mut agents {
        agent::terminate_child(child, Duration::from_secs(20));
        let cleaned = Command::new(&args.agent)
            .args(["cleanup", "--netns"])
            .arg(node.path())
            .output();
        match cleaned {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "[local-nodes] cleanup of {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("[local-nodes] cleanup of {name}: {e}"),
        }
        agent::remove_cgroup_parent(&cgroup_parent(name));
        // The agent's rshared bind of its root directory stays when it ends, as the
        // kubelet's does (a restarted agent finds it); the node is gone for good here.
        let root = args.root.join(name.as_str());
        rekube_e2e::sweep::unmount_under(&root, &format!("[local-nodes] node {name}"));
    }
    drop(net);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn cgroup_parent(node: &str) -> String {
    format!("rekube-{node}")
}

/// Imports the busybox image into the node's store, then starts its agent in its
/// namespace.
fn start_agent(args: &Args, name: &str, node: &NodeNetns, image: &Path) -> anyhow::Result<Child> {
    let root = args.root.join(name);
    agent::import_image(&args.agent, image, &root).map_err(anyhow::Error::msg)?;
    let log_path = args.logs.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{}", log_path.display()))?;
    let mut command = Command::new(&args.agent);
    // Joined between fork and exec; the file stays open until then.
    let _netns = enter_on_spawn(&mut command, &node.path());
    command
        .arg("run")
        .args(["--node-name", name])
        .arg("--root-dir")
        .arg(&root)
        .args(agent::real_agent_flags(&root, &cgroup_parent(name)))
        .args(agent::cni_node_flags(&root, node, &args.cni_bin_dir))
        .args(["--cluster-cidr", &args.cluster_cidr])
        .args(["--proxy-mode", &args.proxy_mode])
        // The nodes share the host's disk with whatever else is on it (build folders):
        // as kind does for its nodes (nodefs.available 0% in its kubelet configuration),
        // no disk eviction, else a busy developer machine's nodes are all under
        // DiskPressure, and its NoSchedule taint keeps every pod off them.
        .args([
            "--eviction-hard",
            "memory.available<100Mi,nodefs.available<0%",
        ])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    command
        .spawn()
        .with_context(|| format!("starting {} for node {name}", args.agent.display()))
}

#[cfg(test)]
mod tests {
    //! Bad input is refused before any namespace, agent or cgroup exists.

    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = [
            "local-nodes",
            "--agent",
            "/bin/sh",
            "--root",
            "/r",
            "--logs",
            "/l",
        ];
        Args::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn node_counts_outside_one_to_nine_are_refused() {
        for bad in ["0", "10", "two"] {
            let err = parse(&["--nodes", bad]).expect_err(bad).to_string();
            assert!(err.contains("--nodes"), "{bad}: {err}");
        }
        assert_eq!(parse(&["--nodes", "3"]).unwrap().nodes, 3);
        assert_eq!(parse(&[]).unwrap().nodes, 2);
    }

    #[test]
    fn unknown_proxy_modes_are_refused() {
        let err = parse(&["--proxy-mode", "ipvs"]).unwrap_err().to_string();
        assert!(err.contains("invalid value 'ipvs'"), "{err}");
        assert_eq!(
            parse(&["--proxy-mode", "iptables"]).unwrap().proxy_mode,
            "iptables"
        );
    }

    #[test]
    fn a_missing_agent_or_cni_plugins_are_named() {
        let mut args = parse(&[]).unwrap();
        args.agent = "/nonexistent/rekube-node-agent".into();
        assert_eq!(
            check(&args).unwrap_err().to_string(),
            "the node agent /nonexistent/rekube-node-agent is missing"
        );
        args.agent = "/bin/sh".into();
        args.cni_bin_dir = "/nonexistent-cni".into();
        assert_eq!(
            check(&args).unwrap_err().to_string(),
            "no cni plugins in /nonexistent-cni (e2e/scripts/build-kubernetes.sh cni-plugins builds them)"
        );
    }
}
