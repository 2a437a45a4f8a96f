//! The container runtime on the real kernel, as root (the issue's runtime scenarios, in
//! the spirit of runc's `tests/integration` and youki's `tests/contest`): a busybox rootfs
//! from Debian's busybox-static, plain and as two overlay layers; exit codes and output;
//! hostname, PID 1, /proc, masked and read-only paths, capabilities, no_new_privs;
//! runAsUser; memory limit → OOMKilled; CPU quota and pids limit in the cgroup; SIGTERM
//! then SIGKILL; sandbox sharing and shareProcessNamespace; exec; and after each test,
//! nothing left behind (mounts, cgroups, processes, namespace files).
//!
//! Skipped (with a message) when not root or without busybox. Tests run one at a time:
//! the leak snapshot looks at every child of this process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekube_node_agent::runtime::busybox;
use rekube_node_agent::runtime::cgroups::{
    CgroupError, CgroupManager, CgroupVersion, OomEvents, Resources,
};
use rekube_node_agent::runtime::leaks::{LeakScope, Snapshot, assert_no_leaks};
use rekube_node_agent::runtime::rootfs;
use rekube_node_agent::runtime::spec::{
    BindMount, ContainerSpec, DEFAULT_CAPABILITIES, LogConfig, NsMode, RootfsSource, UserDb,
    resolve_user,
};
use rekube_node_agent::runtime::syscall::LinuxSyscall;
use rekube_node_agent::runtime::{
    Container, ContainerExit, LoopbackNetwork, Runtime, RuntimeConfig, Sandbox, SandboxConfig,
};

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

struct Env {
    _serial: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    runtime: Runtime,
    rootfs: PathBuf,
    layers: Vec<PathBuf>,
    before: Snapshot,
}

