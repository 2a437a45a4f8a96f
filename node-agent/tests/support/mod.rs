//! Test harness for the image service, with no Docker: a real OCI registry (Debian's
//! `docker-registry`, `/usr/bin/docker-registry`) started on 127.0.0.1 with a random
//! port and a temporary storage directory (optionally behind htpasswd basic auth,
//! generated with `htpasswd -B` from apache2-utils), and test images built from
//! Debian's `busybox-static` (`/bin/busybox`) and pushed to it with oci-client.
//!
//! The busybox image has two layers: the base (busybox, its applet symlinks, `/etc`,
//! `/tmp`, a file and a directory for the second layer to delete and make opaque) and
//! an upper layer with a whiteout (`etc/.wh.removed`) and an opaque directory
//! (`data/opaque/.wh..wh..opq`). Variants: gzip, zstd or plain layers, OCI or Docker
//! v2 manifests, and a multi-platform index. Both `e2e/scripts/bootstrap.sh` and the
//! CI install the packages.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use rekube_node_agent::image::Digest;
use rekube_node_agent::image::spec::*;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const BUSYBOX: &str = "/bin/busybox";
pub const APPLETS: &[&str] = &["sh", "echo", "ls", "cat", "true", "sleep"];

/// A docker-registry process; killed and reaped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub auth: Option<(String, String)>,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(auth: Option<(String, String)>) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} missing: apt-get install docker-registry (e2e/scripts/bootstrap.sh)"
        );
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            );
            if let Some((user, password)) = &auth {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils) runs");
                assert!(out.status.success());
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, out.stdout).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: rekube-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry starts");
            let mut reg = Registry {
                child,
                port,
                dir,
                auth: auth.clone(),
            };
            if reg.wait_ready() {
                return reg;
            }
            // Lost the port race, or failed: try another port.
        }
        panic!("docker-registry did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `127.0.0.1:PORT`.
    pub fn domain(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's file for a blob (to corrupt it).
    pub fn blob_data(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn client(&self) -> (Client, RegistryAuth) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = match &self.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        (client, auth)
    }

    /// Pushes a blob (idempotent).
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let (client, auth) = self.client();
        let r = oci_client::Reference::with_tag(self.domain(), repo.into(), "latest".into());
        client
            .auth(&r, &auth, oci_client::RegistryOperation::Push)
            .await
            .unwrap();
        let digest = Digest::of(data);
        client
            .push_blob(&r, data.to_vec(), &digest.to_string())
            .await
            .unwrap();
        digest
    }

    /// Pushes a manifest document under `reference` (a tag or a digest).
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Digest {
        let (client, auth) = self.client();
        let r = if reference.starts_with("sha256:") {
            oci_client::Reference::with_digest(self.domain(), repo.into(), reference.into())
        } else {
            oci_client::Reference::with_tag(self.domain(), repo.into(), reference.into())
        };
        client
            .auth(&r, &auth, oci_client::RegistryOperation::Push)
            .await
            .unwrap();
        client
            .push_manifest_raw(&r, body.to_vec(), media_type.parse().unwrap())
            .await
            .unwrap();
        Digest::of(body)
    }

    /// Pushes `image` as `repo:tag`; returns the manifest digest.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        image: &TestImage,
        kind: ManifestKind,
    ) -> Digest {
        self.push_blob(repo, &image.config).await;
        for l in &image.layers {
            self.push_blob(repo, &l.blob).await;
        }
        let (media_type, body) = image.manifest(kind);
        self.push_manifest(repo, tag, media_type, &body).await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    Gzip,
    Zstd,
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Oci,
    Docker,
}

pub struct TestLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: &'static str,
}

pub struct TestImage {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<TestLayer>,
    pub docker: bool,
}

