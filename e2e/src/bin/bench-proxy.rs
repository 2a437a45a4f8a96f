//! bench-proxy: the service proxy, upstream's kube-proxy v1.36.3 (core/v1 Services and
//! EndpointSlices) and rekube's (`rekube-node-agent proxy`, rekube Services and
//! EndpointSlices), side by side in the same run, one after the other on the same apiserver
//! and machine, each in a network namespace of its own (the multi-node harness's node,
//! `rekube_e2e::netns`), in each mode asked for.
//!
//! Per scale (Services × endpoints): the objects of both kinds are created once (the
//! rekube Services with the ClusterIPs the apiserver gave the core ones, and the same
//! EndpointSlices as rekube's kind); then, per mode
//! and side, on a fresh node namespace with a "pod" namespace holding two servers
//! (10.97.0.2 and .3) and a client "pod" namespace (10.97.1.2):
//! - **full sync**: from starting the proxy to the first connection through the probe
//!   Service's ClusterIP (the proxies program everything in their first sync after their
//!   informers have listed: this is list + first full sync + the kernel applying it);
//! - **endpoint change to live**: the probe Service's endpoint moved from one server to
//!   the other (an EndpointSlice update, either kind), timed from the update returning
//!   to the first connection through the ClusterIP that reaches the new server (polled
//!   every 2 ms); five times, the median;
//! - **proxy CPU** (the process and its children: both run `nft`) and **peak RSS**;
//! - **data path**, from the client pod: TCP connection setup (connect + one byte back)
//!   through the ClusterIP and directly to the pod IP, mean and p99 over 2 000
//!   connections; throughput of 1 GiB through each. First the conntrack entries that the
//!   full sync's polling left without DNAT are counted and flushed (see `run_side`).
//!
//! Prints each figure per side and the ratio rekube / upstream. `just bench-proxy` builds
//! everything and runs this (as root).
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use rekube_e2e::netns::{NodeNetns, TestNetwork, enter_on_spawn, in_netns, ip};
use rekube_e2e::procstat::proc_stat;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "bench-proxy",
    about = "Service proxy: kube-proxy vs rekube-node-agent proxy, side by side",
    args_override_self = true
)]
struct Args {
    /// Scales: numbers of Services (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    services: Vec<usize>,
    /// Endpoints per Service (addresses of its EndpointSlice).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Proxy modes (comma-separated): nftables, iptables.
    #[arg(long, value_delimiter = ',', default_value = "nftables")]
    modes: Vec<String>,
    /// The kube-proxy binary (`e2e/scripts/build-kubernetes.sh kube-proxy`).
    #[arg(long, default_value = "kube-proxy")]
    kube_proxy: String,
    /// The rekube-node-agent binary.
    #[arg(long, default_value = "rekube-node-agent")]
    rekube: String,
    /// The kubeconfig both proxies use (through the node namespace's forwarder).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: String,
    /// Which side to run.
    #[arg(long, default_value = "both", value_parser = ["upstream", "rekube", "both"])]
    only: String,
    /// The iptables backend both proxies' `iptables*` commands use in iptables mode:
    /// `nft` (Debian's default alternative, iptables-nft) or `legacy` (iptables-legacy,
    /// through a directory of links put first on their PATH).
    #[arg(long, default_value = "nft", value_parser = ["nft", "legacy"])]
    iptables_backend: String,
    /// Seconds a proxy may take for its first full sync before the run fails (iptables
    /// mode at 10 000 Services needs more than the default).
    #[arg(long, default_value_t = 600)]
    full_sync_limit: u64,
    /// Bytes for the throughput figure.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Connections for the connection setup figure.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
}

const SERVER_A: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);
const SERVER_B: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 1, 2);
const POD_CIDR: &str = "10.97.0.0/16";
/// The server's ports: 8080 answers one byte (its name), 9090 swallows a stream.
const ID_PORT: u16 = 8080;
const SINK_PORT: u16 = 9090;
const NODE_NAME: &str = "bench-proxy-node";

