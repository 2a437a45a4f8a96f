//! csi-sanity (kubernetes-csi/csi-test v5.6.0, the CSI spec's conformance suite) against
//! a real rekube-csi, as root: the driver on a socket in a temporary directory with its
//! own state dir and a small --capacity, csi-sanity's staging and mount dirs beside it.
//! Four passes: local-disk mounted (ext4), local-disk in block mode, hostpath, and
//! local-disk mounted under `--attach-required` (ControllerPublishVolume attaches the loop
//! device; with PUBLISH_READONLY advertised too, every publish spec runs, the attach limit
//! with `--csi.testnodevolumeattachlimit`). Each asserts that no spec failed and that no
//! spec was skipped but those listed, prints the counts, and that nothing is left: no
//! loop device on the pass's images, no mount under its directory, no image, directory or
//! record in its state dir.
//!
//! csi-sanity is built by `e2e/scripts/build-kubernetes.sh csi-sanity` (bootstrap does it)
//! into `$REKUBE_CACHE/bin/csi-sanity-v5.6.0`; `REKUBE_CSI_SANITY` names another binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rekube_crds::testing::{cache_dir, missing_prerequisite};

const CSI_SANITY_VERSION: &str = "v5.6.0";
const MIB: u64 = 1 << 20;

/// The specs expected to fail (none). Listed here, precisely, should one ever be known.
const KNOWN_FAILURES: &[&str] = &[];

/// What csi-sanity may skip: the specs of capabilities rekube-csi does not advertise
/// (docs/csi.md says why), and the one csi-sanity itself marks pending. Any other skip
/// (a capability lost by mistake) fails the test.
const EXPECTED_SKIPS: &[&str] = &[
    // CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS, GET_SNAPSHOT
    "[It] CreateSnapshot [Controller Server] ",
    "[It] DeleteSnapshot [Controller Server] ",
    "[It] ListSnapshots [Controller Server] ",
    "[It] GetSnapshot [Controller Server] ",
    "[It] Controller Service [Controller Server] CreateVolume should create volume from an existing source snapshot",
    "[It] Controller Service [Controller Server] CreateVolume should fail when the volume source snapshot is not found",
    // CLONE_VOLUME
    "[It] Controller Service [Controller Server] CreateVolume should create volume from an existing source volume",
    "[It] Controller Service [Controller Server] CreateVolume should fail when the volume source volume is not found",
    // The GroupController service
    "[It] GroupController Service ",
    // MODIFY_VOLUME
    "[It] ModifyVolume [Controller Server] ",
    "[It] Controller Service [Controller Server] CreateVolume should create volume with a volume attribute class",
    "[It] Controller Service [Controller Server] CreateVolume should not create volume with an invalid volume attribute class",
    // GET_VOLUME_HEALTH, LIST_VOLUME_HEALTH, the node's GET_VOLUME_HEALTH, GET_STORAGE_HEALTH
    "[It] ControllerGetVolumeHealth [Controller Server] ",
    "[It] ControllerListVolumeHealth [Controller Server] ",
    "[It] Node Service NodeGetVolumeHealth ",
    "[It] Node Service NodeGetStorageHealth ",
    // Pending (XIt) in csi-sanity v5.6.0 itself
    "[It] Controller Service [Controller Server] ListVolumes pagination should detect volumes added between pages",
];

/// Skipped without `--attach-required` (PUBLISH_UNPUBLISH_VOLUME: the loop device is
/// made at NodeStageVolume, there is no attach step).
const EXPECTED_SKIPS_WITHOUT_ATTACH: &[&str] = &[
    "[It] Controller Service [Controller Server] ControllerPublishVolume ",
    "[It] Controller Service [Controller Server] volume lifecycle ",
    "[It] Controller Service [Controller Server] ControllerUnpublishVolume ",
];

/// Skipped with `--attach-required`: none beyond [`EXPECTED_SKIPS`] (PUBLISH_READONLY is
/// advertised too, so the incompatible re-publish spec runs).
const EXPECTED_SKIPS_WITH_ATTACH: &[&str] = &[];