impl TestImage {
    /// The image manifest of this image.
    pub fn manifest(&self, kind: ManifestKind) -> (&'static str, Vec<u8>) {
        let (mt, config_mt) = match kind {
            ManifestKind::Oci => (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_CONFIG),
            ManifestKind::Docker => (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_CONFIG),
        };
        let m = Manifest {
            schema_version: 2,
            media_type: Some(mt.to_string()),
            config: Descriptor {
                media_type: config_mt.into(),
                digest: self.config_digest.clone(),
                size: self.config.len() as u64,
                platform: None,
                annotations: None,
            },
            layers: self
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: if kind == ManifestKind::Docker {
                        match l.media_type {
                            MEDIA_TYPE_OCI_LAYER_GZIP => MEDIA_TYPE_DOCKER_LAYER_GZIP,
                            MEDIA_TYPE_OCI_LAYER => MEDIA_TYPE_DOCKER_LAYER,
                            other => other,
                        }
                    } else {
                        l.media_type
                    }
                    .into(),
                    digest: l.digest.clone(),
                    size: l.blob.len() as u64,
                    platform: None,
                    annotations: None,
                })
                .collect(),
            annotations: None,
        };
        (mt, serde_json::to_vec(&m).unwrap())
    }
}

/// A tar built entry by entry (GNU headers, root-owned).
#[derive(Default)]
pub struct TarBuilder {
    b: Option<tar::Builder<Vec<u8>>>,
}

impl TarBuilder {
    fn builder(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.b.get_or_insert_with(|| tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode);
        h.set_size(0);
        self.builder().append_data(&mut h, path, &b""[..]).unwrap();
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode);
        h.set_size(data.len() as u64);
        self.builder().append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777);
        h.set_size(0);
        self.builder().append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.builder();
        self.b.take().unwrap().into_inner().unwrap()
    }
}

pub fn compress(tar: &[u8], layering: Layering) -> (Vec<u8>, &'static str) {
    use std::io::Write;
    match layering {
        Layering::Plain => (tar.to_vec(), MEDIA_TYPE_OCI_LAYER),
        Layering::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            (gz.finish().unwrap(), MEDIA_TYPE_OCI_LAYER_GZIP)
        }
        Layering::Zstd => (
            ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest),
            MEDIA_TYPE_OCI_LAYER_ZSTD,
        ),
    }
}

/// An image from layer tars and a container config.
pub fn image_from(
    tars: Vec<Vec<u8>>,
    layering: Layering,
    config: serde_json::Value,
    arch: &str,
) -> TestImage {
    let layers: Vec<TestLayer> = tars
        .into_iter()
        .map(|tar| {
            let (blob, media_type) = compress(&tar, layering);
            TestLayer {
                diff_id: Digest::of(&tar),
                digest: Digest::of(&blob),
                tar,
                blob,
                media_type,
            }
        })
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        },
    }))
    .unwrap();
    TestImage {
        config_digest: Digest::of(&config),
        config,
        layers,
        docker: false,
    }
}

/// The busybox layers (uncompressed tars), built once.
pub fn busybox_tars() -> &'static (Vec<u8>, Vec<u8>) {
    static TARS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    TARS.get_or_init(|| {
        let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
            panic!("{BUSYBOX}: {e}: apt-get install busybox-static (e2e/scripts/bootstrap.sh)")
        });
        let mut base =
            TarBuilder::default()
                .dir("bin/", 0o755)
                .file("bin/busybox", 0o755, &busybox);
        for applet in APPLETS {
            base = base.symlink(&format!("bin/{applet}"), "busybox");
        }
        let base = base
            .dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
            .file("etc/removed", 0o644, b"lower\n")
            .dir("tmp/", 0o1777)
            .dir("data/", 0o755)
            .dir("data/opaque/", 0o755)
            .file("data/opaque/lower", 0o644, b"lower\n")
            .file("data/kept", 0o644, b"lower\n")
            .finish();
        let upper = TarBuilder::default()
            .dir("etc/", 0o755)
            .file("etc/.wh.removed", 0o644, b"")
            .file("etc/added", 0o644, b"upper\n")
            .dir("data/", 0o755)
            .dir("data/opaque/", 0o755)
            .file("data/opaque/.wh..wh..opq", 0o644, b"")
            .file("data/opaque/upper", 0o644, b"upper\n")
            .finish();
        (base, upper)
    })
}

