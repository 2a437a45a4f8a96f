//! Running rekube-node-agent for a test: `run` with a node name, labels and lease
//! namespace scoped to the test, its state under a temporary directory, killed on drop
//! and what it left swept ([`crate::sweep`]).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use crate::TestNamespace;
use crate::sweep::{self, CGROUP_ROOT};

/// The rekube-node-agent binary: REKUBE_NODE_AGENT_BIN, or the one built beside the test.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("REKUBE_NODE_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target folder")
        .join("rekube-node-agent")
}

pub struct AgentProcess {
    child: Option<Child>,
    pub node_name: String,
    pub root: PathBuf,
    pub log: PathBuf,
    /// `run` and its flags, and the environment, for [`Self::restart`].
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The network namespace it runs in (a node of [`crate::netns::TestNetwork`]).
    netns: Option<PathBuf>,
}

impl AgentProcess {
    /// Starts `rekube-node-agent run` as node `short` of the test (named by
    /// [`TestNamespace::cluster_name`], labelled for the test's `--node-selector`), with
    /// its Lease in the test namespace.
    pub fn start(ns: &TestNamespace, short: &str, extra: &[&str]) -> Self {
        Self::start_with_env(ns, short, extra, &[])
    }

    /// [`Self::start`] with more environment variables (e.g. another `KUBECONFIG`).
    pub fn start_with_env(
        ns: &TestNamespace,
        short: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_in(ns, short, extra, env, None)
    }

