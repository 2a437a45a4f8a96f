//! `just bench-runtime`: container start latency of rekube's runtime side by side with
//! runc and crun (Debian's packages) on the same busybox rootfs: create + start + wait
//! (+ delete) of `/bin/true`, N iterations each, interleaved so that the three share the
//! machine's noise; prints median, p90 and the ratios rekube/runc and rekube/crun.
//!
//! The same work for all three: the rootfs read-only, new PID and mount namespaces, the
//! network, IPC and UTS namespaces of one pod sandbox joined (made once by rekube's
//! runtime, as a pod's), the same 14 default capabilities, no_new_privs, masked and
//! read-only paths. runc and crun get an OCI bundle from `runc spec --rootless=false`
//! adjusted to that (args `/bin/true`, terminal false, the shared rootfs, no hostname, no /sys/fs/cgroup
//! mount, the sandbox's namespace paths, a cgroup under the benchmark's parent) and run it
//! with `run`, which creates, starts, waits and deletes. On a hybrid cgroup host whose
//! cgroup2 hierarchy holds a controller, crun (which refuses that mode) runs in a mount
//! namespace where the cgroup2 hierarchy is unmounted: it still uses the v1 cgroups.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rekube_node_agent::runtime::busybox;
use rekube_node_agent::runtime::leaks::{LeakScope, Snapshot, assert_no_leaks};
use rekube_node_agent::runtime::rootfs;
use rekube_node_agent::runtime::spec::{ContainerSpec, DEFAULT_CAPABILITIES, RootfsSource};
use rekube_node_agent::runtime::syscall::LinuxSyscall;
use rekube_node_agent::runtime::{Runtime, RuntimeConfig, SandboxConfig};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Container start latency: rekube's runtime vs runc and crun")]
struct Args {
    /// Iterations per runtime (after 5 warm-up runs each).
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// The runc binary (skipped when missing).
    #[arg(long, default_value = "runc")]
    runc: String,
    /// The crun binary (skipped when missing).
    #[arg(long, default_value = "crun")]
    crun: String,
    /// The busybox binary for the rootfs (Debian's busybox-static).
    #[arg(long)]
    busybox: Option<PathBuf>,
}

struct Stats {
    name: String,
    samples: Vec<Duration>,
}

impl Stats {
    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.samples.clone();
        s.sort();
        s
    }

    fn percentile(&self, p: f64) -> Duration {
        let s = self.sorted();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
        s[i.min(s.len() - 1)]
    }

    fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn have(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `runc spec --rootless=false` in `bundle`, adjusted to the benchmark's container.
fn write_bundle(
    runc: &str,
    bundle: &Path,
    rootfs: &Path,
    ns: &[&Path; 3],
    cgroup: &str,
) -> anyhow_like::Result<()> {
    let [netns, ipcns, utsns] = ns;
    let status = Command::new(runc)
        .args(["spec", "--rootless=false", "--bundle"])
        .arg(bundle)
        .status()?;
    if !status.success() {
        return Err(format!("{runc} spec failed: {status}").into());
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    config["process"]["args"] = json!(["/bin/true"]);
    config["process"]["terminal"] = json!(false);
    config["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": [],
    });
    // The same rootfs for all (an absolute path: runc refuses a symlink).
    config["root"] = json!({"path": rootfs, "readonly": true});
    if let Some(o) = config.as_object_mut() {
        o.remove("hostname");
    }
    if let Some(mounts) = config["mounts"].as_array_mut() {
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
    }
    config["linux"]["namespaces"] = json!([
        {"type": "pid"},
        {"type": "mount"},
        {"type": "network", "path": netns},
        {"type": "ipc", "path": ipcns},
        {"type": "uts", "path": utsns},
    ]);
    config["linux"]["cgroupsPath"] = json!(cgroup);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// Errors of this binary: messages are enough.
mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

/// A mount namespace without the cgroup2 hierarchy of a hybrid host: crun refuses hybrid
/// mode when cgroup v2 holds a controller (here: hugetlb), so it runs in a private copy
/// of the host's mounts where /sys/fs/cgroup/unified is unmounted (the host keeps it).
struct LegacyCgroupMounts {
    helper: std::process::Child,
    mnt: std::fs::File,
}

impl LegacyCgroupMounts {
    fn needed() -> bool {
        std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .is_ok_and(|c| !c.trim().is_empty())
    }

    fn new() -> anyhow_like::Result<Self> {
        use std::io::BufRead;
        let mut helper = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("umount /sys/fs/cgroup/unified && echo ready && exec sleep 100000")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(helper.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = helper.kill();
            let _ = helper.wait();
            return Err("could not prepare a mount namespace without cgroup2 for crun".into());
        }
        let mnt = std::fs::File::open(format!("/proc/{}/ns/mnt", helper.id()))?;
        Ok(LegacyCgroupMounts { helper, mnt })
    }
}

impl Drop for LegacyCgroupMounts {
    fn drop(&mut self) {
        let _ = self.helper.kill();
        let _ = self.helper.wait();
    }
}

fn run_oci(
    binary: &str,
    state: &Path,
    bundle: &Path,
    id: &str,
    mnt: Option<&std::fs::File>,
) -> anyhow_like::Result<Duration> {
    let mut cmd = Command::new(binary);
    if let Some(mnt) = mnt {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = mnt.as_raw_fd();
        // SAFETY: setns in the forked child before exec; no allocation, no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let t0 = Instant::now();
    let out = cmd
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let took = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{binary} run {id}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(took)
}

/// Removes what a failed run would leave: mounts under the work directory, the
/// benchmark's cgroups in every hierarchy.
struct Cleanup {
    dir: PathBuf,
    parent: String,
    runtime: Option<Runtime>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(runtime) = &self.runtime {
            let _ = runtime.cgroups().remove("");
        }
        let _ = rootfs::unmount_all_under(&LinuxSyscall, &self.dir);
        // runc and crun made the parent in the other v1 hierarchies too (cpuset, devices, ...).
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.parent));
            }
        }
    }
}

