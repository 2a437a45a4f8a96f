//! Pulls from a real registry on loopback (Debian's docker-registry), with images built
//! from busybox-static: tags and digests, gzip/zstd/plain layers, OCI and Docker
//! manifests, manifest lists, basic auth, digest verification, whiteouts through a real
//! overlayfs mount, the pull policies and backoff of the image manager, and the CLI.
//! Runs as root (mknod, trusted xattrs, mount), as the node agent does.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekube_node_agent::image::credentials::{RegistryCredential, parse_pull_secret};
use rekube_node_agent::image::manager::{Clock, ImageManager};
use rekube_node_agent::image::policy::{ImageReason, PullPolicy};
use rekube_node_agent::image::pull::{PullError, pull_image};
use rekube_node_agent::image::spec::*;
use rekube_node_agent::image::{Digest, Reference, Store};
use support::*;

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images")).unwrap();
    (dir, store)
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[tokio::test]
async fn pull_by_tag_then_by_digest() {
    let reg = Registry::start();
    let img = busybox(Layering::Gzip);
    let manifest = reg
        .push_image("busybox", "1.36", img, ManifestKind::Oci)
        .await;
    let (_d, store) = new_store();

    let pulled = pull_image(&store, &r(&format!("{}/busybox:1.36", reg.domain())), &[])
        .await
        .unwrap();
    assert_eq!(pulled.id, img.config_digest);
    assert_eq!(pulled.names, vec![format!("{}/busybox:1.36", reg.domain())]);
    assert_eq!(
        pulled.image_ref(),
        format!("{}/busybox@{manifest}", reg.domain())
    );
    assert_eq!(pulled.manifest, manifest);
    assert_eq!(
        pulled.layers,
        vec![img.layers[0].diff_id.clone(), img.layers[1].diff_id.clone()]
    );
    let c = pulled.config.config.clone().unwrap();
    assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
    assert_eq!(c.entrypoint, None);
    assert_eq!(c.working_dir.as_deref(), Some("/"));
    assert_eq!(c.user.as_deref(), Some("0:0"));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
    assert!(c.exposed_ports.unwrap().contains_key("8080/tcp"));
    assert_eq!(
        c.env.unwrap()[0],
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );

    // The base layer is busybox itself.
    let base = store.layer_dir(&pulled.layers[0]);
    assert_eq!(
        std::fs::read(base.join("bin/busybox")).unwrap(),
        std::fs::read(BUSYBOX).unwrap()
    );
    assert_eq!(
        std::fs::read_link(base.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    // Lowerdirs: top layer first.
    assert_eq!(
        store.lower_dirs(&pulled),
        vec![store.layer_dir(&pulled.layers[1]), base.clone()]
    );

    // By digest, into an empty store: the same image.
    let (_d2, store2) = new_store();
    let by_digest = pull_image(
        &store2,
        &r(&format!("{}/busybox@{manifest}", reg.domain())),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(by_digest.id, pulled.id);
    assert_eq!(
        by_digest.names,
        vec![format!("{}/busybox@{manifest}", reg.domain())]
    );
    // Asking for the digest finds the image pulled by tag.
    assert_eq!(
        store
            .get(&r(&format!("{}/busybox@{manifest}", reg.domain())))
            .unwrap()
            .unwrap()
            .id,
        pulled.id
    );
    // A wrong digest for an existing repository is the registry's "manifest unknown".
    let missing = format!("{}/busybox@{}", reg.domain(), Digest::of(b"nope"));
    let err = pull_image(&store2, &r(&missing), &[]).await.unwrap_err();
    assert!(err.to_string().contains("manifest unknown"), "{err}");
}

#[tokio::test]
async fn layer_compressions_and_manifest_kinds() {
    let reg = Registry::start();
    let (_d, store) = new_store();
    let mut ids = Vec::new();
    for (i, (layering, kind)) in [
        (Layering::Zstd, ManifestKind::Oci),
        (Layering::Plain, ManifestKind::Oci),
        (Layering::Gzip, ManifestKind::Docker),
    ]
    .into_iter()
    .enumerate()
    {
        let img = busybox(layering);
        let tag = format!("v{i}");
        let manifest = reg.push_image("busybox", &tag, img, kind).await;
        let pulled = pull_image(&store, &r(&format!("{}/busybox:{tag}", reg.domain())), &[])
            .await
            .unwrap();
        assert_eq!(pulled.manifest, manifest, "{layering:?} {kind:?}");
        ids.push(pulled.id);
        for l in &img.layers {
            assert!(store.has_blob(&l.digest), "{layering:?} blob stored");
        }
    }
    // Same uncompressed layers and config: one image ID, one set of unpacked layers.
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let images = store.list().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].names.len(), 3);
    assert_eq!(images[0].repo_digests.len(), 3);
    assert_eq!(
        std::fs::read_dir(store.root().join("layers/sha256"))
            .unwrap()
            .count(),
        2
    );
}

#[tokio::test]
async fn manifest_list_resolves_linux_amd64() {
    let reg = Registry::start();
    let amd64 = busybox(Layering::Gzip);
    let (_, amd64_manifest) = amd64.manifest(ManifestKind::Docker);
    let amd64_digest = reg
        .push_image(
            "multi",
            &Digest::of(&amd64_manifest).to_string(),
            amd64,
            ManifestKind::Docker,
        )
        .await;
    // An arm64 image with different content, listed first.
    let arm = image_from(
        vec![TarBuilder::default().file("arm", 0o644, b"arm64").finish()],
        Layering::Gzip,
        serde_json::json!({}),
        "arm64",
    );
    let (_, arm_manifest) = arm.manifest(ManifestKind::Docker);
    let arm_digest = reg
        .push_image(
            "multi",
            &Digest::of(&arm_manifest).to_string(),
            &arm,
            ManifestKind::Docker,
        )
        .await;
    for (mt, entry_mt, tag) in [
        (
            MEDIA_TYPE_DOCKER_MANIFEST_LIST,
            MEDIA_TYPE_DOCKER_MANIFEST,
            "list",
        ),
        (MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST, "index"),
    ] {
        let list = index(
            mt,
            &[
                (entry_mt, &arm_digest, arm_manifest.len(), "arm64"),
                (entry_mt, &amd64_digest, amd64_manifest.len(), "amd64"),
            ],
        );
        let list_digest = reg.push_manifest("multi", tag, mt, &list).await;
        let (_d, store) = new_store();
        let pulled = pull_image(&store, &r(&format!("{}/multi:{tag}", reg.domain())), &[])
            .await
            .unwrap();
        assert_eq!(pulled.manifest, amd64_digest, "{tag}");
        assert_eq!(pulled.id, amd64.config_digest, "{tag}");
        // The repo digest is the list's, as containerd reports it.
        assert_eq!(
            pulled.image_ref(),
            format!("{}/multi@{list_digest}", reg.domain()),
            "{tag}"
        );
        assert!(!store.has_blob(&arm.config_digest));
    }
    // A list without linux/amd64.
    let only_arm = index(
        MEDIA_TYPE_OCI_INDEX,
        &[(
            MEDIA_TYPE_DOCKER_MANIFEST,
            &arm_digest,
            arm_manifest.len(),
            "arm64",
        )],
    );
    reg.push_manifest("multi", "arm-only", MEDIA_TYPE_OCI_INDEX, &only_arm)
        .await;
    let (_d, store) = new_store();
    let err = pull_image(&store, &r(&format!("{}/multi:arm-only", reg.domain())), &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no manifest for linux/amd64"),
        "{err}"
    );
}

#[tokio::test]
async fn whiteouts_through_a_real_overlay_and_busybox_runs() {
    let reg = Registry::start();
    reg.push_image(
        "busybox",
        "latest",
        busybox(Layering::Gzip),
        ManifestKind::Oci,
    )
    .await;
    let (_d, store) = new_store();
    let pulled = pull_image(&store, &r(&format!("{}/busybox", reg.domain())), &[])
        .await
        .unwrap();
    let overlay = Overlay::mount(&store.lower_dirs(&pulled));
    let root = overlay.path();
    // etc/.wh.removed deleted the base layer's file; the upper layer added one.
    assert!(!root.join("etc/removed").exists());
    assert!(root.join("etc/passwd").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/added")).unwrap(),
        "upper\n"
    );
    // data/opaque is opaque: only the upper layer's content; data/ is merged.
    let mut opaque: Vec<_> = std::fs::read_dir(root.join("data/opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    opaque.sort();
    assert_eq!(opaque, vec!["upper"]);
    assert!(root.join("data/kept").exists());
    // The image's busybox runs in it.
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", "echo hello from $(cat /etc/added)"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from upper\n",
        "{out:?}"
    );
}

#[tokio::test]
async fn basic_auth_from_a_pull_secret() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    reg.push_image(
        "private/busybox",
        "1.36",
        busybox(Layering::Gzip),
        ManifestKind::Oci,
    )
    .await;
    let image = r(&format!("{}/private/busybox:1.36", reg.domain()));
    let (_d, store) = new_store();

    // Anonymous: the registry's own message.
    let err = pull_image(&store, &image, &[]).await.unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("server message: unauthorized: authentication required"),
        "{err}"
    );

    // Wrong password.
    let wrong = vec![RegistryCredential {
        registry: reg.domain(),
        username: "alice".into(),
        password: "nope".into(),
    }];
    let err = pull_image(&store, &image, &wrong).await.unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");
    assert!(store.list().unwrap().is_empty());

    // A kubernetes.io/dockerconfigjson Secret's data, with the wrong entry tried second.
    let secret = format!(
        r#"{{"auths":{{"{d}":{{"username":"alice","password":"s3cret"}},"{d}/private":{{"username":"alice","password":"stale"}}}}}}"#,
        d = reg.domain()
    );
    let creds = parse_pull_secret(&BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        secret.into_bytes(),
    )]))
    .unwrap();
    let pulled = pull_image(&store, &image, &creds).await.unwrap();
    assert_eq!(pulled.id, busybox(Layering::Gzip).config_digest);
}

