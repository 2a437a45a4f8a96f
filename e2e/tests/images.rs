//! rekube's container images as `just images` builds them (e2e/scripts/images.sh, run
//! here: it builds the release binaries when they are stale, and reuses its cached base
//! root filesystems): both OCI archives imported by `rekube-node-agent image import` (and
//! their docker-archive twins, which must give the same image IDs) and by a private
//! containerd's `ctr images import` as `kind load image-archive` runs it; each image's
//! config (user, entrypoint, OCI labels); and its programs run inside its own root
//! filesystem (its layers as one read-only overlayfs, entered with chroot as the image's
//! user), so a missing shared library or file fails here rather than in a cluster.
//! Needs root (mounts, chroot), umoci and skopeo (the script), containerd and ctr.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rekube_crds::testing::{cache_dir, missing_prerequisite};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Root, or the reason the test cannot run (after [`missing_prerequisite`]).
fn cannot_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    missing_prerequisite("the image tests need root (overlayfs mounts, chroot, containerd)");
    true
}

/// Runs e2e/scripts/images.sh once for the tests of this file; the directory it wrote.
fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo().join("e2e/scripts/images.sh");
        let started = Instant::now();
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} failed ({}):\n{stdout}\n{stderr}",
            script.display(),
            out.status
        );
        // Cargo's lines too: a slow run says whether it rebuilt or waited for a lock.
        println!(
            "{} in {:.1}s:\n{stderr}{stdout}",
            script.display(),
            started.elapsed().as_secs_f64()
        );
        cache_dir().join("images")
    })
}

fn archive(name: &str, format: &str) -> PathBuf {
    let path = images().join(format!("{name}-{VERSION}.{format}.tar"));
    assert!(path.is_file(), "images.sh wrote no {}", path.display());
    path
}

/// The release binaries images.sh built and copied into the images.
fn release_binary(name: &str) -> PathBuf {
    let target = match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => cache_dir().join("target"),
    };
    target.join("release").join(name)
}

/// What `org.opencontainers.image.revision` must say: the checkout's commit.
fn revision() -> String {
    Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An image store of the node agent's, in a temporary directory.
struct ImageStore {
    dir: tempfile::TempDir,
}

/// An image as the node agent stored it.
struct StoredImage {
    id: String,
    config: Value,
    /// The unpacked layers, top first (overlayfs' lowerdir order).
    layers: Vec<PathBuf>,
}

impl ImageStore {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("rekube-images-test-")
                .tempdir()
                .expect("temporary image store"),
        }
    }

    /// `rekube-node-agent image import ARCHIVE`; the names and IDs it printed.
    fn import(&self, archive: &Path) -> String {
        let out = run(Command::new(release_binary("rekube-node-agent"))
            .arg("image")
            .arg("--root")
            .arg(self.dir.path())
            .arg("import")
            .arg(archive));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn blob(&self, digest: &str) -> Value {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let path = self.dir.path().join("blobs/sha256").join(hex);
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn get(&self, name: &str) -> StoredImage {
        let index: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("index.json")).expect("the store's index.json"),
        )
        .expect("the store's index.json");
        let record = &index["names"][name];
        let id = record["config"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is not in the store: {index}"))
            .to_string();
        let config = self.blob(&id);
        let layers = config["rootfs"]["diff_ids"]
            .as_array()
            .expect("rootfs.diff_ids")
            .iter()
            .rev()
            .map(|d| {
                let hex = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
                self.dir.path().join("layers/sha256").join(hex).join("fs")
            })
            .collect();
        StoredImage { id, config, layers }
    }
}