fn main() -> anyhow_like::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        return Err("bench-runtime needs root (namespaces, mounts, cgroups)".into());
    }
    let busybox = args.busybox.clone().or_else(busybox::find_busybox).ok_or(
        "busybox is not installed: apt-get install busybox-static (e2e/scripts/bootstrap.sh)",
    )?;
    let dir = tempfile::Builder::new()
        .prefix("rekube-bench-runtime-")
        .tempdir()?;
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    busybox::build_rootfs(&rootfs, &busybox)?;
    let parent = format!("rekube-bench-{}", std::process::id());
    let config = RuntimeConfig {
        state_dir: dir.path().join("state"),
        run_dir: dir.path().join("run"),
        cgroup_parent: parent.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runtime = Runtime::new(config)?;
    let _cleanup = Cleanup {
        dir: dir.path().to_path_buf(),
        parent: parent.clone(),
        runtime: Some(runtime.clone()),
    };
    let scope_dirs = vec![dir.path().join("state")];
    let before = Snapshot::take(&LeakScope {
        dirs: scope_dirs.clone(),
        cgroups: runtime.cgroups().as_ref(),
    });
    let mut sandbox =
        rt.block_on(runtime.create_sandbox(&SandboxConfig::new("bench", "bench", "default")))?;

    let mut spec = ContainerSpec::new(
        "bench",
        RootfsSource::Path(rootfs.clone()),
        vec!["/bin/true".into()],
    );
    spec.readonly_rootfs = true;
    sandbox.apply_to(&mut spec);

    let (netns, ipcns, utsns) = (
        sandbox.netns.clone().ok_or("no netns")?,
        sandbox.ipcns.clone().ok_or("no ipcns")?,
        sandbox.utsns.clone().ok_or("no utsns")?,
    );
    // (binary, state, bundle, mount namespace to run in)
    let mut others: Vec<(String, PathBuf, PathBuf, bool)> = Vec::new();
    let legacy = if LegacyCgroupMounts::needed() && have(&args.crun) {
        Some(LegacyCgroupMounts::new()?)
    } else {
        None
    };
    for (name, binary) in [("runc", &args.runc), ("crun", &args.crun)] {
        if !have(binary) {
            eprintln!("{name} not found ({binary}): skipped (apt-get install {name})");
            continue;
        }
        let b = dir.path().join(format!("bundle-{name}"));
        std::fs::create_dir_all(&b)?;
        write_bundle(
            &args.runc,
            &b,
            &rootfs,
            &[&netns, &ipcns, &utsns],
            &format!("/{parent}/{name}"),
        )?;
        let in_legacy = name == "crun" && legacy.is_some();
        others.push((
            binary.clone(),
            dir.path().join(format!("state-{name}")),
            b,
            in_legacy,
        ));
    }

    let rekube_once = |i: usize| -> anyhow_like::Result<Duration> {
        rt.block_on(async {
            let t0 = Instant::now();
            let c = runtime.create_container(&spec).await?;
            runtime.start_container(&c).await?;
            let exit = runtime.wait_container(&c).await;
            runtime.remove_container(&c).await?;
            let took = t0.elapsed();
            if exit.exit_code != 0 {
                return Err(format!("rekube run {i}: exit {}", exit.exit_code).into());
            }
            Ok(took)
        })
    };

    let mut stats = vec![Stats {
        name: "rekube".into(),
        samples: Vec::new(),
    }];
    for (binary, _, _, _) in &others {
        stats.push(Stats {
            name: Path::new(binary)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            samples: Vec::new(),
        });
    }
    let warmup = 5;
    eprintln!(
        "{} iterations (+{warmup} warm-up) of create+start+wait+delete of /bin/true, interleaved: {}",
        args.iterations,
        stats
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in 0..warmup + args.iterations {
        let d = rekube_once(i)?;
        if i >= warmup {
            stats[0].samples.push(d);
        }
        for (k, (binary, state, b, in_legacy)) in others.iter().enumerate() {
            let mnt = if *in_legacy {
                legacy.as_ref().map(|l| &l.mnt)
            } else {
                None
            };
            let d = run_oci(binary, state, b, &format!("bench-{i}"), mnt)?;
            if i >= warmup {
                stats[k + 1].samples.push(d);
            }
        }
    }

    // The helper's mount namespace holds copies of the sandbox's namespace mounts.
    drop(legacy);
    rt.block_on(runtime.remove_sandbox(&mut sandbox))?;
    assert_no_leaks(
        &before,
        &LeakScope {
            dirs: scope_dirs,
            cgroups: runtime.cgroups().as_ref(),
        },
    );

    println!("| runtime | median (ms) | p90 (ms) | mean (ms) |");
    println!("| --- | --- | --- | --- |");
    for s in &stats {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} |",
            s.name,
            ms(s.percentile(50.0)),
            ms(s.percentile(90.0)),
            ms(s.mean())
        );
    }
    let rekube = &stats[0];
    for s in &stats[1..] {
        println!(
            "ratio rekube/{}: median {:.2}, p90 {:.2}",
            s.name,
            ms(rekube.percentile(50.0)) / ms(s.percentile(50.0)),
            ms(rekube.percentile(90.0)) / ms(s.percentile(90.0)),
        );
    }
    Ok(())
}
