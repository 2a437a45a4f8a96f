//! Several nodes on one machine: each "host" is a network namespace the test creates,
//! joined by a veth to a bridge in another namespace of the test's (the switch, with no
//! uplink), with an address of [`NODE_SUBNET`] that the test assigns. Nothing is routed
//! off the machine, and the machine's own namespace is never touched: a node agent run
//! in one of these namespaces makes its bridges, veths, routes and rules there.
//!
//! The apiserver stays on the host's loopback. Inside each node namespace a forwarder
//! listens on 127.0.0.1 at the apiserver's port (so the test's kubeconfig works
//! unchanged) and connects each connection to the apiserver from the test process's
//! own namespace (a socket belongs to the namespace it was made in: the listener is
//! made on a thread that joined the node's namespace, the upstream connections on
//! threads that did not).
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The switch's subnet; node `i` is `.{i + 1}`.
pub const NODE_SUBNET: &str = "172.31.250.0/24";

/// `ip <args>`, panicking with its stderr.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node of a [`TestNetwork`].
pub struct NodeNetns {
    /// The namespace's name (`ip netns`).
    pub name: String,
    /// Its address on the switch (the Node's InternalIP).
    pub address: Ipv4Addr,
}

impl NodeNetns {
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The names of its links.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Its routes (`ip route show`), one per line.
    pub fn routes(&self) -> Vec<String> {
        self.ip(&["route", "show"])
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// An HTTP/1.0 GET of `http://addr/` made from inside the namespace (as a process on
    /// that node would): the response body, or why there is none. A connection refused
    /// comes back at once as an error, a timeout after `timeout`.
    pub fn http_get(&self, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
        self.http_get_path(addr, "/", timeout)
    }

    /// [`Self::http_get`] of `path`.
    pub fn http_get_path(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        match self.http_request(addr, path, timeout)? {
            (200, _, body) => Ok(body),
            (status, head, body) => Err(format!("{addr} answered {status}: {head}\r\n\r\n{body}")),
        }
    }

    /// An HTTP/1.0 GET of `path` on `addr` from inside the namespace, whatever its status:
    /// the status, the head (status line and headers) and the body.
    pub fn http_request(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String, String), String> {
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        in_netns(self.path(), move || {
            use std::io::{Read, Write};
            let mut s = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_read_timeout(Some(timeout)).unwrap();
            s.write_all(request.as_bytes())
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let mut out = String::new();
            s.read_to_string(&mut out)
                .map_err(|e| format!("read from {addr}: {e}"))?;
            let (head, body) = out
                .split_once("\r\n\r\n")
                .ok_or_else(|| format!("{addr} answered {out:?}"))?;
            let status = head
                .strip_prefix("HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| format!("{addr} answered {out:?}"))?;
            Ok((status, head.to_string(), body.to_string()))
        })
    }

    /// A UDP socket bound to an ephemeral port inside the namespace (a socket stays in
    /// the namespace it was made in): what a process on that node sends from.
    pub fn udp_socket(&self) -> std::net::UdpSocket {
        in_netns(self.path(), || {
            std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("a UDP socket")
        })
    }

    /// `nft list ruleset` in the namespace.
    pub fn nft_ruleset(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list", "ruleset"])
            .output()
            .expect("nft");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A forwarder's state: stop flag and the connections to shut on drop.
#[derive(Default)]
struct Forwarders {
    stop: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
}

/// The switch and its nodes; everything is deleted on drop.
pub struct TestNetwork {
    pub switch: String,
    pub nodes: Vec<NodeNetns>,
    forwarders: Arc<Forwarders>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The reference CNI plugins (see [`rekube_crds::testing::cni_bin_dir`]).
pub fn cni_bin_dir() -> PathBuf {
    rekube_crds::testing::cni_bin_dir()
}

/// The apiserver's address in the test's kubeconfig (it must be on loopback).
fn apiserver_addr() -> SocketAddr {
    let config = kube::config::Kubeconfig::read().expect("the test's kubeconfig");
    let context = config
        .current_context
        .as_ref()
        .and_then(|c| config.contexts.iter().find(|n| &n.name == c))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let server = config
        .clusters
        .iter()
        .find(|c| c.name == context)
        .or(config.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    let hostport = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr: SocketAddr = hostport
        .parse()
        .unwrap_or_else(|e| panic!("the apiserver {server:?} is not an ip:port: {e}"));
    assert!(
        addr.ip().is_loopback(),
        "the multi-node harness needs the apiserver on loopback, not {server}"
    );
    addr
}

/// `command` made to run inside the network namespace at `path`: it joins it between
/// fork and exec (its mounts, cgroups and processes stay the machine's). The returned
/// file must stay open until the command is spawned.
pub fn enter_on_spawn(command: &mut Command, path: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fd = file.as_raw_fd();
    // SAFETY: setns is a plain system call, safe between fork and exec; the file behind
    // `fd` is open until the caller has spawned.
    unsafe {
        command.pre_exec(move || {
            let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
    file
}

/// Runs `f` on a new thread inside the namespace at `path`.
pub fn in_netns<T: Send + 'static>(path: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
        f()
    })
    .join()
    .unwrap()
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

impl TestNetwork {
    /// Whether the machine can make one: root and iproute2.
    pub fn prerequisites() -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("network namespaces need root".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("ip (iproute2) is missing".into());
        }
        Ok(())
    }

    /// Whether real node agents can run on it: [`Self::prerequisites`], containers
    /// ([`crate::agent::AgentProcess::can_run_containers`]), the reference CNI plugins
    /// and `nft` (the agents' masquerade table and proxy, and the tests' reading of them).
    pub fn agent_prerequisites() -> Result<(), String> {
        Self::prerequisites()?;
        crate::agent::AgentProcess::can_run_containers()?;
        if !cni_bin_dir().join("bridge").is_file() {
            return Err(format!(
                "no cni plugins in {} (e2e/scripts/build-kubernetes.sh cni-plugins builds them; or set REKUBE_CNI_BIN_DIR)",
                cni_bin_dir().display()
            ));
        }
        Command::new("nft")
            .arg("--version")
            .output()
            .map(drop)
            .map_err(|_| "nft (Debian's nftables) is missing".to_string())
    }

    /// A switch and `nodes` node namespaces named after `tag` (short: interface names
    /// are at most 15 bytes), each with the apiserver forwarded into it.
    pub fn new(tag: &str, nodes: usize) -> Self {
        let switch = format!("rk-{tag}-sw");
        let _ = Command::new("ip").args(["netns", "del", &switch]).output();
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let base: ipnet::Ipv4Net = NODE_SUBNET.parse().unwrap();
        let mut net = TestNetwork {
            switch: switch.clone(),
            nodes: Vec::new(),
            forwarders: Arc::new(Forwarders::default()),
            threads: Vec::new(),
        };
        for i in 0..nodes {
            let name = format!("rk-{tag}-n{i}");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&["netns", "add", &name]);
            let port = format!("p{i}");
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &name,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            let address = base.hosts().nth(i).unwrap();
            let node = NodeNetns { name, address };
            node.ip(&["link", "set", "lo", "up"]);
            node.ip(&[
                "addr",
                "add",
                &format!("{address}/{}", base.prefix_len()),
                "dev",
                "eth0",
            ]);
            node.ip(&["link", "set", "eth0", "up"]);
            // A node's default route (kube-proxy needs one: a node's own connection to a
            // ClusterIP is routed before it is DNAT-ed). It leads onto the switch, where
            // whatever nothing answers ends: there is no uplink.
            node.ip(&["route", "add", "default", "dev", "eth0"]);
            net.nodes.push(node);
        }
        let upstream = apiserver_addr();
        for i in 0..nodes {
            let path = net.nodes[i].path();
            let listener = in_netns(path, move || {
                TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, upstream.port())))
            })
            .expect("the apiserver forwarder's listener");
            listener.set_nonblocking(true).unwrap();
            let state = Arc::clone(&net.forwarders);
            net.threads.push(std::thread::spawn(move || {
                while !state.stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        Err(_) => break,
                    };
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let mut streams = state.streams.lock().unwrap();
                    streams.push(client.try_clone().unwrap());
                    streams.push(server.try_clone().unwrap());
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || pump(client, server));
                    std::thread::spawn(move || pump(s2, c2));
                }
            }));
        }
        net
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.forwarders.stop.store(true, Ordering::SeqCst);
        for s in self.forwarders.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for n in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &n.name]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .output();
    }
}