#[derive(Debug, Default, Clone)]
struct Figures {
    full_sync: Duration,
    change_live: Duration,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    connect_vip: (Duration, Duration, Vec<String>),
    connect_direct: (Duration, Duration, Vec<String>),
    throughput_vip_mib_s: f64,
    throughput_direct_mib_s: f64,
    /// Conntrack entries of connections to the probe's ClusterIP that were not DNAT-ed
    /// (left by the polling before the rules existed), flushed before the data path.
    stale_entries: usize,
}

/// The endpoints of Service `i` (fake addresses, never answered), or the probe's server.
fn endpoint_ips(i: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|j| format!("10.200.{}.{}", i % 250, j + 1))
        .collect()
}

fn core_service(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{i}")},
        "spec": {"ports": [
            {"name": "id", "port": 80, "targetPort": ID_PORT},
            {"name": "sink", "port": 90, "targetPort": SINK_PORT}]}})
}

fn slice(i: usize, ips: &[String]) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("s{i}"), "labels": {
            "kubernetes.io/service-name": format!("s{i}"),
            "endpointslice.kubernetes.io/managed-by": "bench-proxy"}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "id", "port": ID_PORT, "protocol": "TCP"},
                  {"name": "sink", "port": SINK_PORT, "protocol": "TCP"}]})
}

fn rekube_service(i: usize, cluster_ip: &str) -> Value {
    json!({"apiVersion": "rekube.io/v1", "kind": "Service",
        "metadata": {"name": format!("s{i}")},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": [
            {"name": "id", "port": 80, "targetPort": ID_PORT},
            {"name": "sink", "port": 90, "targetPort": SINK_PORT}]}})
}

/// The same EndpointSlice as rekube's kind.
fn rekube_slice(i: usize, ips: &[String]) -> Value {
    let mut slice = slice(i, ips);
    slice["apiVersion"] = json!("rekube.io/v1");
    slice
}