fn env() -> Option<Env> {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !nix::unistd::geteuid().is_root() {
        rekube_crds::testing::missing_prerequisite("the runtime tests need root");
        return None;
    }
    let Some(bb) = busybox::find_busybox() else {
        rekube_crds::testing::missing_prerequisite(
            "busybox is not installed (apt-get install busybox-static; e2e/scripts/bootstrap.sh does)",
        );
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("rekube-runtime-")
        .tempdir()
        .unwrap();
    let rootfs = dir.path().join("bundle/rootfs");
    busybox::build_rootfs(&rootfs, &bb).unwrap();
    let layers = busybox::build_layers(&dir.path().join("layers"), &bb).unwrap();
    let config = RuntimeConfig {
        state_dir: dir.path().join("state"),
        run_dir: dir.path().join("run"),
        cgroup_parent: format!(
            "rekube-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ),
    };
    let runtime = Runtime::new(config).unwrap();
    let before = Snapshot::take(&LeakScope {
        dirs: vec![dir.path().join("state"), dir.path().join("run")],
        cgroups: runtime.cgroups().as_ref(),
    });
    Some(Env {
        _serial: serial,
        dir,
        runtime,
        rootfs,
        layers,
        before,
    })
}

impl Env {
    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        let mut spec = ContainerSpec::new(
            name,
            RootfsSource::Path(self.rootfs.clone()),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        spec.log = Some(LogConfig::new(
            self.dir.path().join("logs").join(format!("{name}.log")),
        ));
        spec
    }

    /// create + start + wait + remove; the exit and the log's stdout/stderr content.
    async fn run(&self, spec: &ContainerSpec) -> (ContainerExit, String) {
        let c = self.runtime.create_container(spec).await.unwrap();
        self.runtime.start_container(&c).await.unwrap();
        let exit = self.runtime.wait_container(&c).await;
        let out = output(&c);
        self.runtime.remove_container(&c).await.unwrap();
        (exit, out)
    }

    async fn sandbox(&self, config: SandboxConfig) -> Sandbox {
        self.runtime.create_sandbox(&config).await.unwrap()
    }

    fn scope(&self) -> LeakScope<'_> {
        LeakScope {
            dirs: vec![self.dir.path().join("state"), self.dir.path().join("run")],
            cgroups: self.runtime.cgroups().as_ref(),
        }
    }

    /// Nothing left behind (the test's cgroup parent is removed on drop).
    fn finish(self) {
        assert_no_leaks(&self.before, &self.scope());
    }
}

impl Drop for Env {
    /// Also after a failed assertion: kill what runs in the test's cgroups, unmount what
    /// is mounted under its directory, remove the cgroups, so that one failure does not
    /// leave namespaces and cgroups on the machine.
    fn drop(&mut self) {
        let _ = self.runtime.cgroups().remove("");
        let _ = rootfs::unmount_all_under(&LinuxSyscall, self.dir.path());
    }
}

/// The container's log as text: `stdout: line` / `stderr: line`, one per CRI line.
fn output(c: &Container) -> String {
    let text = std::fs::read_to_string(c.log_path().unwrap()).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let _ts = parts.next();
            let stream = parts.next().unwrap_or("");
            let _tag = parts.next();
            format!("{stream}: {}", parts.next().unwrap_or(""))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_for_output(c: &Container, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !output(c).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the output of {}: {}",
            c.name(),
            output(c)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes a node for /dev/kmsg (1:11, which root on the host may open; CAP_MKNOD allows
/// the mknod) and for a host disk (the first block device the kernel lists), and opens
/// them: the device cgroup must refuse both unless privileged, though mknod succeeds
/// (runc's `b *:* m`, `c *:* m`).
fn device_probe() -> String {
    let mut blocks: Vec<String> = std::fs::read_dir("/sys/dev/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    blocks.sort();
    let (major, minor) = blocks[0].split_once(':').unwrap();
    format!(
        "rm -f /tmp/probe /tmp/disk; mknod /tmp/probe c 1 11 && ((: < /tmp/probe) 2>/dev/null && echo device=opened || echo device=denied); rm -f /tmp/probe
mknod /tmp/disk b {major} {minor} && echo disk-mknod=ok && ((: < /tmp/disk) 2>/dev/null && echo disk=opened || echo disk=denied); rm -f /tmp/disk"
    )
}

fn default_cap_eff() -> String {
    let mask: u64 = DEFAULT_CAPABILITIES.iter().map(|c| 1u64 << c.index()).sum();
    format!("{mask:016x}")
}

#[tokio::test(flavor = "multi_thread")]
async fn true_and_exit_codes_and_output() {
    let Some(env) = env() else { return };
    let mut spec = env.spec("true", "");
    spec.args = vec!["/bin/true".into()];
    let (exit, _) = env.run(&spec).await;
    assert_eq!((exit.exit_code, exit.reason()), (0, "Completed"));

    let spec = env.spec("hello", "echo hello; echo oops >&2; exit 3");
    let (exit, out) = env.run(&spec).await;
    assert_eq!(
        (exit.exit_code, exit.signal, exit.reason()),
        (3, None, "Error")
    );
    assert!(out.contains("stdout: hello"), "{out}");
    assert!(out.contains("stderr: oops"), "{out}");
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn overlay_of_two_layers() {
    let Some(env) = env() else { return };
    let mut spec = env.spec("overlay", "cat /etc/layer /etc/base-only /etc/top-only; echo new > /etc/new; rm /etc/base-only; ls /etc");
    spec.rootfs = RootfsSource::Layers(env.layers.clone());
    let c = env.runtime.create_container(&spec).await.unwrap();
    env.runtime.start_container(&c).await.unwrap();
    let exit = env.runtime.wait_container(&c).await;
    let out = output(&c);
    assert_eq!(exit.exit_code, 0, "{out}");
    assert!(
        out.contains("stdout: top\nstdout: from the base layer\nstdout: from the top layer"),
        "{out}"
    );
    // Writes went to the container's upper directory, not to the layers.
    let upper = c.state_dir().join("upper/etc");
    assert_eq!(std::fs::read_to_string(upper.join("new")).unwrap(), "new\n");
    assert!(!env.layers[1].join("etc/new").exists());
    assert!(
        env.layers[1].join("etc/base-only").exists(),
        "the lower layer is untouched by rm"
    );
    env.runtime.remove_container(&c).await.unwrap();
    assert!(!c.state_dir().exists());
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_defaults_in_a_sandbox() {
    let Some(env) = env() else { return };
    let mut sb = env
        .sandbox(SandboxConfig::new("uid-iso", "iso-pod", "default"))
        .await;
    // Every default masked path this kernel has: files read empty, directories list empty.
    let mut masks = String::new();
    let mut masked = Vec::new();
    for p in rekube_node_agent::runtime::spec::DEFAULT_MASKED_PATHS {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                masks.push_str(&format!("echo masked {p}=$(ls -A {p} | wc -l)\n"))
            }
            Ok(_) => masks.push_str(&format!("echo masked {p}=$(wc -c < {p})\n")),
            Err(_) => continue,
        }
        masked.push(p);
    }
    assert!(
        masked.len() >= 2,
        "this kernel has few of the masked paths: {masked:?}"
    );
    let mut spec = env.spec(
        "iso",
        &(masks
            + r#"hostname; echo pid=$$
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status
(echo 1 > /proc/sys/kernel/printk) 2>/dev/null && echo procsys=rw || echo procsys=ro
(touch /sys/kernel/x) 2>/dev/null && echo sys=rw || echo sys=ro
grep -q '^proc /proc proc' /proc/mounts && echo proc=mounted
ls /dev | tr '\n' ' '; echo
echo etc-hostname=$(cat /etc/hostname)
sed 's/^/resolv: /' /etc/resolv.conf
ip link show lo | grep -q 'UP' && echo lo=up
ls /proc | grep -cE '^[0-9]+$'"#),
    );
    spec.args[2] = format!("{}\n{}", device_probe(), spec.args[2]);
    sb.apply_to(&mut spec);
    let (exit, out) = env.run(&spec).await;
    assert_eq!(exit.exit_code, 0, "{out}");
    let eff = default_cap_eff();
    assert_eq!(
        eff, "00000000a80425fb",
        "Docker's and containerd's well-known default set"
    );
    for want in [
        "stdout: iso-pod".to_string(),
        "stdout: pid=1".to_string(),
        format!("stdout: CapEff:\t{eff}"),
        format!("stdout: CapPrm:\t{eff}"),
        format!("stdout: CapBnd:\t{eff}"),
        "stdout: NoNewPrivs:\t1".to_string(),
        "stdout: procsys=ro".to_string(),
        "stdout: sys=ro".to_string(),
        "stdout: proc=mounted".to_string(),
        "stdout: lo=up".to_string(),
        "stdout: device=denied".to_string(),
        "stdout: disk-mknod=ok".to_string(),
        "stdout: disk=denied".to_string(),
        "stdout: etc-hostname=iso-pod".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    // No resolv.conf given: the host's, line for line.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let resolv: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("stdout: resolv: "))
        .collect();
    assert_eq!(resolv, host_resolv.lines().collect::<Vec<_>>(), "{out}");
    for p in masked {
        assert!(
            out.contains(&format!("stdout: masked {p}=0")),
            "{p} is not masked:\n{out}"
        );
    }
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd",
        "stdout",
    ] {
        assert!(
            out.contains(&format!(" {dev} ")) || out.contains(&format!(": {dev} ")),
            "no /dev/{dev} in:\n{out}"
        );
    }
    // Only the shell and its pipeline run in the container's PID namespace.
    let procs: usize = out
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("stdout: ")
        .parse()
        .unwrap();
    assert!(procs <= 4, "{out}");
    env.runtime.remove_sandbox(&mut sb).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_container() {
    let Some(env) = env() else { return };
    let mut spec = env.spec(
        "priv",
        &format!(
            "{}\ngrep -E '^(CapEff|NoNewPrivs):' /proc/self/status\ngrep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1\ntest -e /dev/{} && echo hostdev=yes",
            device_probe(),
            // A device only the host's /dev has.
            std::fs::read_dir("/dev")
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("vd") || n.starts_with("sd") || n.starts_with("nvme") || n == "kmsg")
                .unwrap_or_else(|| "kmsg".into())
        ),
    );
    spec.set_privileged();
    let (exit, out) = env.run(&spec).await;
    assert_eq!(exit.exit_code, 0, "{out}");
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let host_eff = host.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    for want in [
        "stdout: device=opened".to_string(),
        "stdout: disk-mknod=ok".to_string(),
        "stdout: disk=opened".to_string(),
        format!("stdout: {host_eff}"),
        "stdout: NoNewPrivs:\t0".to_string(),
        "stdout: rw".to_string(),
        "stdout: hostdev=yes".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_as_user_1000() {
    let Some(env) = env() else { return };
    let db = UserDb::from_layers(std::slice::from_ref(&env.rootfs)).unwrap();
    let mut spec = env.spec("user", "id -u; id -g; id -G; grep CapEff /proc/self/status; touch /root/x 2>/dev/null || echo denied");
    spec.user = resolve_user("", Some(1000), None, &[2000], &db).unwrap();
    let (exit, out) = env.run(&spec).await;
    assert_eq!(exit.exit_code, 0, "{out}");
    assert!(
        out.contains("stdout: 1000\nstdout: 1000\nstdout: 1000 10 2000"),
        "{out}"
    );
    assert!(out.contains("stdout: CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("stdout: denied"), "{out}");
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_limit_oom_killed() {
    let Some(env) = env() else { return };
    let mut spec = env.spec(
        "oom",
        "dd if=/dev/zero of=/dev/null bs=64M count=1; echo survived",
    );
    spec.resources = Resources::from_requests_limits(None, None, Some(32 << 20));
    let c = env.runtime.create_container(&spec).await.unwrap();
    let limit_file = match env.runtime.cgroups().version() {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    };
    assert_eq!(
        env.runtime.cgroups().read(c.cgroup(), limit_file).unwrap(),
        (32u64 << 20).to_string()
    );
    env.runtime.start_container(&c).await.unwrap();
    let exit = env.runtime.wait_container(&c).await;
    assert!(exit.oom_killed, "{exit:?} {}", output(&c));
    assert_eq!(exit.reason(), "OOMKilled");
    env.runtime.remove_container(&c).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_quota_and_pids_limit_in_the_cgroup() {
    let Some(env) = env() else { return };
    let mut spec = env.spec(
        "limits",
        // The inner shell gives up at its first failed fork; the outer one reports.
        "sh -c 'i=0; while [ $i -lt 12 ]; do sleep 30 & i=$((i+1)); done'; echo spawned; sleep 30",
    );
    spec.resources = Resources {
        pids_limit: Some(5),
        ..Resources::from_requests_limits(Some(250), Some(500), None)
    };
    let c = env.runtime.create_container(&spec).await.unwrap();
    env.runtime.start_container(&c).await.unwrap();
    let cg = env.runtime.cgroups();
    match cg.version() {
        CgroupVersion::V1 => {
            assert_eq!(cg.read(c.cgroup(), "cpu.cfs_quota_us").unwrap(), "50000");
            assert_eq!(cg.read(c.cgroup(), "cpu.cfs_period_us").unwrap(), "100000");
            assert_eq!(cg.read(c.cgroup(), "cpu.shares").unwrap(), "256");
        }
        CgroupVersion::V2 => {
            assert_eq!(cg.read(c.cgroup(), "cpu.max").unwrap(), "50000 100000");
            // runc's ConvertCPUSharesToCgroupV2Value(256).
            assert_eq!(cg.read(c.cgroup(), "cpu.weight").unwrap(), "10");
        }
    }
    assert_eq!(cg.read(c.cgroup(), "pids.max").unwrap(), "5");
    wait_for_output(&c, "spawned").await;
    let out = output(&c);
    assert!(
        out.contains("can't fork"),
        "the pids limit stops forks: {out}"
    );
    assert!(cg.pids(c.cgroup()).unwrap().len() <= 5);
    let exit = env
        .runtime
        .stop_container(&c, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(exit.signal, Some(9));
    env.runtime.remove_container(&c).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_sends_term_then_kill_after_the_grace_period() {
    let Some(env) = env() else { return };
    // PID 1 ignoring SIGTERM: killed when the grace period is over.
    let spec = env.spec(
        "stubborn",
        "trap '' TERM; echo ready; while true; do sleep 1; done",
    );
    let c = env.runtime.create_container(&spec).await.unwrap();
    env.runtime.start_container(&c).await.unwrap();
    wait_for_output(&c, "ready").await;
    let t0 = Instant::now();
    let exit = env
        .runtime
        .stop_container(&c, Duration::from_millis(1500))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    env.runtime.remove_container(&c).await.unwrap();

    // The image's STOPSIGNAL is what is sent first; a handler exits in time.
    let mut spec = env.spec(
        "polite",
        "trap 'echo got usr1; exit 0' USR1; echo ready; while true; do sleep 1; done",
    );
    spec.stop_signal = nix::sys::signal::Signal::SIGUSR1;
    let c = env.runtime.create_container(&spec).await.unwrap();
    env.runtime.start_container(&c).await.unwrap();
    wait_for_output(&c, "ready").await;
    let t0 = Instant::now();
    let exit = env
        .runtime
        .stop_container(&c, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!((exit.exit_code, exit.signal), (0, None));
    assert!(output(&c).contains("stdout: got usr1"));
    env.runtime.remove_container(&c).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_sandbox_share_its_namespaces() {
    let Some(env) = env() else { return };
    let mut sb = env
        .sandbox(SandboxConfig::new("uid-share", "shared-pod", "default"))
        .await;
    // Both run at once: a namespace's inode number is reused once it is freed, so the
    // PID namespaces are compared while both exist.
    let script = "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/uts; readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; echo listed; exec sleep 300";
    let mut outs = Vec::new();
    let mut running = Vec::new();
    for name in ["a", "b"] {
        let mut spec = env.spec(name, script);
        sb.apply_to(&mut spec);
        let c = env.runtime.create_container(&spec).await.unwrap();
        env.runtime.start_container(&c).await.unwrap();
        wait_for_output(&c, "listed").await;
        outs.push(output(&c).lines().map(str::to_string).collect::<Vec<_>>());
        running.push(c);
    }
    for c in &running {
        env.runtime.stop_container(c, Duration::ZERO).await.unwrap();
        env.runtime.remove_container(c).await.unwrap();
    }
    assert_eq!(outs[0][..4], outs[1][..4], "same hostname, net, uts, ipc");
    assert_ne!(outs[0][4], outs[1][4], "each its own PID namespace");
    assert_eq!(outs[0][0], "stdout: shared-pod");
    let inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(sb.netns.as_ref().unwrap()).unwrap(),
    );
    assert_eq!(outs[0][1], format!("stdout: net:[{inode}]"));
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(outs[0][1], format!("stdout: {}", host_net.display()));
    env.runtime.remove_sandbox(&mut sb).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn share_process_namespace() {
    let Some(env) = env() else { return };
    let mut config = SandboxConfig::new("uid-spn", "spn-pod", "default");
    config.share_process_namespace = true;
    let mut sb = env.sandbox(config).await;
    assert!(sb.pause_pid().is_some());
    // The leak snapshot sees what a sandbox holds: without removal, this would fail.
    let held = env.before.diff(&Snapshot::take(&env.scope()));
    for want in [
        "+ mount: ",
        " nsfs ",
        "+ cgroup: ",
        "+ file: ",
        " rekube-pause ",
    ] {
        assert!(held.contains(want), "no {want:?} in:\n{held}");
    }

    let mut sleeper = env.spec("sleeper", "echo up; exec sleep 300");
    sb.apply_to(&mut sleeper);
    let a = env.runtime.create_container(&sleeper).await.unwrap();
    env.runtime.start_container(&a).await.unwrap();
    wait_for_output(&a, "up").await;

    let mut looker = env.spec(
        "looker",
        "echo me=$$; for p in /proc/[0-9]*; do echo \"$(basename $p) $(cat $p/comm)\"; done",
    );
    sb.apply_to(&mut looker);
    let (exit, out) = env.run(&looker).await;
    assert_eq!(exit.exit_code, 0, "{out}");
    assert!(
        out.contains("stdout: 1 rekube-pause"),
        "the pause process is PID 1: {out}"
    );
    assert!(
        out.contains(" sleep"),
        "the other container's process is visible: {out}"
    );
    assert!(!out.contains("stdout: me=1\n"), "{out}");

    env.runtime
        .stop_container(&a, Duration::ZERO)
        .await
        .unwrap();
    env.runtime.remove_container(&a).await.unwrap();
    env.runtime.remove_sandbox(&mut sb).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_in_a_running_container() {
    let Some(env) = env() else { return };
    let mut sb = env
        .sandbox(SandboxConfig::new("uid-exec", "exec-pod", "default"))
        .await;
    let mut spec = env.spec("target", "echo up; exec sleep 300");
    spec.env.push("GREETING=hi from env".into());
    spec.cwd = "/tmp".into();
    sb.apply_to(&mut spec);
    let c = env.runtime.create_container(&spec).await.unwrap();
    env.runtime.start_container(&c).await.unwrap();
    wait_for_output(&c, "up").await;

    let argv: Vec<String> = ["/bin/sh", "-c", "echo $GREETING; hostname; pwd; grep NoNewPrivs /proc/self/status; ls /proc/1/ >/dev/null && cat /proc/1/comm; exit 4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = env
        .runtime
        .exec_in(&c, &argv, Duration::from_secs(10))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&r.output).into_owned();
    assert_eq!((r.exit_code, r.timed_out), (4, false), "{text}");
    assert_eq!(text, "hi from env\nexec-pod\n/tmp\nNoNewPrivs:\t1\nsleep\n");
    // The exec'd process was in the container's cgroup.
    let r = env
        .runtime
        .exec_in(
            &c,
            &["cat".to_string(), "/proc/self/cgroup".to_string()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&r.output).contains(c.cgroup()),
        "{:?}",
        String::from_utf8_lossy(&r.output)
    );
    // Timeouts kill the exec'd process.
    let t0 = Instant::now();
    let r = env
        .runtime
        .exec_in(
            &c,
            &["sleep".to_string(), "30".to_string()],
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert!(
        r.timed_out && t0.elapsed() < Duration::from_secs(5),
        "{r:?}"
    );
    let err = env
        .runtime
        .exec_in(&c, &["no-such-tool".to_string()], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec in container target: exec no-such-tool: executable file not found in $PATH"
    );

    env.runtime
        .stop_container(&c, Duration::ZERO)
        .await
        .unwrap();
    env.runtime.remove_container(&c).await.unwrap();
    env.runtime.remove_sandbox(&mut sb).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn readonly_rootfs_and_bind_mounts() {
    let Some(env) = env() else { return };
    let vol = env.dir.path().join("volume");
    std::fs::create_dir_all(&vol).unwrap();
    let cfg = env.dir.path().join("config.txt");
    std::fs::write(&cfg, "setting=1\n").unwrap();
    let mut spec = env.spec(
        "ro",
        "(touch /x) 2>/dev/null && echo root=rw || echo root=ro; echo hi > /data/out && echo data=rw; cat /config.txt; (echo no > /config.txt) 2>/dev/null && echo cfg=rw || echo cfg=ro",
    );
    spec.readonly_rootfs = true;
    spec.rootfs = RootfsSource::Layers(env.layers.clone());
    spec.mounts = vec![
        BindMount::new(&vol, "/data", false),
        BindMount::new(&cfg, "/config.txt", true),
    ];
    let (exit, out) = env.run(&spec).await;
    assert_eq!(exit.exit_code, 0, "{out}");
    assert_eq!(
        out,
        "stdout: root=ro\nstdout: data=rw\nstdout: setting=1\nstdout: cfg=ro"
    );
    assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "hi\n");
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_sandbox_uses_the_host_namespaces() {
    let Some(env) = env() else { return };
    let mut config = SandboxConfig::new("uid-hostnet", "hostnet-pod", "default");
    config.host_network = true;
    let mut sb = env.sandbox(config).await;
    assert!(sb.netns.is_none() && sb.utsns.is_none() && sb.ipcns.is_some());
    let mut spec = env.spec("hn", "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; (touch /sys/x) 2>/dev/null && echo sys=rw || echo sys=ro");
    sb.apply_to(&mut spec);
    assert_eq!(spec.namespaces.network, NsMode::Host);
    let (exit, out) = env.run(&spec).await;
    assert_eq!(exit.exit_code, 0, "{out}");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    assert_eq!(
        out,
        format!(
            "stdout: {}\nstdout: {}\nstdout: sys=ro",
            host_net.display(),
            host_uts.display()
        )
    );
    env.runtime.remove_sandbox(&mut sb).await.unwrap();
    env.finish();
}

/// hostPID and hostIPC: the container is in the host's PID and IPC namespaces (and still
/// in a network namespace of its own).
#[tokio::test(flavor = "multi_thread")]
async fn host_pid_and_host_ipc_sandbox_use_the_host_namespaces() {
    let Some(env) = env() else { return };
    let mut config = SandboxConfig::new("uid-hostpid", "hostpid-pod", "default");
    config.host_pid = true;
    config.host_ipc = true;
    let mut sb = env.sandbox(config).await;
    assert!(sb.ipcns.is_none() && sb.netns.is_some());
    let mut spec = env.spec(
        "hp",
        "readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc; readlink /proc/self/ns/net",
    );
    sb.apply_to(&mut spec);
    let (exit, out) = env.run(&spec).await;
    assert_eq!(exit.exit_code, 0, "{out}");
    let host = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .display()
            .to_string()
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        [
            format!("stdout: {}", host("pid")),
            format!("stdout: {}", host("ipc"))
        ],
        "{out}"
    );
    assert_ne!(lines[2], format!("stdout: {}", host("net")), "{out}");
    env.runtime.remove_sandbox(&mut sb).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_container_and_leave_nothing() {
    let Some(env) = env() else { return };
    // Not in $PATH: the setup fails before start.
    let mut spec = env.spec("missing", "");
    spec.args = vec!["no-such-binary".into()];
    let err = env.runtime.create_container(&spec).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "create container missing: exec no-such-binary: executable file not found in $PATH"
    );
    // A path that does not exist: exec fails at start, the process exits 127.
    spec.args = vec!["/bin/no-such-binary".into()];
    let c = env.runtime.create_container(&spec).await.unwrap();
    let err = env.runtime.start_container(&c).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "start container missing: exec /bin/no-such-binary: ENOENT: No such file or directory"
    );
    assert_eq!(env.runtime.wait_container(&c).await.exit_code, 127);
    env.runtime.remove_container(&c).await.unwrap();
    // A bind source that does not exist.
    let mut spec = env.spec("badmount", "true");
    spec.mounts = vec![BindMount::new("/nonexistent/rekube", "/data", false)];
    let err = env.runtime.create_container(&spec).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "create container badmount: bind mount source /nonexistent/rekube does not exist"
    );
    // Created, never started, removed.
    let spec = env.spec("never", "true");
    let c = env.runtime.create_container(&spec).await.unwrap();
    assert_eq!(
        c.state(),
        rekube_node_agent::runtime::ContainerState::Created
    );
    env.runtime.remove_container(&c).await.unwrap();
    env.finish();
}

/// The host's cgroup manager, except that moving a process into a cgroup fails: a
/// failure injected after the fork, where the child exists and must be released.
struct FailingAddPid(Arc<dyn CgroupManager>);

impl CgroupManager for FailingAddPid {
    fn version(&self) -> CgroupVersion {
        self.0.version()
    }
    fn parent(&self) -> &str {
        self.0.parent()
    }
    fn create(&self, path: &str, resources: &Resources) -> Result<(), CgroupError> {
        self.0.create(path, resources)
    }
    fn apply(&self, path: &str, resources: &Resources) -> Result<(), CgroupError> {
        self.0.apply(path, resources)
    }
    fn add_pid(&self, path: &str, pid: i32) -> Result<(), CgroupError> {
        Err(CgroupError::AddPid {
            path: path.to_string(),
            pid,
            message: "injected failure".into(),
        })
    }
    fn pids(&self, path: &str) -> Result<Vec<i32>, CgroupError> {
        self.0.pids(path)
    }
    fn oom_events(&self, path: &str) -> Result<OomEvents, CgroupError> {
        self.0.oom_events(path)
    }
    fn read(&self, path: &str, file: &str) -> Result<String, CgroupError> {
        self.0.read(path, file)
    }
    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        self.0.remove(path)
    }
    fn list(&self) -> Result<Vec<String>, CgroupError> {
        self.0.list()
    }
}

/// A failure after the fork (the child forked, then moving it into its cgroup fails)
/// kills and reaps the child and removes its cgroup, mounts and state, for create (over
/// a plain rootfs and over overlay layers), for a sandbox's pause process and for exec.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_after_the_fork_releases_the_child_and_its_cgroup() {
    let Some(env) = env() else { return };
    let failing = Runtime::with_parts(
        env.runtime.config().clone(),
        Arc::new(FailingAddPid(env.runtime.cgroups().clone())),
        Arc::new(LoopbackNetwork),
    );
    let spec = env.spec("late", "sleep 30");
    let err = failing.create_container(&spec).await.unwrap_err();
    assert!(
        err.to_string().starts_with("container late: add process ")
            && err.to_string().ends_with(": injected failure"),
        "{err}"
    );
    let mut layered = env.spec("late-layers", "sleep 30");
    layered.rootfs = RootfsSource::Layers(env.layers.clone());
    assert!(failing.create_container(&layered).await.is_err());
    // The sandbox's pause process (shareProcessNamespace) likewise.
    let mut config = SandboxConfig::new("uid-late", "late-pod", "default");
    config.share_process_namespace = true;
    let err = failing.create_sandbox(&config).await.unwrap_err();
    assert!(err.to_string().ends_with(": injected failure"), "{err}");
    assert_eq!(env.runtime.cgroups().list().unwrap(), Vec::<String>::new());
    assert_no_leaks(&env.before, &env.scope());

    let c = env
        .runtime
        .create_container(&env.spec("running", "sleep 30"))
        .await
        .unwrap();
    env.runtime.start_container(&c).await.unwrap();
    let err = failing
        .exec_in(&c, &["true".to_string()], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with(": injected failure"), "{err}");
    env.runtime
        .stop_container(&c, Duration::ZERO)
        .await
        .unwrap();
    env.runtime.remove_container(&c).await.unwrap();
    env.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn many_containers_in_parallel() {
    let Some(env) = env() else { return };
    let mut sb = env
        .sandbox(SandboxConfig::new("uid-par", "par-pod", "default"))
        .await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut spec = env.spec(&format!("p{i}"), &format!("echo n={i}; exit {i}"));
        sb.apply_to(&mut spec);
        let runtime = env.runtime.clone();
        tasks.push(tokio::spawn(async move {
            let c = runtime.create_container(&spec).await.unwrap();
            runtime.start_container(&c).await.unwrap();
            let exit = runtime.wait_container(&c).await;
            let out = output(&c);
            runtime.remove_container(&c).await.unwrap();
            (exit.exit_code, out)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (code, out) = t.await.unwrap();
        assert_eq!(code, i as i32);
        assert_eq!(out, format!("stdout: n={i}"));
    }
    env.runtime.remove_sandbox(&mut sb).await.unwrap();
    env.finish();
}

#[test]
fn the_leak_check_notices_a_leftover() {
    // The helper itself: a file left in the run directory is reported. Serial as the
    // others: a child another test forks meanwhile would be reported too.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cgroups =
        rekube_node_agent::runtime::cgroups::CgroupV2::new(dir.path().join("cg"), "p").unwrap();
    let scope = LeakScope {
        dirs: vec![dir.path().join("run")],
        cgroups: &cgroups,
    };
    let before = Snapshot::take(&scope);
    std::fs::create_dir_all(dir.path().join("run/netns")).unwrap();
    std::fs::write(dir.path().join("run/netns/x"), "").unwrap();
    let diff = before.diff(&Snapshot::take(&scope));
    assert!(
        diff.starts_with("+ file: ") && diff.contains(Path::new("run/netns/x").to_str().unwrap()),
        "{diff}"
    );
}

#[test]
fn the_leak_check_notices_a_leftover_cgroup_and_its_process() {
    // The same check on the host's real cgroups (v1 here, the unified hierarchy in the
    // cgroup v2 VM): a cgroup left under the runtime's parent, and a process in it, are
    // both reported; removing them makes the diff empty again.
    let Some(env) = env() else { return };
    let cgroups = env.runtime.cgroups();
    let scope = env.scope();
    cgroups.create("leftover", &Resources::default()).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    cgroups.add_pid("leftover", child.id() as i32).unwrap();
    let diff = env.before.diff(&Snapshot::take(&scope));
    let pid = child.id().to_string();
    assert!(
        diff.lines()
            .any(|l| l.starts_with("+ cgroup: ") && l.ends_with("leftover")),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.starts_with(&format!("+ process: {pid} sleep (in cgroup")))
            && diff.contains(&format!("{pid} sleep (child)")),
        "{diff}"
    );
    cgroups.remove("leftover").unwrap();
    let _ = child.wait();
    env.finish();
}