/// The busybox image's container config.
pub fn busybox_config() -> serde_json::Value {
    serde_json::json!({
        "Cmd": ["sh"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "WorkingDir": "/",
        "User": "0:0",
        "StopSignal": "SIGTERM",
        "ExposedPorts": {"8080/tcp": {}},
        "Labels": {"io.rekube.test": "busybox"},
    })
}

/// The busybox test image, compressed as asked (each variant built once).
pub fn busybox(layering: Layering) -> &'static TestImage {
    static GZ: OnceLock<TestImage> = OnceLock::new();
    static ZST: OnceLock<TestImage> = OnceLock::new();
    static PLAIN: OnceLock<TestImage> = OnceLock::new();
    let cell = match layering {
        Layering::Gzip => &GZ,
        Layering::Zstd => &ZST,
        Layering::Plain => &PLAIN,
    };
    cell.get_or_init(|| {
        let (base, upper) = busybox_tars();
        image_from(
            vec![base.clone(), upper.clone()],
            layering,
            busybox_config(),
            "amd64",
        )
    })
}

/// An index with `entries` (manifest media type, digest, size, architecture).
pub fn index(media_type: &str, entries: &[(&str, &Digest, usize, &str)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries.iter().map(|(mt, d, size, arch)| serde_json::json!({
            "mediaType": mt, "digest": d.to_string(), "size": size,
            "platform": {"os": "linux", "architecture": arch},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// A tiny single-layer image (for import and GC tests): one file with `content`.
pub fn tiny_image(content: &[u8]) -> TestImage {
    let tar = TarBuilder::default()
        .dir("data/", 0o755)
        .file("data/blob", 0o644, content)
        .finish();
    image_from(
        vec![tar],
        Layering::Gzip,
        serde_json::json!({"Cmd": ["true"]}),
        "amd64",
    )
}

/// An OCI image layout tarball holding `images` (each with its index annotations).
pub fn oci_layout(images: &[(&TestImage, Vec<(&str, &str)>)]) -> Vec<u8> {
    let mut tar = TarBuilder::default()
        .file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .dir("blobs/", 0o755)
        .dir("blobs/sha256/", 0o755);
    let mut manifests = Vec::new();
    for (image, annotations) in images {
        let (mt, manifest) = image.manifest(ManifestKind::Oci);
        let md = Digest::of(&manifest);
        tar = tar
            .file(&format!("blobs/sha256/{}", md.hex()), 0o644, &manifest)
            .file(
                &format!("blobs/sha256/{}", image.config_digest.hex()),
                0o644,
                &image.config,
            );
        for l in &image.layers {
            tar = tar.file(&format!("blobs/sha256/{}", l.digest.hex()), 0o644, &l.blob);
        }
        manifests.push(serde_json::json!({
            "mediaType": mt, "digest": md.to_string(), "size": manifest.len(),
            "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        }));
    }
    let index =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap();
    tar.file("index.json", 0o644, &index).finish()
}

/// A docker-archive tarball as `docker save` (before 25) writes it: uncompressed
/// layers in `<id>/layer.tar`, the config as `<hex>.json`, and `manifest.json`.
pub fn docker_archive(images: &[(&TestImage, Vec<&str>)]) -> Vec<u8> {
    let mut tar = TarBuilder::default();
    let mut manifest = Vec::new();
    for (image, tags) in images {
        let config_name = format!("{}.json", image.config_digest.hex());
        tar = tar.file(&config_name, 0o644, &image.config);
        let mut layers = Vec::new();
        for l in &image.layers {
            let dir = &l.diff_id.hex()[..16];
            tar =
                tar.dir(&format!("{dir}/"), 0o755)
                    .file(&format!("{dir}/layer.tar"), 0o644, &l.tar);
            layers.push(format!("{dir}/layer.tar"));
        }
        manifest
            .push(serde_json::json!({"Config": config_name, "RepoTags": tags, "Layers": layers}));
    }
    tar.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).unwrap(),
    )
    .finish()
}

/// Mounts an overlay of `lower` (top first) read-only at a new temp dir; unmounted on
/// drop.
pub struct Overlay {
    pub dir: tempfile::TempDir,
}

impl Overlay {
    pub fn mount(lower: &[PathBuf]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lowerdir = lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = std::ffi::CString::new(format!("lowerdir={lowerdir}")).unwrap();
        rustix::mount::mount(
            "overlay",
            dir.path(),
            "overlay",
            rustix::mount::MountFlags::RDONLY,
            opts.as_c_str(),
        )
        .expect("mount overlay (needs root)");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
    }
}