    fn start_in(
        ns: &TestNamespace,
        short: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        netns: Option<PathBuf>,
    ) -> Self {
        let node_name = ns.cluster_name(short);
        let root = Self::root_of(&node_name);
        let log = std::env::temp_dir().join(format!("rekube-agent-{node_name}.log"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--node-name".into(),
            node_name.clone(),
            "--node-labels".into(),
            format!("{}={}", crate::nodes::SCOPE_LABEL, ns.name),
            "--node-lease-namespace".into(),
            ns.name.clone(),
            "--root-dir".into(),
            root.to_string_lossy().into_owned(),
        ];
        // The agents' root is the machine's shared disk, filled by whatever else runs
        // there (build folders): at upstream's nodefs.available<10% a busy developer
        // machine puts every test node under DiskPressure and its NoSchedule taint. No
        // test is about the host's disk; a test may still pass its own --eviction-hard.
        if !extra.iter().any(|a| a.starts_with("--eviction-hard")) {
            args.push("--eviction-hard".into());
            args.push("memory.available<100Mi,nodefs.available<1%".into());
        }
        // Agents on the test machine's own network namespace must not make bridges,
        // veths, routes or rules there: no CNI and no service proxy, unless the agent runs
        // in a namespace of the test's own ([`crate::netns`]). Hollow agents never run
        // either.
        if netns.is_none() {
            if !extra.iter().any(|a| a.starts_with("--pod-network")) {
                args.push("--pod-network".into());
                args.push("loopback".into());
            }
            if !extra.contains(&"--hollow") && !extra.iter().any(|a| a.starts_with("--proxy-mode"))
            {
                args.push("--proxy-mode".into());
                args.push("none".into());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        std::fs::File::create(&log).unwrap();
        let mut agent = AgentProcess {
            child: None,
            node_name,
            root,
            log,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns,
        };
        hold_root(&agent.root);
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p rekube-node-agent`",
            bin.display()
        );
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(&bin);
        // Joined between fork and exec; the file stays open until then.
        let _netns_file = self
            .netns
            .as_ref()
            .map(|p| crate::netns::enter_on_spawn(&mut command, p));
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// A hollow agent (`--hollow`, upstream's kubemark: the pods' containers are simulated,
    /// their status, finalizer and termination real) as node `short` of the test, returned
    /// once its Node is Ready, so that a scheduler of the test has a node to bind to.
    pub async fn start_hollow_ready(ns: &TestNamespace, short: &str) -> Self {
        let agent = Self::start(ns, short, &["--hollow"]);
        agent
            .wait_node_ready(&ns.client, std::time::Duration::from_secs(90))
            .await;
        agent
    }

    /// Waits until the agent's Node reports Ready; panics with the agent's log after
    /// `timeout`.
    pub async fn wait_node_ready(&self, client: &kube::Client, timeout: std::time::Duration) {
        let nodes: kube::Api<rekube_crds::Node> = kube::Api::all(client.clone());
        crate::wait_until(
            &format!("node {} ready", self.node_name),
            timeout,
            || async {
                let node = nodes
                    .get_opt(&self.node_name)
                    .await
                    .map_err(|e| e.to_string())?;
                match node.as_ref().and_then(crate::nodes::ready_status) {
                    Some(s) if s == "True" => Ok(()),
                    other => Err(format!("Ready {other:?}\n{}", self.logs())),
                }
            },
        )
        .await
    }

    /// SIGTERM, then the same agent (node, directories, flags) started again.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// SIGKILL (nothing cleaned up, as a crash), then the same agent again.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The same agent started again after [`Self::kill`] (so that a test can change the
    /// API while the node is down).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the agent still runs");
        self.spawn();
    }

    /// Whether this machine can run real containers for a test: root (the agent makes
    /// namespaces, mounts and cgroups) and Debian's busybox-static for the image.
    pub fn can_run_containers() -> Result<(), String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .unwrap_or_default();
        if uid != "0" {
            return Err("the agent runs containers only as root".into());
        }
        if !std::path::Path::new("/bin/busybox").exists() {
            return Err("/bin/busybox (Debian's busybox-static) is missing".into());
        }
        Ok(())
    }

    /// Starts a real agent (containers, not hollow) as node `short`: a busybox:1.36 image
    /// built from busybox-static is imported into its store first (what `kind load`
    /// does), and its run directory, cgroup parent and pod logs are its own, so
    /// [`Self::leftovers`] can check that nothing of its containers remains.
    pub fn start_real(ns: &TestNamespace, short: &str, extra: &[&str]) -> Self {
        Self::start_real_with_env(ns, short, extra, &[])
    }

    /// [`Self::start_real`] with more environment variables.
    pub fn start_real_with_env(
        ns: &TestNamespace,
        short: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_real_in(ns, short, extra, env, None)
    }

    /// A real agent as node `node` of a [`crate::netns::TestNetwork`]: it runs in that
    /// node's network namespace with the cni pod network (the reference plugins of
    /// [`crate::netns::cni_bin_dir`], its conf dir and cache its own and empty, so that
    /// it installs its default network), the node's switch address as its InternalIP.
    pub fn start_real_on(
        ns: &TestNamespace,
        short: &str,
        node: &crate::netns::NodeNetns,
        extra: &[&str],
    ) -> Self {
        let root = Self::root_of(&ns.cluster_name(short));
        let flags = cni_node_flags(&root, node, &crate::netns::cni_bin_dir());
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Self::start_real_in(ns, short, &args, &[], Some(node.path()))
    }

    fn start_real_in(
        ns: &TestNamespace,
        short: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        netns: Option<PathBuf>,
    ) -> Self {
        let node_name = ns.cluster_name(short);
        let root = Self::root_of(&node_name);
        std::fs::create_dir_all(&root).unwrap();
        let archive = root.join("busybox.tar");
        build_busybox_image(&archive).unwrap();
        import_image(&binary(), &archive, &root).unwrap();
        let _ = std::fs::remove_file(&archive);
        let flags = real_agent_flags(&root, &Self::cgroup_parent_of(&node_name));
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Self::start_in(ns, short, &args, env, netns)
    }

    /// Imports the image `archive` into the running agent's store (`kind load`).
    pub fn import_image(&self, archive: &Path) -> Result<(), String> {
        import_image(&binary(), archive, &self.root)
    }

    /// The agent's --root-dir (and, for a real agent, its run and log directories).
    fn root_of(node_name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{AGENT_ROOT_PREFIX}{node_name}"))
    }

    fn cgroup_parent_of(node_name: &str) -> String {
        format!("rekube-e2e-{node_name}")
    }

    /// The CRI log of a container instance (`<pod log dir>/<ns>_<pod>_<uid>/<c>/<n>.log`).
    pub fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        restart: u32,
    ) -> String {
        std::fs::read_to_string(self.container_log_path(namespace, pod, uid, container, restart))
            .unwrap_or_default()
    }

    /// The log file, opened (readable after the agent removed it with the pod).
    pub fn open_container_log(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        restart: u32,
    ) -> std::fs::File {
        let path = self.container_log_path(namespace, pod, uid, container, restart);
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    }

    /// The pod's log directory (`<pod log dir>/<ns>_<pod>_<uid>`).
    pub fn pod_log_dir(&self, namespace: &str, pod: &str, uid: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{namespace}_{pod}_{uid}"))
    }

    fn container_log_path(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        restart: u32,
    ) -> PathBuf {
        self.pod_log_dir(namespace, pod, uid)
            .join(container)
            .join(format!("{restart}.log"))
    }

    /// Waits up to `timeout` until [`Self::leftovers`] is empty (exit watchers and unmounts
    /// finish asynchronously after a pod object goes), and panics with what is left.
    pub async fn wait_no_leftovers(&self, timeout: std::time::Duration) {
        crate::wait_until("no leftovers", timeout, || async {
            let left = self.leftovers();
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join("\n"))
            }
        })
        .await;
    }

    /// What is left of a real agent's pods ([`AgentFootprint::leftovers`]). Empty when
    /// clean. The root directory's own mount, the agent's rshared bind of it (the
    /// kubelet's `MakeRShared`), is the agent's, not a pod's: it stays until [`Drop`]
    /// unmounts it.
    pub fn leftovers(&self) -> Vec<String> {
        self.footprint().leftovers()
    }

    /// Where the agent's pods leave their traces, to check after the agent is gone.
    pub fn footprint(&self) -> AgentFootprint {
        AgentFootprint {
            root: self.root.clone(),
            cgroup_parent: Self::cgroup_parent_of(&self.node_name),
        }
    }

    /// The processes of a running container of `pod` (its cgroup under the agent's
    /// cgroup parent: `pod<uid>/<container ID>`), its own process first.
    pub fn container_pids(&self, pod: &rekube_crds::Pod, container: &str) -> Vec<u32> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(id) = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|l| l.iter().find(|c| c.name == container))
            .and_then(|c| c.container_id.clone())
        else {
            return Vec::new();
        };
        let id = id.trim_start_matches("rekube://");
        let cgroup = format!("{}/pod{uid}/{id}", Self::cgroup_parent_of(&self.node_name));
        sweep::cgroup_dirs(Path::new(CGROUP_ROOT), &cgroup)
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// `kubectl exec POD -c CONTAINER -- sh -c CMD` (the e2e framework's
    /// `ExecShellInPodWithFullOutput`): `sh -c cmd` in the running container's mount,
    /// UTS, IPC, network and PID namespaces and its root, through nsenter (rekube's
    /// Pods have no exec subresource). Its stdout and stderr trimmed, and whether it
    /// exited 0.
    pub fn exec_shell(
        &self,
        pod: &rekube_crds::Pod,
        container: &str,
        cmd: &str,
    ) -> (String, String, bool) {
        let pids = self.container_pids(pod, container);
        let Some(pid) = pids.first() else {
            return (
                String::new(),
                format!(
                    "no process of container {container} of pod {:?}",
                    pod.metadata.name
                ),
                false,
            );
        };
        let out = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "-r",
                "-w",
            ])
            .args(["sh", "-c", cmd])
            .output()
            .unwrap_or_else(|e| panic!("running nsenter: {e}"));
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
            out.status.success(),
        )
    }

    /// The agent's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A real agent's --cgroup-parent.
    pub fn cgroup_parent(&self) -> String {
        Self::cgroup_parent_of(&self.node_name)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the node goes silent, as a crashed or unplugged machine.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        terminate_child(&mut c, std::time::Duration::from_secs(10))
    }
}

impl AgentProcess {
    /// The value of `flag` the agent was started with (the last, as clap takes it).
    fn flag(&self, flag: &str) -> Option<&str> {
        let mut value = None;
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == flag {
                value = args.next().map(String::as_str);
            } else if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                value = Some(v);
            }
        }
        value
    }

    /// Removes what the (killed) agent left on the machine, as its own start-up recovery
    /// would and then some, and only what is its own: the processes in the cgroups under
    /// its `--cgroup-parent` (its containers, found there and not by name) killed and
    /// those cgroups removed; everything mounted under its root directory (pod volumes,
    /// CSI staging and publish mounts, the namespace files of its pods' network, UTS and
    /// IPC namespaces, their `/dev/shm`, overlays over its image store, its rshared bind
    /// of the root) unmounted, deepest first, lazily if busy; the loop devices whose
    /// backing file lies under it or that those mounts were of detached; the directory
    /// removed. Its run and pod log directories are under the root unless a test named
    /// others with the flags; then they are swept too. A hollow agent names no cgroup
    /// parent and mounts nothing: its directory is removed. Network: an agent outside a
    /// test's network namespace runs with `--pod-network loopback` and `--proxy-mode none`
    /// ([`Self::start`]), so its only network state is its pods' namespaces (unmounted
    /// here, gone with their last process); one in a namespace of
    /// [`crate::netns::TestNetwork`] keeps its bridge, veths, routes and nftables rules
    /// there, removed with that namespace.
    fn sweep(&self) {
        let who = format!("sweep of agent {}", self.node_name);
        // The processes first, so that nothing holds the mounts.
        if let Some(parent) = self.flag("--cgroup-parent") {
            sweep::remove_cgroups(parent, &who);
        }
        for flag in ["--run-dir", "--pod-log-dir"] {
            if let Some(dir) = self.flag(flag).map(Path::new)
                && !dir.starts_with(&self.root)
            {
                sweep::sweep_dir(dir, &who);
            }
        }
        sweep::sweep_dir(&self.root, &who);
    }
}

impl Drop for AgentProcess {
    /// Kills the agent (SIGKILL); then, when it is the last [`AgentProcess`] on its root
    /// directory, sweeps what it left ([`Self::sweep`]: only its root's bind and directory
    /// when its pods were cleaned up; their containers, cgroups, mounts and loop devices
    /// too when the test failed or killed it with pods running) and deletes its Node. [`Self::kill`], [`Self::restart`] and [`Self::kill_and_restart`] sweep
    /// nothing: a test restarting the agent on the same root checks what the new process
    /// recovers.
    fn drop(&mut self) {
        self.kill();
        if !release_root(&self.root) {
            return;
        }
        self.sweep();
        // The Node is not the test's object: delete it here (its Lease goes with it).
        // The pods still bound to it keep the dead agent's finalizer, which would hold
        // them, and the test namespace, for ever: release them first.
        let name = self.node_name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = crate::client().await;
                release_pods(&client, &name).await;
                let _ = kube::Api::<rekube_crds::Node>::all(client)
                    .delete(&name, &Default::default())
                    .await;
            });
        })
        .join();
    }
}

/// Takes the node agent's finalizer off the pods bound to `node` (after its agent is gone),
/// with the resourceVersion as precondition; a pod that changed meanwhile is skipped.
async fn release_pods(client: &kube::Client, node: &str) {
    let pods: kube::Api<rekube_crds::Pod> = kube::Api::all(client.clone());
    let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={node}"));
    let Ok(list) = pods.list(&lp).await else {
        return;
    };
    for pod in list.items {
        let finalizers: Vec<&String> = pod
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| f.as_str() != rekube_crds::NODE_AGENT_FINALIZER)
            .collect();
        if finalizers.len() == pod.metadata.finalizers.as_ref().map_or(0, Vec::len) {
            continue;
        }
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": pod.metadata.resource_version,
            "finalizers": finalizers,
        }});
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = kube::Api::<rekube_crds::Pod>::namespaced(client.clone(), &ns)
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
    }
}

/// The live [`AgentProcess`]es of this test process on each root directory: what an
/// agent left is swept when the last one on its root goes.
static LIVE_ROOTS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

fn hold_root(root: &Path) {
    let mut live = LIVE_ROOTS.lock().unwrap_or_else(PoisonError::into_inner);
    *live.entry(root.to_path_buf()).or_default() += 1;
}

/// Whether the caller was the last live [`AgentProcess`] on `root`.
fn release_root(root: &Path) -> bool {
    let mut live = LIVE_ROOTS.lock().unwrap_or_else(PoisonError::into_inner);
    match live.get_mut(root) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => {
            live.remove(root);
            true
        }
    }
}

/// Where a real agent's pods leave their traces on the machine: its root directory (with
/// its run and pod log directories, [`real_agent_flags`]) and its cgroup parent. It
/// outlives the [`AgentProcess`], so that a test can check what a dropped agent left.
#[derive(Debug, Clone)]
pub struct AgentFootprint {
    pub root: PathBuf,
    pub cgroup_parent: String,
}

impl AgentFootprint {
    /// What is left of the agent's pods: pod directories (volumes) under `<root>/pods`,
    /// mounts under the root (and overlays over its image store, wherever mounted), loop
    /// devices backed by files under it, cgroups under the cgroup parent and processes in
    /// it. The root directory's own mount, an agent's rshared bind of it, is the agent's
    /// and not counted. Empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(format!("pod directory: {}", entry.path().display()));
        }
        for m in sweep::mount_table() {
            if sweep::belongs_to(&m, &self.root) && m.mount_point != self.root {
                out.push(format!(
                    "mount: {} {} {}",
                    m.mount_point.display(),
                    m.fs_type,
                    m.source
                ));
            }
        }
        for (device, backing) in sweep::loops_under(&self.root) {
            out.push(format!(
                "loop device: {} ({})",
                device.display(),
                backing.display()
            ));
        }
        for dir in sweep::cgroup_dirs(Path::new(CGROUP_ROOT), &self.cgroup_parent) {
            let Ok(children) = std::fs::read_dir(&dir) else {
                continue;
            };
            for c in children.flatten() {
                if c.path().is_dir() {
                    out.push(format!("cgroup: {}", c.path().display()));
                }
            }
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                out.push(format!("process {pid} in {}", dir.display()));
            }
        }
        out
    }
}

const AGENT_ROOT_PREFIX: &str = "rekube-agent-";

/// Whether `path` is a test agent's --root-dir ([`AgentProcess::root`]).
pub fn is_agent_root(path: &Path) -> bool {
    path.parent() == Some(std::env::temp_dir().as_path())
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(AGENT_ROOT_PREFIX))
}

/// For a test that runs real containers: true, after saying why, when this machine
/// cannot ([`AgentProcess::can_run_containers`]).
pub fn cannot_run_containers() -> bool {
    match AgentProcess::can_run_containers() {
        Ok(()) => false,
        Err(why) => {
            rekube_crds::testing::missing_prerequisite(&why);
            true
        }
    }
}

/// Waits for pod `name` to succeed and returns it; a pod that fails ends the test with its
/// status and `context` (the agent's and the driver's logs, say).
pub async fn wait_pod_succeeded(
    pods: &kube::Api<rekube_crds::Pod>,
    name: &str,
    timeout: std::time::Duration,
    context: impl Fn() -> String,
) -> rekube_crds::Pod {
    crate::wait_until(&format!("pod {name} succeeded"), timeout, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => Ok(p),
            Some("Failed") => panic!("pod {name} failed: {:?}\n{}", p.status, context()),
            other => Err(format!(
                "{other:?} on {:?}",
                p.spec.as_ref().and_then(|s| s.node_name.clone())
            )),
        }
    })
    .await
}

/// Waits until no pod is left in `pods`' namespace (each agent has let its pods go:
/// containers, sandbox, volumes removed, finalizer released).
pub async fn wait_pods_released(pods: &kube::Api<rekube_crds::Pod>, timeout: std::time::Duration) {
    crate::wait_until("every pod released by its agent", timeout, || async {
        let left = pods
            .list(&kube::api::ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                left.items
                    .iter()
                    .map(|p| p.metadata.name.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await;
}

/// Deletes every pod of `pods`' namespace, waits until `agent` let them go, then asserts
/// that nothing of them is left on the machine ([`AgentProcess::leftovers`]).
pub async fn delete_all_pods_and_check_leftovers(
    pods: &kube::Api<rekube_crds::Pod>,
    agent: &AgentProcess,
    timeout: std::time::Duration,
) {
    for p in pods.list(&kube::api::ListParams::default()).await.unwrap() {
        let name = p.metadata.name.unwrap_or_default();
        pods.delete(&name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
    }
    wait_pods_released(pods, timeout).await;
    // The object goes after the cleanup; the exit watchers may still be finishing.
    agent
        .wait_no_leftovers(std::time::Duration::from_secs(10))
        .await;
}

/// Builds busybox:1.36 from Debian's busybox-static into the docker archive `archive`
/// (`scripts/busybox-image.sh`; no registry is reachable).
pub fn build_busybox_image(archive: &Path) -> Result<(), String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-image.sh");
    run(Command::new(&script).arg(archive).arg("busybox:1.36"))
}

/// Builds `udp-echo:1`, busybox:1.36 with `/bin/udp-echo` (fixtures/udp-echo.rs, compiled
/// by rustc alone and linked statically: the image has no libc), into the docker archive
/// `archive`.
pub fn build_udp_echo_image(archive: &Path) -> Result<(), String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("rekube-udp-echo-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let binary = work.join("udp-echo");
    let built = run(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2024",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(&binary)
            .arg(manifest.join("fixtures/udp-echo.rs")),
    )
    .and_then(|()| {
        run(Command::new(manifest.join("scripts/busybox-image.sh"))
            .arg(archive)
            .arg("udp-echo:1")
            .arg(&binary))
    });
    let _ = std::fs::remove_dir_all(&work);
    built
}

/// Imports the image `archive` into the store of the agent whose --root-dir is `root`
/// (`rekube-node-agent image import`, what `kind load` does on kind).
pub fn import_image(agent: &Path, archive: &Path, root: &Path) -> Result<(), String> {
    run(Command::new(agent)
        .args(["image", "import"])
        .arg(archive)
        .arg("--root")
        .arg(root.join("images")))
}

/// A real agent's own run directory and pod log directory under its `root`, and its
/// cgroup parent: nothing of its containers is shared with another agent's.
pub fn real_agent_flags(root: &Path, cgroup_parent: &str) -> Vec<String> {
    let dir = |sub: &str| root.join(sub).to_string_lossy().into_owned();
    vec![
        "--run-dir".into(),
        dir("run"),
        "--pod-log-dir".into(),
        dir("logs"),
        "--cgroup-parent".into(),
        cgroup_parent.into(),
    ]
}

/// The flags of an agent on `node` of a [`crate::netns::TestNetwork`]: the cni pod
/// network with the plugins of `cni_bin_dir`, its conf dir and cache its own under
/// `root` (empty at first, so that it installs its default network), and the node's
/// switch address as its InternalIP.
pub fn cni_node_flags(
    root: &Path,
    node: &crate::netns::NodeNetns,
    cni_bin_dir: &Path,
) -> Vec<String> {
    let dir = |sub: &str| root.join(sub).to_string_lossy().into_owned();
    vec![
        "--pod-network".into(),
        "cni".into(),
        "--cni-conf-dir".into(),
        dir("cni/net.d"),
        "--cni-cache-dir".into(),
        dir("cni/state"),
        "--cni-bin-dir".into(),
        cni_bin_dir.to_string_lossy().into_owned(),
        "--node-ip".into(),
        node.address.to_string(),
    ]
}

/// SIGTERM, then up to `grace` for `child` to end, then SIGKILL; its exit status.
pub fn terminate_child(
    child: &mut Child,
    grace: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Runs `command`: an error with its stderr when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes a stopped agent's `--cgroup-parent` (empty once its containers are gone; a
/// parent that still holds a cgroup stays, and the leftover checks name it).
pub fn remove_cgroup_parent(parent: &str) {
    for dir in sweep::cgroup_dirs(Path::new(CGROUP_ROOT), parent) {
        let _ = std::fs::remove_dir(dir);
    }
}
