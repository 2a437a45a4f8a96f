//! The service proxy against the real apiserver and the real kernel (as root): a
//! `rekube-node-agent proxy --netns` process watches the cluster's rekube Services and
//! Endpoints and writes its nftables table, with the real `nft`, into a network namespace
//! the test creates (never the host's). Inside it, a veth pair carries the "node" address
//! 10.99.0.1 and the endpoint addresses 10.99.0.2 and .3, where listeners of the test
//! answer with their own name; clients in the same namespace reach them through the
//! Services' ClusterIPs (198.18.77.0/24, the benchmarking range nothing else uses).
//!
//! What is checked: a Service's VIP in the `service-ips` map within a second of its
//! creation, TCP through it (and through its NodePort) to the endpoint, the traffic following an Endpoints change
//! within a second, a UDP flow moved by the conntrack flush when its endpoint goes, a
//! Service without endpoints refusing at once, a deleted Service's element and chains
//! gone, a restarted proxy resyncing from scratch (a Service deleted while it was down
//! loses its rule), and `rekube-node-agent cleanup` removing rekube's table and nothing
//! else, twice.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rekube_crds::{Endpoints, Service};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

/// How soon a change must be in the kernel (issue 12).
const ONE_SECOND: Duration = Duration::from_secs(1);
/// The proxy's --proxy-min-sync-period here. A change waits at most this long after the
/// end of the previous sync (upstream's semantics), whatever else the proxy syncs
/// meanwhile (it watches every namespace, where earlier tests' objects may still be
/// going): with it, one second holds even then. With the default 1 s, a change right
/// after a sync would take 1 s plus the sync.
const MIN_SYNC_PERIOD: &str = "500ms";
/// Long enough for any earlier change to be synced.
const QUIET: Duration = Duration::from_millis(1300);
const NODE_PORT: i32 = 30080;

fn prerequisites() -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("the service proxy test needs root (network namespaces, nft)".to_string())
    } else {
        ["nft", "conntrack", "ip", "nsenter"].iter().find_map(|tool| {
            (Command::new(tool).arg("--version").output().is_err()).then(|| {
                format!("{tool} is not installed (e2e/scripts/bootstrap.sh installs nftables, conntrack, iproute2, util-linux)")
            })
        })
    };
    match why {
        Some(why) => {
            rekube_crds::testing::missing_prerequisite(&why);
            false
        }
        None => true,
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of the test (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn create(name: &str) -> Self {
        run(Command::new("ip").args(["netns", "add", name]));
        let ns = Netns {
            name: name.to_string(),
            path: PathBuf::from(format!("/run/netns/{name}")),
        };
        for args in [
            "link set lo up",
            "link add v0 type veth peer name v1",
            "addr add 10.99.0.1/24 dev v0",
            "addr add 10.99.0.2/24 dev v0",
            "addr add 10.99.0.3/24 dev v0",
            "link set v0 up",
            "link set v1 up",
            // The ClusterIPs are routed out of v0 (DNAT in the output hook then makes them
            // local): without a route, connect() fails before nftables sees the packet.
            "route add default dev v0",
        ] {
            run(Command::new("ip").args(["-n", name]).args(args.split(' ')));
        }
        ns
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay in it).
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("opening the netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }

    fn nft(&self, args: &str) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args.split(' '))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn service_ips(&self) -> String {
        self.nft("list map ip rekube-proxy service-ips")
            .unwrap_or_else(|e| e)
    }

    fn chains(&self) -> String {
        self.nft("list chains ip").unwrap_or_else(|e| e)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Listeners answering with their name, stopped on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    fn start(netns: &Netns) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (ip, name) in [("10.99.0.2", "a"), ("10.99.0.3", "b")] {
            let tcp: SocketAddr = format!("{ip}:8080").parse().unwrap();
            let udp: SocketAddr = format!("{ip}:5353").parse().unwrap();
            let (listener, socket) = netns.enter(move || {
                let l = TcpListener::bind(tcp).expect("tcp listener");
                l.set_nonblocking(true).unwrap();
                let s = UdpSocket::bind(udp).expect("udp socket");
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                (l, s)
            });
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.write_all(name.as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !s.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(name.as_bytes(), from);
                    }
                }
            }));
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP connection from 10.99.0.1 to `vip`: the answer, or the connect error.
fn tcp_get(netns: &Netns, vip: &str) -> std::io::Result<String> {
    let addr: SocketAddr = vip.parse().unwrap();
    netns.enter(move || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    })
}

/// `rekube-node-agent proxy --netns`, SIGTERMed on drop.
struct ProxyProcess {
    child: Child,
    log: PathBuf,
}