#[tokio::test]
async fn corrupt_blobs_are_detected() {
    let reg = Registry::start();
    let img = busybox(Layering::Gzip);
    reg.push_image("busybox", "bad", img, ManifestKind::Oci)
        .await;
    // Flip bytes in the registry's copy of the base layer (same length).
    let path = reg.blob_data(&img.layers[0].digest);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&path, &data).unwrap();
    let (_d, store) = new_store();
    let err = pull_image(&store, &r(&format!("{}/busybox:bad", reg.domain())), &[])
        .await
        .unwrap_err();
    assert!(err.is_verification_failure(), "{err}");
    assert!(
        err.to_string().contains(&img.layers[0].digest.to_string()),
        "{err}"
    );
    assert!(!store.has_blob(&img.layers[0].digest));
    assert!(store.list().unwrap().is_empty());
    // Nothing half-written is left once pruned.
    store.prune().unwrap();
    assert_eq!(
        std::fs::read_dir(store.root().join("ingest"))
            .unwrap()
            .count(),
        0
    );

    // A corrupt config is caught too.
    let reg = Registry::start();
    reg.push_image("busybox", "bad", img, ManifestKind::Oci)
        .await;
    std::fs::write(
        reg.blob_data(&img.config_digest),
        vec![b'{'; img.config.len()],
    )
    .unwrap();
    let (_d, store) = new_store();
    let err = pull_image(&store, &r(&format!("{}/busybox:bad", reg.domain())), &[])
        .await
        .unwrap_err();
    assert!(err.is_verification_failure(), "{err}");
}

