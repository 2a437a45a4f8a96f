//! The CNI runtime with the reference plugins (bridge, host-local, loopback from
//! containernetworking/plugins, built by `e2e/scripts/build-kubernetes.sh cni-plugins`),
//! as root on the real kernel. Everything happens in two network namespaces the test
//! makes: a "host" one (the test's thread joins it, so the plugins it runs make their
//! bridge and veth ends there, never in the machine's own) and a "pod" one. The test
//! checks ADD (an address from host-local on eth0 in the pod, the bridge and a veth on
//! the host side), CHECK, STATUS, DEL after a "restart" (a new runtime, the config from
//! the cache), a failed ADD undone, GC releasing a forgotten address, and after each that
//! nothing is left: no veth, no IPAM reservation, no cache entry.
use std::path::{Path, PathBuf};
use std::process::Command;

use rekube_node_agent::cni::config::parse;
use rekube_node_agent::cni::runtime::pod_args;
use rekube_node_agent::cni::{CniRuntime, RealExec, RuntimeConf};

/// The plugins' directory (REKUBE_CNI_BIN_DIR, or the one build-kubernetes.sh fills).
fn bin_dir() -> PathBuf {
    rekube_crds::testing::cni_bin_dir()
}

fn ip(args: &[&str]) -> String {
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

/// A named network namespace of the test (`ip netns add`), deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }

    /// `ip -n <ns> -o <args>`.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0, "-o"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The names of its links.
    fn links(&self) -> Vec<String> {
        self.ip(&["link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The IPAM reservations host-local keeps (one file per address) under `data_dir`.
fn reservations(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(data_dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

fn prerequisites() -> bool {
    if !nix::unistd::geteuid().is_root() {
        rekube_crds::testing::missing_prerequisite("the cni tests need root (network namespaces)");
        return false;
    }
    if !bin_dir().join("bridge").is_file() {
        rekube_crds::testing::missing_prerequisite(&format!(
            "no cni plugins in {} (e2e/scripts/build-kubernetes.sh cni-plugins builds them; or set REKUBE_CNI_BIN_DIR)",
            bin_dir().display()
        ));
        return false;
    }
    true
}

#[test]
fn the_reference_plugins_add_check_and_delete_a_pod_network_leaving_nothing() {
    if !prerequisites() {
        return;
    }
    // Its own thread: it joins the "host" namespace, and the plugins it runs inherit it.
    std::thread::spawn(run).join().unwrap();
}

fn run() {
    let id = std::process::id();
    let host = Netns::new(format!("rekube-cni-host-{id}"));
    let pod = Netns::new(format!("rekube-cni-pod-{id}"));
    let ns_file = std::fs::File::open(host.path()).unwrap();
    nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("ipam");
    let bridge = format!("rkc{}", id % 100_000);
    let conflist = format!(
        r#"{{"cniVersion": "1.1.0", "name": "rekube-test", "plugins": [
            {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
              "hairpinMode": true,
              "ipam": {{"type": "host-local", "dataDir": "{}",
                        "ranges": [[{{"subnet": "10.250.7.0/24"}}]],
                        "routes": [{{"dst": "0.0.0.0/0"}}]}}}}]}}"#,
        data_dir.display()
    );
    let list = parse("test.conflist", conflist.as_bytes(), true).unwrap();
    let cache = dir.path().join("cache");
    let runtime = CniRuntime::new(vec![bin_dir()], &cache, RealExec);
    let rt = RuntimeConf {
        container_id: "c1".into(),
        netns: pod.path(),
        if_name: "eth0".into(),
        args: pod_args("ns", "p", "c1", "uid-1"),
        ..Default::default()
    };

    runtime.get_status_of_network_list(&list).unwrap();

    // ADD: eth0 in the pod with the address host-local reserved; a veth to the bridge.
    let result = runtime.add_network_list(&list, &rt).unwrap();
    let address = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("10.250.7."), "{result}");
    let pod_addrs = pod.ip(&["addr", "show", "dev", "eth0"]);
    assert!(pod_addrs.contains(&address), "{pod_addrs}");
    assert_eq!(
        reservations(&data_dir),
        [address.split('/').next().unwrap()]
    );
    let host_links = host.links();
    assert!(host_links.contains(&bridge), "{host_links:?}");
    assert!(
        host_links.iter().any(|l| l.starts_with("veth")),
        "{host_links:?}"
    );
    assert!(
        pod.ip(&["route", "show"])
            .contains("default via 10.250.7.1")
    );
    runtime.check_network_list(&list, &rt).unwrap();

    // DEL from a runtime that starts afresh, with the config its ADD cached.
    let restarted = CniRuntime::new(vec![bin_dir()], &cache, RealExec);
    let cached = restarted
        .cached_config("rekube-test", "c1", "eth0")
        .unwrap();
    restarted.del_network_list(&cached, &rt).unwrap();
    assert!(
        !pod.links().contains(&"eth0".to_string()),
        "{:?}",
        pod.links()
    );
    assert!(
        !host.links().iter().any(|l| l.starts_with("veth")),
        "{:?}",
        host.links()
    );
    assert!(
        reservations(&data_dir).is_empty(),
        "{:?}",
        reservations(&data_dir)
    );
    assert!(restarted.cached_result(&list, &rt).is_none());
    // A second DEL is fine (the spec: DEL must tolerate what is already gone).
    restarted.del_network_list(&list, &rt).unwrap();

    // A failed ADD (the list's second plugin does not exist) is undone.
    let broken = parse(
        "broken.conflist",
        conflist
            .replace(
                r#""routes": [{"dst": "0.0.0.0/0"}]}}]}"#,
                r#""routes": [{"dst": "0.0.0.0/0"}]}}, {"type": "no-such-plugin"}]}"#,
            )
            .as_bytes(),
        true,
    )
    .unwrap();
    assert_eq!(broken.plugins.len(), 2);
    let err = runtime
        .add_network_list(&broken, &rt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"no-such-plugin\" not found"), "{err}");
    assert!(
        !pod.links().contains(&"eth0".to_string()),
        "{:?}",
        pod.links()
    );
    assert!(
        !host.links().iter().any(|l| l.starts_with("veth")),
        "{:?}",
        host.links()
    );
    assert!(
        reservations(&data_dir).is_empty(),
        "{:?}",
        reservations(&data_dir)
    );
    assert!(runtime.cached_result(&broken, &rt).is_none());

    // GC: an attachment the runtime no longer knows (its pod gone with its namespace, its
    // DEL never came) has its address released (the runtime DELs it: the bridge plugin
    // implements no GC) and its cache entry forgotten.
    let gone = Netns::new(format!("rekube-cni-gone-{id}"));
    let mut rt_gone = rt.clone();
    rt_gone.container_id = "c2".into();
    rt_gone.netns = gone.path();
    runtime.add_network_list(&list, &rt_gone).unwrap();
    assert_eq!(reservations(&data_dir).len(), 1);
    drop(gone);
    runtime.gc_network_list(&list, &[]).unwrap();
    assert!(
        reservations(&data_dir).is_empty(),
        "{:?}",
        reservations(&data_dir)
    );
    assert!(runtime.cached_result(&list, &rt_gone).is_none());
    // The host end of its veth goes with its namespace, which the kernel tears down in
    // the background after the last reference is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.links().iter().any(|l| l.starts_with("veth")) {
        assert!(
            std::time::Instant::now() < deadline,
            "a veth outlived its namespace: {:?}",
            host.links()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