impl StoredImage {
    /// Runs ARGV (an absolute path in the image) in the image's root filesystem as USER:
    /// its layers mounted as one read-only overlayfs in a mount namespace of its own,
    /// entered with chroot; the command's output, which must succeed.
    fn run(&self, user: &str, argv: &[&str]) -> String {
        let target = tempfile::Builder::new()
            .prefix("rekube-image-rootfs-")
            .tempdir()
            .expect("a mount point");
        let lower = self
            .layers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let out = run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                r#"set -e; mount -t overlay rekube-image -o "lowerdir=$1" "$2"; root=$2 user=$3; shift 3; exec chroot --userspec="$user" "$root" "$@""#,
            )
            .arg("sh")
            .arg(lower)
            .arg(target.path())
            .arg(user)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn file(&self, path: &str) -> String {
        for layer in &self.layers {
            if let Ok(text) = std::fs::read_to_string(layer.join(path.trim_start_matches('/'))) {
                return text;
            }
        }
        panic!("no layer of the image has {path}")
    }

    /// The config every rekube image has: the binary as entrypoint, the user, the labels.
    fn check_config(&self, name: &str, user: &str) {
        let c = &self.config;
        assert_eq!(c["architecture"], "amd64", "{c}");
        assert_eq!(c["os"], "linux", "{c}");
        assert_eq!(c["config"]["User"], user, "{c}");
        assert_eq!(
            c["config"]["Entrypoint"],
            serde_json::json!([format!("/usr/local/bin/{name}")]),
            "{c}"
        );
        let labels = &c["config"]["Labels"];
        let label = |key: &str| {
            labels[format!("org.opencontainers.image.{key}")]
                .as_str()
                .unwrap_or_else(|| {
                    panic!("{name} has no label org.opencontainers.image.{key}: {c}")
                })
                .to_string()
        };
        assert_eq!(label("title"), name);
        assert_eq!(label("version"), VERSION);
        assert_eq!(label("revision"), revision());
        assert!(label("source").starts_with("https://"), "{labels}");
        let created: jiff::Timestamp = label("created")
            .parse()
            .unwrap_or_else(|e| panic!("org.opencontainers.image.created: {e}: {labels}"));
        assert_eq!(
            c["created"]
                .as_str()
                .map(|s| s.parse::<jiff::Timestamp>().ok()),
            Some(Some(created)),
            "{c}"
        );
    }
}

/// Imports NAME's OCI archive and its docker-archive twin into one store: both name
/// `docker.io/rekube/NAME:VERSION`, with the same image ID.
fn import_both(store: &ImageStore, name: &str) -> StoredImage {
    let reference = format!("docker.io/rekube/{name}:{VERSION}");
    let printed = store.import(&archive(name, "oci"));
    assert!(
        printed.starts_with(&format!("{reference} sha256:")),
        "{printed}"
    );
    let image = store.get(&reference);
    let printed = store.import(&archive(name, "docker"));
    assert_eq!(
        printed.trim(),
        format!("{reference} {}", image.id),
        "the docker-archive is another image"
    );
    image
}

#[test]
fn controllers_image_runs_its_binary_as_nonroot() {
    if cannot_run() {
        return;
    }
    let store = ImageStore::new();
    let image = import_both(&store, "rekube-controllers");
    image.check_config("rekube-controllers", "65532:65532");
    assert_eq!(
        image.layers.len(),
        2,
        "glibc and the binary: {}",
        image.config
    );
    assert!(
        image.file("/etc/passwd").contains("nonroot:x:65532:65532:"),
        "{}",
        image.file("/etc/passwd")
    );
    assert!(
        image
            .file("/etc/ssl/certs/ca-certificates.crt")
            .contains("BEGIN CERTIFICATE")
    );
    // The stripped release binary, its libraries found in the image, as user 65532.
    let out = image.run(
        "65532:65532",
        &["/usr/local/bin/rekube-controllers", "--version"],
    );
    assert_eq!(out.trim(), format!("rekube-controllers {VERSION}"));
    let out = image.run(
        "65532:65532",
        &["/usr/local/bin/rekube-controllers", "--help"],
    );
    assert!(out.contains("Usage: rekube-controllers"), "{out}");
}