fn api(client: &Client, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
    let resource = if kind == "EndpointSlice" && api_version != "rekube.io/v1" {
        kube::api::ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&())
    } else {
        rekube_e2e::api_resource(api_version, kind)
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

async fn create_all(api: &Api<DynamicObject>, objects: Vec<Value>) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let results: Vec<_> = futures::stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            let pp = pp.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(o)?;
                api.create(&pp, &obj)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The scale's objects: core Services (their ClusterIPs from the apiserver) with
/// EndpointSlices, and rekube Services with the same ClusterIPs and EndpointSlices. Service 0 is
/// the probe: its endpoint is server A.
async fn create_objects(client: &Client, ns: &str, n: usize, per: usize) -> anyhow::Result<String> {
    let t = Instant::now();
    let services = api(client, ns, "v1", "Service");
    create_all(&services, (0..n).map(core_service).collect()).await?;
    let mut ips: BTreeMap<usize, String> = BTreeMap::new();
    for s in services.list(&Default::default()).await?.items {
        let i: usize = s.metadata.name.as_deref().unwrap_or("s0")[1..].parse()?;
        let ip = s.data["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ips.insert(i, ip);
    }
    let probe_ip = ips.get(&0).context("the probe Service")?.clone();
    let eps = |i: usize| {
        if i == 0 {
            vec![SERVER_A.to_string()]
        } else {
            endpoint_ips(i, per)
        }
    };
    create_all(
        &api(client, ns, "discovery.k8s.io/v1", "EndpointSlice"),
        (0..n).map(|i| slice(i, &eps(i))).collect(),
    )
    .await?;
    create_all(
        &api(client, ns, "rekube.io/v1", "Service"),
        ips.iter().map(|(i, ip)| rekube_service(*i, ip)).collect(),
    )
    .await?;
    create_all(
        &api(client, ns, "rekube.io/v1", "EndpointSlice"),
        (0..n).map(|i| rekube_slice(i, &eps(i))).collect(),
    )
    .await?;
    println!(
        "  created {n} core Services + EndpointSlices and {n} rekube Services + EndpointSlices in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(probe_ip)
}

/// Moves the probe's endpoint to `to` on `side`.
async fn move_probe(client: &Client, ns: &str, side: &str, to: Ipv4Addr) -> anyhow::Result<()> {
    let pp = PatchParams::default();
    let api_version = match side {
        "upstream" => "discovery.k8s.io/v1",
        _ => "rekube.io/v1",
    };
    api(client, ns, api_version, "EndpointSlice")
        .patch(
            "s0",
            &pp,
            &Patch::Merge(json!({"endpoints": [{"addresses": [to.to_string()], "conditions": {"ready": true}}]})),
        )
        .await?;
    Ok(())
}

/// The "pods" of a node: a server namespace (A and B) and a client namespace, each on a
/// veth to the node, routed through it.
struct Pods {
    server: String,
    client: String,
    stop: Arc<AtomicBool>,
}

impl Pods {
    fn new(node: &NodeNetns, tag: &str) -> Self {
        let (server, client) = (format!("rk-{tag}-srv"), format!("rk-{tag}-cli"));
        for (ns, veth, node_addr, addrs) in [
            (&server, "vs", "10.97.0.1/24", vec![SERVER_A, SERVER_B]),
            (&client, "vc", "10.97.1.1/24", vec![CLIENT]),
        ] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&[
                "-n", &node.name, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            ip(&["-n", &node.name, "addr", "add", node_addr, "dev", veth]);
            ip(&["-n", &node.name, "link", "set", veth, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            for a in &addrs {
                ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
            }
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            let gw = node_addr.split('/').next().unwrap();
            ip(&["-n", ns, "route", "add", "default", "via", gw]);
        }
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &node.name,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ])
            .output()
            .expect("sysctl");
        assert!(out.status.success(), "{out:?}");
        let pods = Pods {
            server,
            client,
            stop: Arc::new(AtomicBool::new(false)),
        };
        for (addr, name) in [(SERVER_A, b'A'), (SERVER_B, b'B')] {
            pods.serve(SocketAddr::from((addr, ID_PORT)), Some(name));
        }
        pods.serve(SocketAddr::from((SERVER_A, SINK_PORT)), None);
        pods.serve(SocketAddr::from((SERVER_B, SINK_PORT)), None);
        pods
    }

    fn path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }

    /// A listener in the server namespace: answers `id` and closes, or (None) reads a
    /// stream to its end.
    fn serve(&self, addr: SocketAddr, id: Option<u8>) {
        let listener = in_netns(Self::path(&self.server), move || TcpListener::bind(addr))
            .expect("a server listener");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::clone(&self.stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        match id {
                            Some(b) => {
                                let _ = c.write_all(&[b]);
                            }
                            None => {
                                std::thread::spawn(move || {
                                    let _ = std::io::copy(&mut c, &mut std::io::sink());
                                });
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
    }

    /// From the client: which server answers at `addr` (None: no answer within `t`).
    fn who(&self, addr: SocketAddr, t: Duration) -> Option<u8> {
        in_netns(Self::path(&self.client), move || {
            let mut s = TcpStream::connect_timeout(&addr, t).ok()?;
            s.set_read_timeout(Some(t)).ok()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).ok()?;
            Some(b[0])
        })
    }

    /// Connection setup (connect + the byte back), `n` times: mean, p99 and the attempts
    /// that failed (each retried; their time is not counted).
    fn connect_times(&self, addr: SocketAddr, n: usize) -> (Duration, Duration, Vec<String>) {
        in_netns(Self::path(&self.client), move || {
            let mut failed = Vec::new();
            let mut times: Vec<Duration> = Vec::with_capacity(n);
            while times.len() < n && failed.len() < 100 {
                let t = Instant::now();
                let attempt = TcpStream::connect(addr).and_then(|mut s| {
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b)
                });
                match attempt {
                    Ok(()) => times.push(t.elapsed()),
                    Err(e) => failed.push(format!("#{}: {e}", times.len())),
                }
            }
            times.sort();
            let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
            let p99 = times
                .get((n * 99 / 100).min(times.len().saturating_sub(1)))
                .copied();
            (mean, p99.unwrap_or_default(), failed)
        })
    }

    /// MiB/s of `bytes` sent to `addr`.
    fn throughput(&self, addr: SocketAddr, bytes: u64) -> f64 {
        in_netns(Self::path(&self.client), move || {
            let buf = vec![0u8; 1 << 20];
            let t = Instant::now();
            let mut s = TcpStream::connect(addr).expect("connect");
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..n]).expect("send");
                left -= n as u64;
            }
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
        })
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A proxy process, SIGTERMed and waited for when dropped (also when the run fails or
/// panics), so that none outlives the benchmark.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn start_proxy(args: &Args, side: &str, mode: &str, node: &NodeNetns) -> anyhow::Result<Child> {
    let log = std::fs::File::create(format!("/tmp/bench-proxy-{side}-{mode}.log"))?;
    let mut command = match side {
        "upstream" => {
            let mut c = Command::new(&args.kube_proxy);
            c.args([
                "--kubeconfig",
                &args.kubeconfig,
                "--proxy-mode",
                mode,
                "--hostname-override",
                NODE_NAME,
                // The node's IP, as rekube's --node-ip (without it kube-proxy waits up to
                // 30 s for a Node object to read it from).
                "--bind-address",
                &node.address.to_string(),
                "--cluster-cidr",
                POD_CIDR,
                // Not the machine's conntrack table (a namespace cannot set it anyway).
                "--conntrack-max-per-core",
                "0",
                "--metrics-bind-address",
                "127.0.0.1:10249",
                "--healthz-bind-address",
                "127.0.0.1:10256",
            ]);
            c
        }
        _ => {
            let mut c = Command::new(&args.rekube);
            c.args([
                "proxy",
                "--proxy-mode",
                mode,
                "--node-name",
                NODE_NAME,
                "--node-ip",
                &node.address.to_string(),
                "--cluster-cidr",
                POD_CIDR,
            ])
            .env("KUBECONFIG", &args.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("REKUBE_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
            );
            c
        }
    };
    if mode == "iptables" && args.iptables_backend == "legacy" {
        let links = legacy_iptables_dir()?;
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", links.display()));
    }
    command
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    let _file = enter_on_spawn(&mut command, &node.path());
    command
        .spawn()
        .with_context(|| format!("starting the {side} proxy"))
}

/// A directory where `iptables`, `iptables-save`, `iptables-restore` and their ip6tables
/// twins are Debian's legacy (x_tables) binaries.
fn legacy_iptables_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("bench-proxy-iptables-legacy");
    std::fs::create_dir_all(&dir)?;
    for family in ["iptables", "ip6tables"] {
        for (name, target) in [
            (family.to_string(), format!("{family}-legacy")),
            (format!("{family}-save"), format!("{family}-legacy-save")),
            (
                format!("{family}-restore"),
                format!("{family}-legacy-restore"),
            ),
        ] {
            let link = dir.join(&name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new("/usr/sbin").join(&target), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(dir)
}

/// Counts the node's conntrack entries of TCP connections to `vip` that were not DNAT-ed
/// (their reply comes from `vip` itself), then deletes every entry to `vip` (no
/// connection to it is open at this point).
fn flush_unnated_entries(node: &NodeNetns, vip: IpAddr) -> anyhow::Result<usize> {
    let conntrack = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &node.name, "conntrack"])
            .args(args)
            .output()
            .context("running conntrack")
    };
    let vip_s = vip.to_string();
    let listed = conntrack(&["-L", "-p", "tcp", "-d", &vip_s])?;
    if !listed.status.success() {
        bail!("conntrack -L: {}", String::from_utf8_lossy(&listed.stderr));
    }
    let reply_from_vip = format!("src={vip_s} ");
    let stale = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| {
            // The second src= is the reply's.
            l.match_indices("src=")
                .nth(1)
                .is_some_and(|(i, _)| l[i..].starts_with(&reply_from_vip))
        })
        .count();
    // Exit status 1 when nothing matched.
    let _ = conntrack(&["-D", "-p", "tcp", "-d", &vip_s])?;
    Ok(stale)
}

async fn run_side(
    args: &Args,
    client: &Client,
    ns: &str,
    probe_ip: &str,
    side: &str,
    mode: &str,
) -> anyhow::Result<Figures> {
    let tag = format!("bp{}", &side[..1]);
    let net = TestNetwork::new(&tag, 1);
    let node = &net.nodes[0];
    let pods = Pods::new(node, &tag);
    let vip: IpAddr = probe_ip.parse()?;
    let (vip_id, vip_sink) = (SocketAddr::from((vip, 80)), SocketAddr::from((vip, 90)));
    move_probe(client, ns, side, SERVER_A).await?;
    let started = Instant::now();
    let mut proxy = Stopped(start_proxy(args, side, mode, node)?);
    let pid = proxy.0.id();
    let result = async {
        // Full sync: the probe answers (it is programmed with everything else).
        let full_sync = loop {
            if pods.who(vip_id, Duration::from_millis(20)) == Some(b'A') {
                break started.elapsed();
            }
            if let Some(status) = proxy.0.try_wait()? {
                bail!("the {side} proxy exited: {status}; /tmp/bench-proxy-{side}-{mode}.log");
            }
            if started.elapsed() > Duration::from_secs(args.full_sync_limit) {
                bail!(
                    "the {side} proxy did not program the probe in {} s (--full-sync-limit)",
                    args.full_sync_limit
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Let the start settle (kube-proxy syncs again after its first).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut changes = Vec::new();
        for (k, to) in [SERVER_B, SERVER_A, SERVER_B, SERVER_A, SERVER_B]
            .into_iter()
            .enumerate()
        {
            let want = if to == SERVER_A { b'A' } else { b'B' };
            move_probe(client, ns, side, to).await?;
            let t = Instant::now();
            loop {
                if pods.who(vip_id, Duration::from_millis(20)) == Some(want) {
                    changes.push(t.elapsed());
                    break;
                }
                if t.elapsed() > Duration::from_secs(120) {
                    bail!("change {k} of the {side} proxy not live in 120s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // Apart enough that each change is a sync of its own.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        changes.sort();
        // The probe now points at B. The polling for the full sync sent SYNs to the
        // ClusterIP before any rule existed: each left a conntrack entry without DNAT
        // (SYN_SENT, kept 120 s), and a later connection from the same client port
        // follows that entry instead of the rules, to no server (iptables: no route to
        // host; nftables: refused by the proxy's reject of unknown ClusterIP ports). They
        // are the benchmark's own, on both sides: counted and flushed.
        let stale_entries = flush_unnated_entries(node, vip)?;
        let connect_vip = pods.connect_times(vip_id, args.connections);
        let connect_direct =
            pods.connect_times(SocketAddr::from((SERVER_B, ID_PORT)), args.connections);
        let throughput_vip_mib_s = pods.throughput(vip_sink, args.bytes);
        let throughput_direct_mib_s =
            pods.throughput(SocketAddr::from((SERVER_B, SINK_PORT)), args.bytes);
        let stat = proc_stat(pid).unwrap_or_default();
        Ok(Figures {
            full_sync,
            change_live: changes[changes.len() / 2],
            cpu_seconds: stat.cpu_with_children(),
            peak_rss_mib: stat.hwm_mib,
            connect_vip,
            connect_direct,
            throughput_vip_mib_s,
            throughput_direct_mib_s,
            stale_entries,
        })
    }
    .await;
    drop(proxy);
    if side == "rekube" {
        let _ = Command::new(&args.rekube)
            .args(["cleanup", "--netns"])
            .arg(node.path())
            .output();
    }
    drop(pods);
    drop(net);
    result
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ratio(r: f64, u: f64) -> String {
    if u > 0.0 {
        format!("{:.2}×", r / u)
    } else {
        "-".into()
    }
}

fn print(scale: usize, mode: &str, figs: &BTreeMap<&str, Figures>) {
    println!("\n{scale} Services × endpoints, mode {mode}:");
    println!(
        "  {:<34} {:>14} {:>14} {:>8}",
        "", "kube-proxy", "rekube", "rekube/up"
    );
    let get = |s: &str| figs.get(s).cloned();
    let (u, r) = (get("upstream"), get("rekube"));
    let row = |name: &str, f: &dyn Fn(&Figures) -> (String, f64)| {
        let uu = u.as_ref().map(f);
        let rr = r.as_ref().map(f);
        println!(
            "  {:<34} {:>14} {:>14} {:>8}",
            name,
            uu.as_ref().map(|x| x.0.clone()).unwrap_or("-".into()),
            rr.as_ref().map(|x| x.0.clone()).unwrap_or("-".into()),
            match (&uu, &rr) {
                (Some(a), Some(b)) => ratio(b.1, a.1),
                _ => "-".into(),
            }
        );
    };
    row("start to full sync live", &|f| {
        (ms(f.full_sync), f.full_sync.as_secs_f64())
    });
    row("endpoint change to live (median)", &|f| {
        (ms(f.change_live), f.change_live.as_secs_f64())
    });
    row("proxy CPU (with its children)", &|f| {
        (format!("{:.2} s", f.cpu_seconds), f.cpu_seconds)
    });
    row("proxy peak RSS", &|f| {
        (format!("{:.1} MiB", f.peak_rss_mib), f.peak_rss_mib)
    });
    row("connect via ClusterIP (mean)", &|f| {
        (us(f.connect_vip.0), f.connect_vip.0.as_secs_f64())
    });
    row("connect via ClusterIP (p99)", &|f| {
        (us(f.connect_vip.1), f.connect_vip.1.as_secs_f64())
    });
    row("connect direct (mean)", &|f| {
        (us(f.connect_direct.0), f.connect_direct.0.as_secs_f64())
    });
    row("throughput via ClusterIP", &|f| {
        (
            format!("{:.0} MiB/s", f.throughput_vip_mib_s),
            f.throughput_vip_mib_s,
        )
    });
    row("throughput direct", &|f| {
        (
            format!("{:.0} MiB/s", f.throughput_direct_mib_s),
            f.throughput_direct_mib_s,
        )
    });
    for (side, f) in figs {
        println!(
            "  {side}: {} conntrack entries to the ClusterIP without DNAT (the full sync's polling) flushed before the data path",
            f.stale_entries
        );
        for (what, failed) in [
            ("ClusterIP", &f.connect_vip.2),
            ("direct", &f.connect_direct.2),
        ] {
            if !failed.is_empty() {
                println!(
                    "  {side}: {} failed connection attempts {what} (retried): {:?}",
                    failed.len(),
                    &failed[..failed.len().min(5)]
                );
            }
        }
        println!(
            "  {side}: ClusterIP connect overhead {:+.1}% over direct, throughput {:.1}% of direct",
            (f.connect_vip.0.as_secs_f64() / f.connect_direct.0.as_secs_f64() - 1.0) * 100.0,
            f.throughput_vip_mib_s / f.throughput_direct_mib_s * 100.0
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("bench-proxy needs root (network namespaces)");
    }
    let client = Client::try_default().await?;
    let sides: Vec<&str> = match args.only.as_str() {
        "both" => vec!["upstream", "rekube"],
        one => vec![one],
    };
    println!(
        "bench-proxy: kube-proxy {} vs {} proxy; modes {:?}; {} endpoints per Service; iptables backend {}",
        args.kube_proxy, args.rekube, args.modes, args.endpoints, args.iptables_backend
    );
    // kube-proxy waits (up to 30 s) for its Node to exist and have addresses: a core Node
    // object of that name with the node namespace's address (as a kubelet registers it),
    // no kubelet behind it (nothing schedules there: the benchmark creates no pods).
    let core_nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    if core_nodes.get_opt(NODE_NAME).await?.is_none() {
        core_nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NODE_NAME},
                    "status": {"addresses": [{"type": "InternalIP", "address": rekube_e2e::netns::NODE_SUBNET.replace(".0/24", ".1")}]}}))?,
            )
            .await?;
    }
    for &n in &args.services {
        let ns = format!("bench-proxy-{n}");
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        while namespaces.get_opt(&ns).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        let outcome = async {
            let probe_ip = create_objects(&client, &ns, n, args.endpoints).await?;
            for mode in &args.modes {
                let mut figs = BTreeMap::new();
                for side in &sides {
                    let f = run_side(&args, &client, &ns, &probe_ip, side, mode).await?;
                    figs.insert(*side, f);
                }
                print(n, mode, &figs);
            }
            anyhow::Ok(())
        }
        .await;
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        if let Err(e) = outcome {
            let _ = core_nodes.delete(NODE_NAME, &DeleteParams::default()).await;
            return Err(e);
        }
    }
    core_nodes
        .delete(NODE_NAME, &DeleteParams::default())
        .await?;
    Ok(())
}