/// A clock the test moves.
struct FakeClock(Mutex<Instant>);

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

impl FakeClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

#[tokio::test]
async fn pull_policies_and_backoff() {
    let reg = Registry::start();
    reg.push_image(
        "busybox",
        "1.36",
        busybox(Layering::Gzip),
        ManifestKind::Oci,
    )
    .await;
    let (_d, store) = new_store();
    let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
    let mgr = ImageManager::new(store, clock.clone());
    let image = format!("{}/busybox:1.36", reg.domain());

    // Never, absent.
    let err = mgr
        .ensure_image_exists("pod-1", &image, PullPolicy::Never, &[])
        .await
        .unwrap_err();
    assert_eq!(err.reason, ImageReason::ErrImageNeverPull);
    assert_eq!(
        err.message,
        format!("Container image {image:?} is not present with pull policy of Never")
    );
    assert_eq!(err.events[0].reason, "ErrImageNeverPull");

    // IfNotPresent pulls once...
    let ok = mgr
        .ensure_image_exists("pod-1", &image, PullPolicy::IfNotPresent, &[])
        .await
        .unwrap();
    assert!(
        ok.image_ref
            .starts_with(&format!("{}/busybox@sha256:", reg.domain()))
    );
    assert_eq!(
        ok.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec!["Pulling", "Pulled"]
    );
    let domain = reg.domain();
    drop(reg); // ...and never again: the registry is gone.
    let again = mgr
        .ensure_image_exists("pod-2", &image, PullPolicy::IfNotPresent, &[])
        .await
        .unwrap();
    assert_eq!(again.image_ref, ok.image_ref);
    assert_eq!(
        again.events[0].message,
        format!("Container image {image:?} already present on machine")
    );
    // Never, present: used.
    mgr.ensure_image_exists("pod-2", &image, PullPolicy::Never, &[])
        .await
        .unwrap();

    // Always goes to the (gone) registry: ErrImagePull, then ImagePullBackOff with the
    // previous error, 10 s then 20 s.
    let first = mgr
        .ensure_image_exists("pod-3", &image, PullPolicy::Always, &[])
        .await
        .unwrap_err();
    assert_eq!(first.reason, ImageReason::ErrImagePull);
    assert!(
        first.message.starts_with(&format!(
            "failed to pull and unpack image \"{domain}/busybox:1.36\""
        )),
        "{}",
        first.message
    );
    assert_eq!(first.events.last().unwrap().reason, "Failed");
    let backoff = mgr
        .ensure_image_exists("pod-3", &image, PullPolicy::Always, &[])
        .await
        .unwrap_err();
    assert_eq!(backoff.reason, ImageReason::ImagePullBackOff);
    assert_eq!(
        backoff.message,
        format!(
            "Back-off pulling image {image:?}: ErrImagePull: {}",
            first.message
        )
    );
    assert_eq!(
        backoff.events[0].message,
        format!("Back-off pulling image {image:?}")
    );
    // Another pod is not in backoff.
    let other = mgr
        .ensure_image_exists("pod-4", &image, PullPolicy::Always, &[])
        .await
        .unwrap_err();
    assert_eq!(other.reason, ImageReason::ErrImagePull);
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        mgr.ensure_image_exists("pod-3", &image, PullPolicy::Always, &[])
            .await
            .unwrap_err()
            .reason,
        ImageReason::ImagePullBackOff
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        mgr.ensure_image_exists("pod-3", &image, PullPolicy::Always, &[])
            .await
            .unwrap_err()
            .reason,
        ImageReason::ErrImagePull
    );
    clock.advance(Duration::from_secs(19));
    assert_eq!(
        mgr.ensure_image_exists("pod-3", &image, PullPolicy::Always, &[])
            .await
            .unwrap_err()
            .reason,
        ImageReason::ImagePullBackOff
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        mgr.ensure_image_exists("pod-3", &image, PullPolicy::Always, &[])
            .await
            .unwrap_err()
            .reason,
        ImageReason::ErrImagePull
    );

    // An unparsable name.
    let bad = mgr
        .ensure_image_exists("pod-5", "Busybox", PullPolicy::Always, &[])
        .await
        .unwrap_err();
    assert_eq!(bad.reason, ImageReason::InvalidImageName);
    assert!(
        bad.message
            .starts_with("Failed to apply default image tag \"Busybox\": "),
        "{}",
        bad.message
    );
}