#[test]
fn node_agent_image_runs_the_agent_and_its_tools() {
    if cannot_run() {
        return;
    }
    let store = ImageStore::new();
    let image = import_both(&store, "rekube-node-agent");
    image.check_config("rekube-node-agent", "0:0");
    assert_eq!(
        image.layers.len(),
        3,
        "glibc, the tools and the binary: {}",
        image.config
    );
    // The glibc layer is the controllers' own: one copy on a node that has both.
    let controllers = import_both(&store, "rekube-controllers");
    assert_eq!(
        image.config["rootfs"]["diff_ids"][0], controllers.config["rootfs"]["diff_ids"][0],
        "the images share their first layer"
    );
    let out = image.run("0:0", &["/usr/local/bin/rekube-node-agent", "--version"]);
    assert_eq!(out.trim(), format!("rekube-node-agent {VERSION}"));
    // What the agent runs (node-agent/src: the proxy, pod routes, cleanup).
    for (argv, expected) in [
        (&["/usr/sbin/nft", "--version"][..], "nftables v"),
        (&["/usr/sbin/conntrack", "--version"], "conntrack v"),
        (&["/usr/bin/ip", "-V"], "iproute2"),
        (&["/usr/sbin/iptables", "--version"], "(nf_tables)"),
        (&["/usr/sbin/ip6tables-restore", "--version"], "(nf_tables)"),
        (&["/usr/sbin/iptables-legacy-save", "--version"], "(legacy)"),
        (&["/usr/bin/nsenter", "--version"], "util-linux"),
    ] {
        let out = image.run("0:0", argv);
        assert!(out.contains(expected), "{argv:?}: {out}");
    }
}

/// A containerd of the test's own: root, state and socket in a temporary directory,
/// no CRI; stopped, and its directory removed, on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Self {
        for tool in ["containerd", "ctr"] {
            if Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_err()
            {
                panic!("{tool} is not installed (Debian's containerd package)");
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("rekube-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let containerd = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"]);
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever its snapshotter left mounted under its root, deepest first.
        let root = self.dir.path().display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn containerd_imports_both_archives_as_kind_load_does() {
    if cannot_run() {
        return;
    }
    let archives = [
        ("rekube-controllers", archive("rekube-controllers", "oci")),
        ("rekube-node-agent", archive("rekube-node-agent", "oci")),
    ];
    let containerd = Containerd::start();
    for (name, archive) in &archives {
        // `kind load image-archive`: the archive on stdin of `ctr images import`.
        let file = std::fs::File::open(archive).unwrap();
        let out = containerd
            .ctr()
            .args(["images", "import", "--all-platforms", "--digests", "-"])
            .stdin(file)
            .output()
            .expect("running ctr");
        assert!(
            out.status.success(),
            "ctr images import {} failed: {}{}\n{}",
            archive.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            containerd.log()
        );
        println!("{name}: {}", String::from_utf8_lossy(&out.stdout).trim());
    }
    let listed = run(containerd.ctr().args(["images", "ls", "-q"]));
    let listed = String::from_utf8_lossy(&listed.stdout);
    for (name, _) in &archives {
        let reference = format!("docker.io/rekube/{name}:{VERSION}");
        assert!(
            listed.lines().any(|l| l == reference),
            "containerd did not name {reference}: {listed}"
        );
        // Unpacked for the overlayfs snapshotter, as the kubelet would use it.
        let out = run(containerd.ctr().args(["images", "check"]));
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.lines()
                .any(|l| l.starts_with(&reference) && l.contains("complete")),
            "{out}"
        );
    }
}

#[test]
fn kubectl_rekube_release_binary_runs() {
    if cannot_run() {
        return;
    }
    let binary = images().join(format!("kubectl-rekube-{VERSION}-linux-amd64"));
    let out = run(Command::new(&binary).arg("--help"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Its checksum file, as a release page would carry it.
    let sums = format!("kubectl-rekube-{VERSION}-linux-amd64.sha256");
    run(Command::new("sha256sum")
        .args(["--check", &sums])
        .current_dir(images()));
}