/// The publish specs that must pass under `--attach-required`.
const PUBLISH_SPECS: &[&str] = &[
    "[It] Controller Service [Controller Server] ControllerPublishVolume ",
    "[It] Controller Service [Controller Server] volume lifecycle ",
    "[It] Controller Service [Controller Server] ControllerUnpublishVolume ",
];

struct Pass {
    name: &'static str,
    access_type: &'static str,
    parameters: Option<&'static str>,
    /// `--attach-required`.
    attach: bool,
}

fn csi_sanity() -> Option<PathBuf> {
    let path = std::env::var_os("REKUBE_CSI_SANITY")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("bin/csi-sanity-{CSI_SANITY_VERSION}")));
    path.is_file().then_some(path)
}

/// Kills the driver (SIGTERM, then SIGKILL) when the test ends, pass or fail.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `<testcase>` of ginkgo's JUnit report: its name and status.
fn junit_cases(xml: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(
            tag[start..start + len]
                .replace("&#34;", "\"")
                .replace("&amp;", "&")
                .replace("&#39;", "'"),
        )
    };
    xml.split("<testcase")
        .skip(1)
        .filter_map(|tag| {
            let head = &tag[..tag.find('>')?];
            Some((attr(head, "name")?, attr(head, "status")?))
        })
        .collect()
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file"))
            && Path::new(backing.trim_end()).starts_with(dir)
        {
            found.push(format!(
                "{} -> {}",
                entry.file_name().to_string_lossy(),
                backing.trim_end()
            ));
        }
    }
    found
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    rekube_csi::mountinfo::parse(&text)
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn run(pass: Pass) {
    if !nix::unistd::geteuid().is_root() {
        return missing_prerequisite("csi-sanity needs root (loop devices, mounts)");
    }
    let Some(sanity) = csi_sanity() else {
        return missing_prerequisite(&format!(
            "no csi-sanity {CSI_SANITY_VERSION} in {}: run e2e/scripts/build-kubernetes.sh csi-sanity",
            cache_dir().join("bin").display()
        ));
    };
    let tmp = tempfile::Builder::new()
        .prefix("rekube-csi-sanity-")
        .tempdir()
        .unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let socket = dir.join("csi.sock");
    let state = dir.join("state");
    let started = Instant::now();
    let log = dir.join("rekube-csi.log");
    let driver = Driver(
        Command::new(env!("CARGO_BIN_EXE_rekube-csi"))
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args([
                "--node-id",
                "sanity-node",
                "--capacity",
                "1Gi",
                "--max-volumes-per-node",
                // The attach limit spec publishes this many volumes and one more.
                if pass.attach { "4" } else { "16" },
            ])
            .args(pass.attach.then_some("--attach-required"))
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start rekube-csi"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "rekube-csi did not listen on {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let junit = dir.join("junit.xml");
    let mut command = Command::new(&sanity);
    command
        .arg(format!("--csi.endpoint=unix://{}", socket.display()))
        .arg(format!(
            "--csi.stagingdir={}",
            dir.join("staging").display()
        ))
        .arg(format!("--csi.mountdir={}", dir.join("mount").display()))
        .arg(format!("--csi.testvolumesize={}", 64 * MIB))
        .arg(format!("--csi.testvolumeexpandsize={}", 128 * MIB))
        .arg(format!("--csi.testvolumeaccesstype={}", pass.access_type))
        .arg(format!("--ginkgo.junit-report={}", junit.display()))
        .arg("--ginkgo.no-color");
    if pass.attach {
        command.arg("--csi.testnodevolumeattachlimit");
    }
    if let Some(parameters) = pass.parameters {
        let file = dir.join("parameters.yaml");
        std::fs::write(&file, parameters).unwrap();
        command.arg(format!("--csi.testvolumeparameters={}", file.display()));
    }
    let output = command.output().expect("run csi-sanity");
    let elapsed = started.elapsed();
    drop(driver);

    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| {
        panic!(
            "csi-sanity wrote no report {} ({e}): {}\n{}",
            junit.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let cases = junit_cases(&xml);
    let count = |status: &str| cases.iter().filter(|(_, s)| s == status).count();
    let (passed, skipped, pending) = (count("passed"), count("skipped"), count("pending"));
    let failed: Vec<&str> = cases
        .iter()
        .filter(|(_, s)| !matches!(s.as_str(), "passed" | "skipped" | "pending"))
        .map(|(n, _)| n.as_str())
        .collect();
    println!(
        "csi-sanity ({}): {} specs run, {passed} passed, {} skipped ({pending} of them pending in csi-sanity itself), {} failed, in {:.1}s",
        pass.name,
        passed + failed.len(),
        skipped + pending,
        failed.len(),
        elapsed.as_secs_f64()
    );
    for (name, status) in &cases {
        if status != "passed" {
            println!("  {status}: {name}");
        }
    }
    assert_eq!(
        failed,
        KNOWN_FAILURES,
        "csi-sanity ({}) failures:\n{}\nrekube-csi's log:\n{}",
        pass.name,
        String::from_utf8_lossy(&output.stdout),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(passed > 0, "csi-sanity ran no spec: {xml}");
    let pass_skips = if pass.attach {
        EXPECTED_SKIPS_WITH_ATTACH
    } else {
        EXPECTED_SKIPS_WITHOUT_ATTACH
    };
    let unexpected: Vec<&str> = cases
        .iter()
        .filter(|(n, s)| {
            matches!(s.as_str(), "skipped" | "pending")
                && !EXPECTED_SKIPS
                    .iter()
                    .chain(pass_skips)
                    .any(|p| n.starts_with(p))
        })
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        unexpected,
        Vec::<&str>::new(),
        "csi-sanity ({}) skipped specs it should run",
        pass.name
    );

    // GET_CAPACITY is advertised: csi-sanity's GetCapacity spec runs and passes in every
    // pass (the publisher's CSIStorageCapacity figures come from it).
    let capacity: Vec<&(String, String)> = cases
        .iter()
        .filter(|(n, _)| n.contains("GetCapacity"))
        .collect();
    println!("  the GetCapacity specs: {capacity:?}");
    assert!(
        !capacity.is_empty() && capacity.iter().all(|(_, s)| s == "passed"),
        "csi-sanity ({}) GetCapacity specs: {capacity:?}",
        pass.name
    );

    if pass.attach {
        let publish_passed = cases
            .iter()
            .filter(|(n, s)| s == "passed" && PUBLISH_SPECS.iter().any(|p| n.starts_with(p)))
            .count();
        println!("  the publish specs: {publish_passed} passed");
        // 7 ControllerPublishVolume (no volume id, no node id, no capability, the attach
        // limit, an unknown volume, an unknown node, an incompatible re-publish), 2 volume
        // lifecycle, 1 ControllerUnpublishVolume.
        assert_eq!(
            publish_passed, 10,
            "csi-sanity ({}) ran {publish_passed} publish specs, want 10",
            pass.name
        );
    }

    assert_eq!(loops_under(&dir), Vec::<String>::new(), "loop devices left");
    assert_eq!(mounts_under(&dir), Vec::<PathBuf>::new(), "mounts left");
    for sub in ["volumes", "images", "hostpath"] {
        let left: Vec<_> = std::fs::read_dir(state.join(sub))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(left, Vec::<PathBuf>::new(), "{sub} left in the state dir");
    }
}

#[test]
fn csi_sanity_local_disk_mount() {
    run(Pass {
        name: "local-disk, mount",
        access_type: "mount",
        parameters: None,
        attach: false,
    });
}

#[test]
fn csi_sanity_local_disk_block() {
    run(Pass {
        name: "local-disk, block",
        access_type: "block",
        parameters: None,
        attach: false,
    });
}

#[test]
fn csi_sanity_hostpath() {
    run(Pass {
        name: "hostpath",
        access_type: "mount",
        parameters: Some("type: hostpath\n"),
        attach: false,
    });
}

#[test]
fn csi_sanity_local_disk_attach_required() {
    run(Pass {
        name: "local-disk, mount, --attach-required",
        access_type: "mount",
        parameters: None,
        attach: true,
    });
}