#[test]
fn cli_pull_list_rm() {
    let reg = Registry::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(reg.push_image(
        "busybox",
        "1.36",
        busybox(Layering::Zstd),
        ManifestKind::Oci,
    ));
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rekube-node-agent"))
            .arg("image")
            .args(args)
            .arg("--root")
            .arg(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let image = format!("{}/busybox:1.36", reg.domain());
    let (ok, out, err) = cli(&["pull", &image]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("{}/busybox@sha256:", reg.domain())),
        "{out}"
    );
    let (ok, out, _) = cli(&["list"]);
    assert!(ok);
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("{}/busybox", reg.domain())),
        "{out}"
    );
    assert!(
        out.contains("1.36") && out.contains(busybox(Layering::Zstd).config_digest.short()),
        "{out}"
    );
    let (ok, out, _) = cli(&["rm", &image]);
    assert!(ok);
    assert_eq!(out.trim(), format!("Deleted: {image}"));
    let (_, out, _) = cli(&["list", "-q"]);
    assert_eq!(out, "");
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("layers/sha256"))
            .unwrap()
            .count(),
        0
    );
    let (ok, _, err) = cli(&["pull", &format!("{}/busybox:missing", reg.domain())]);
    assert!(!ok);
    assert!(err.contains("manifest unknown"), "{err}");
}