impl ProxyProcess {
    fn start(node: &str, netns: &Path, run: u32) -> Self {
        let log = std::env::temp_dir().join(format!("rekube-proxy-{node}-{run}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(rekube_e2e::agent::binary())
            .args(["proxy", "--node-name", node, "--node-ip", "10.99.0.1"])
            .arg("--proxy-min-sync-period")
            .arg(MIN_SYNC_PERIOD)
            .arg("--netns")
            .arg(netns)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("starting rekube-node-agent proxy (cargo build -p rekube-node-agent)");
        ProxyProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn service(name: &str, ip: &str, port: i32, target: i32, protocol: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": {
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{ "name": "p", "port": port, "targetPort": target, "protocol": protocol }],
        },
    }))
    .unwrap()
}

fn endpoints(name: &str, ip: &str, port: i32, protocol: &str) -> Endpoints {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1",
        "kind": "Endpoints",
        "metadata": { "name": name },
        "subsets": [{
            "addresses": [{ "ip": ip }],
            "ports": [{ "name": "p", "port": port, "protocol": protocol }],
        }],
    }))
    .unwrap()
}

/// Polls `check` every 20 ms until it holds; returns how long that took, failing after
/// `limit` with the last state.
fn within(what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) -> Duration {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return start.elapsed(),
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn service_proxy_applies_services_to_a_network_namespace() {
    if !prerequisites() {
        return;
    }
    let ns = TestNamespace::new("proxy").await;
    let netns = Arc::new(Netns::create(&ns.cluster_name("netns")));
    // A table that is not rekube's: cleanup must leave it.
    netns.nft("add table ip not-rekube").unwrap();
    let servers = Servers::start(&netns);
    let node = ns.cluster_name("node");
    let mut proxy = ProxyProcess::start(&node, &netns.path, 1);
    let services: Api<Service> = Api::namespaced(ns.client.clone(), &ns.name);
    let eps: Api<Endpoints> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();

    // The first (full) sync once the lists are in.
    {
        let n = Arc::clone(&netns);
        wait_until("the proxy's first sync", Duration::from_secs(60), || {
            let n = Arc::clone(&n);
            async move {
                n.nft("list table ip rekube-proxy")
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
    }

    // A Service and its Endpoints: the VIP within a second of the change completing it.
    eps.create(&pp, &endpoints("web", "10.99.0.2", 8080, "TCP"))
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;
    assert!(
        !netns.service_ips().contains("198.18.77.10"),
        "Endpoints without a Service make no rule"
    );
    let mut web = service("web", "198.18.77.10", 80, 8080, "TCP");
    {
        let spec = web.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(NODE_PORT);
    }
    services.create(&pp, &web).await.unwrap();
    let n = Arc::clone(&netns);
    let took = tokio::task::spawn_blocking(move || {
        within("the VIP in service-ips", ONE_SECOND, || {
            let map = n.service_ips();
            map.contains("198.18.77.10 . tcp . 80 : goto service-")
                .then_some(())
                .ok_or(map)
        })
    })
    .await
    .unwrap();
    eprintln!("Service created: its VIP in the kernel after {took:?}");
    assert_eq!(tcp_get(&netns, "198.18.77.10:80").unwrap(), "a");
    // Its NodePort on the node's IP (--node-ip, `primary`), not on loopback (as upstream's
    // nftables mode: no localhost NodePorts).
    assert_eq!(
        tcp_get(&netns, &format!("10.99.0.1:{NODE_PORT}")).unwrap(),
        "a"
    );
    let err = tcp_get(&netns, &format!("127.0.0.1:{NODE_PORT}")).expect_err("no NodePort on lo");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // The Endpoints move to .3: traffic follows within a second.
    eps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({ "subsets": [{
            "addresses": [{ "ip": "10.99.0.3" }],
            "ports": [{ "name": "p", "port": 8080, "protocol": "TCP" }],
        }]})),
    )
    .await
    .unwrap();
    let n = Arc::clone(&netns);
    let took = tokio::task::spawn_blocking(move || {
        within(
            "traffic to the new endpoint",
            ONE_SECOND,
            || match tcp_get(&n, "198.18.77.10:80") {
                Ok(s) if s == "b" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
    })
    .await
    .unwrap();
    eprintln!("Endpoints changed: traffic on the new endpoint after {took:?}");
    assert_eq!(
        tcp_get(&netns, &format!("10.99.0.1:{NODE_PORT}")).unwrap(),
        "b"
    );

    // A Service without endpoints refuses at once (reject, not a timeout).
    services
        .create(&pp, &service("empty", "198.18.77.11", 80, 8080, "TCP"))
        .await
        .unwrap();
    let n = Arc::clone(&netns);
    tokio::task::spawn_blocking(move || {
        within("the no-endpoint rule", ONE_SECOND, || {
            let map = n
                .nft("list map ip rekube-proxy no-endpoint-services")
                .unwrap_or_else(|e| e);
            map.contains("198.18.77.11 . tcp . 80")
                .then_some(())
                .ok_or(map)
        })
    })
    .await
    .unwrap();
    let start = Instant::now();
    let err = tcp_get(&netns, "198.18.77.11:80").expect_err("no endpoints: refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "refused at once"
    );

    // UDP: a flow to the Service keeps its conntrack entry while packets flow; when its
    // endpoint is removed the proxy deletes the entry, and the same flow reaches the new one.
    eps.create(&pp, &endpoints("dns", "10.99.0.2", 5353, "UDP"))
        .await
        .unwrap();
    services
        .create(&pp, &service("dns", "198.18.77.12", 53, 5353, "UDP"))
        .await
        .unwrap();
    // No packet before the rule: the flow's first packet decides its NAT.
    let n = Arc::clone(&netns);
    tokio::task::spawn_blocking(move || {
        within("the UDP VIP in service-ips", ONE_SECOND, || {
            let map = n.service_ips();
            map.contains("198.18.77.12 . udp . 53")
                .then_some(())
                .ok_or(map)
        })
    })
    .await
    .unwrap();
    let client = netns.enter(|| {
        let s = UdpSocket::bind("10.99.0.1:40053").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    });
    let client = Arc::new(client);
    let ask = {
        let c = Arc::clone(&client);
        move || -> Result<String, String> {
            c.send_to(b"?", "198.18.77.12:53")
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 16];
            let (n, _) = c.recv_from(&mut buf).map_err(|e| e.to_string())?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
    };
    let a = ask.clone();
    tokio::task::spawn_blocking(move || {
        within("UDP through the VIP", Duration::from_secs(5), || {
            (a()? == "a").then_some(()).ok_or("not a".to_string())
        })
    })
    .await
    .unwrap();
    let in_netns = run(Command::new("ip").args([
        "netns",
        "exec",
        &netns.name,
        "conntrack",
        "-L",
        "-p",
        "udp",
        "--orig-dst",
        "198.18.77.12",
    ]));
    assert!(in_netns.contains("src=10.99.0.2"), "{in_netns}");
    eps.patch(
        "dns",
        &PatchParams::default(),
        &Patch::Merge(json!({ "subsets": [{
            "addresses": [{ "ip": "10.99.0.3" }],
            "ports": [{ "name": "p", "port": 5353, "protocol": "UDP" }],
        }]})),
    )
    .await
    .unwrap();
    let a = ask.clone();
    let took = tokio::task::spawn_blocking(move || {
        within(
            "the UDP flow on the new endpoint",
            Duration::from_secs(2),
            || match a() {
                Ok(s) if s == "b" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
    })
    .await
    .unwrap();
    eprintln!("UDP endpoint replaced: the same flow on the new endpoint after {took:?}");

    // Deleting a Service removes its element at once; its chains are flushed then and
    // deleted by the first sync at least a second later (upstream's staleChains: kernels
    // before 6.2 see a dropped map reference late), here one for another change.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let n = Arc::clone(&netns);
    tokio::task::spawn_blocking(move || {
        within("the deleted Service's element gone", ONE_SECOND, || {
            let map = n.service_ips();
            (!map.contains("198.18.77.10")).then_some(()).ok_or(map)
        });
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    services
        .create(
            &PostParams::default(),
            &service("nudge", "198.18.77.30", 80, 8080, "TCP"),
        )
        .await
        .unwrap();
    let n = Arc::clone(&netns);
    let ns_name = ns.name.clone();
    tokio::task::spawn_blocking(move || {
        within(
            "the deleted Service's chains gone at the next sync",
            Duration::from_secs(2),
            || {
                let chains = n.chains();
                (!chains.contains(&format!("{ns_name}/web/tcp/p")))
                    .then_some(())
                    .ok_or(chains)
            },
        );
    })
    .await
    .unwrap();
    assert!(
        netns.chains().contains("/dns/udp/p"),
        "the other Services' chains stay"
    );

    // A restarted proxy resyncs from scratch over the table the last one left: a Service
    // deleted while no proxy ran loses its rule, the others keep working.
    proxy.stop();
    let log = proxy.log();
    assert!(!log.contains("ERROR"), "proxy log:\n{log}");
    services
        .delete("empty", &DeleteParams::default())
        .await
        .unwrap();
    let mut proxy = ProxyProcess::start(&node, &netns.path, 2);
    let n = Arc::clone(&netns);
    let a = ask.clone();
    tokio::task::spawn_blocking(move || {
        within(
            "the restarted proxy's first sync",
            Duration::from_secs(30),
            || {
                let map = n
                    .nft("list map ip rekube-proxy no-endpoint-services")
                    .unwrap_or_else(|e| e);
                (!map.contains("198.18.77.11")).then_some(()).ok_or(map)
            },
        );
        assert_eq!(a().unwrap(), "b", "the UDP Service after the restart");
    })
    .await
    .unwrap();

    // cleanup: rekube's tables go, the other table stays; twice (idempotent).
    proxy.stop();
    let log = proxy.log();
    assert!(!log.contains("ERROR"), "proxy log:\n{log}");
    for _ in 0..2 {
        let out = Command::new(rekube_e2e::agent::binary())
            .args(["cleanup", "--netns"])
            .arg(&netns.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "cleanup: {out:?}");
        let tables = netns.nft("list tables").unwrap();
        assert_eq!(tables.trim(), "table ip not-rekube", "after cleanup");
    }
    drop(servers);
}
