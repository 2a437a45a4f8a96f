//! `image import` of OCI layouts and docker archives built in the test, and image GC
//! over a real store: thresholds from a table of disk usages, and one pass with the
//! real `statvfs` of the temp dir's filesystem.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, SystemTime};

use rekube_node_agent::image::gc::{FsStats, FsUsage, GcError, GcPolicy, Statvfs, garbage_collect};
use rekube_node_agent::image::import::{ImportError, import_archive};
use rekube_node_agent::image::store::ImageTimes;
use rekube_node_agent::image::{Digest, Reference, Store};
use support::*;

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images")).unwrap();
    (dir, store)
}

fn write(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn import_oci_layout() {
    let (dir, store) = new_store();
    let bb = busybox(Layering::Zstd);
    let tiny = tiny_image(b"tiny");
    let tar = oci_layout(&[
        (
            bb,
            vec![
                ("io.containerd.image.name", "docker.io/library/busybox:1.36"),
                ("org.opencontainers.image.ref.name", "1.36"),
            ],
        ),
        (
            &tiny,
            vec![(
                "org.opencontainers.image.ref.name",
                "localhost:5000/tiny:v1",
            )],
        ),
    ]);
    let path = write(&dir, "layout.tar", &tar);
    let images = import_archive(&store, &path, None, SystemTime::now()).unwrap();
    assert_eq!(images.len(), 2);
    let got = store.get(&r("busybox:1.36")).unwrap().unwrap();
    assert_eq!(got.id, bb.config_digest);
    assert_eq!(
        got.image_ref(),
        format!(
            "docker.io/library/busybox@{}",
            Digest::of(&bb.manifest(ManifestKind::Oci).1)
        )
    );
    assert_eq!(
        std::fs::read(store.layer_dir(&got.layers[0]).join("bin/busybox")).unwrap(),
        std::fs::read(BUSYBOX).unwrap()
    );
    assert_eq!(
        store.get(&r("localhost:5000/tiny:v1")).unwrap().unwrap().id,
        tiny.config_digest
    );

    // A bare tag is no name; --name gives one (one image in the archive).
    let only_tag = oci_layout(&[(&tiny, vec![("org.opencontainers.image.ref.name", "latest")])]);
    let path = write(&dir, "tag.tar", &only_tag);
    let err = import_archive(&store, &path, None, SystemTime::now()).unwrap_err();
    assert!(matches!(err, ImportError::NoName { .. }), "{err}");
    let images = import_archive(&store, &path, Some(&r("tiny:named")), SystemTime::now()).unwrap();
    assert!(
        images[0]
            .names
            .contains(&"docker.io/library/tiny:named".to_string())
    );

    // A gzip-compressed layout works the same.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &only_tag).unwrap();
    let path = write(&dir, "tag.tar.gz", &gz.finish().unwrap());
    import_archive(&store, &path, Some(&r("tiny:gz")), SystemTime::now()).unwrap();
    assert!(store.get(&r("tiny:gz")).unwrap().is_some());
}

#[test]
fn import_rejects_tampered_blobs() {
    let (dir, store) = new_store();
    let tiny = tiny_image(b"tiny");
    let mut tar = oci_layout(&[(&tiny, vec![("io.containerd.image.name", "tiny:v1")])]);
    // Flip a byte in the middle of the layer blob inside the archive (same length).
    let blob = &tiny.layers[0].blob;
    let at = tar
        .windows(blob.len())
        .position(|w| w == &blob[..])
        .unwrap()
        + blob.len() / 2;
    tar[at] ^= 0xff;
    let path = write(&dir, "bad.tar", &tar);
    let err = import_archive(&store, &path, None, SystemTime::now()).unwrap_err();
    assert!(err.to_string().contains("failed verification"), "{err}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn import_docker_archive_by_cli() {
    let dir = tempfile::tempdir().unwrap();
    let bb = busybox(Layering::Gzip);
    let tiny = tiny_image(b"tiny");
    let tar = docker_archive(&[
        (bb, vec!["busybox:1.36", "localhost:5000/busybox:1.36"]),
        (&tiny, vec!["tiny:v1"]),
    ]);
    let path = write(&dir, "docker.tar", &tar);
    let root = dir.path().join("images");
    let out = Command::new(env!("CARGO_BIN_EXE_rekube-node-agent"))
        .args(["image", "import"])
        .arg(&path)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "docker.io/library/busybox:1.36 {}",
            bb.config_digest
        )),
        "{stdout}"
    );
    let store = Store::open(&root).unwrap();
    let got = store
        .get(&r("localhost:5000/busybox:1.36"))
        .unwrap()
        .unwrap();
    assert_eq!(got.id, bb.config_digest);
    assert_eq!(got.names.len(), 2);
    assert_eq!(got.config.config.unwrap().cmd, Some(vec!["sh".to_string()]));
    // Layers were stored uncompressed, as the archive has them; same diff-ids.
    assert_eq!(
        got.layers,
        vec![bb.layers[0].diff_id.clone(), bb.layers[1].diff_id.clone()]
    );
    assert!(store.has_blob(&bb.layers[0].diff_id));
    assert_eq!(
        store.get(&r("tiny:v1")).unwrap().unwrap().id,
        tiny.config_digest
    );
}

/// Disk usage from a table row.
struct FakeFs(FsUsage);

impl FsStats for FakeFs {
    fn usage(&self) -> Result<FsUsage, GcError> {
        Ok(self.0)
    }
}

/// A store with three tiny images of ~100 kB each, last used at 1000, 2000, 3000.
fn gc_store(dir: &tempfile::TempDir) -> (Store, Vec<Digest>) {
    let store = Store::open(dir.path().join(format!("images-{}", rand_suffix()))).unwrap();
    let mut ids = Vec::new();
    for (i, last_used) in [(0u8, 3000), (1, 1000), (2, 2000)] {
        // Incompressible-ish content so sizes are comparable.
        let content: Vec<u8> = (0..100_000u32)
            .map(|x| (x.wrapping_mul(2654435761) >> (i + 7)) as u8)
            .collect();
        let img = tiny_image(&content);
        let path = write(dir, &format!("tiny{i}.tar"), &oci_layout(&[(&img, vec![])]));
        let stored = import_archive(
            &store,
            &path,
            Some(&r(&format!("tiny:{i}"))),
            SystemTime::now(),
        )
        .unwrap();
        store
            .set_times(
                &stored[0].id,
                ImageTimes {
                    first_detected: 10,
                    last_used,
                },
            )
            .unwrap();
        ids.push(stored[0].id.clone());
    }
    (store, ids)
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// How much a row asks GC to free.
enum Free {
    /// Usage below the high threshold: `available` bytes of 100 GB free.
    Below(u64),
    /// Over the threshold by this many bytes.
    Bytes(u64),
    /// Over by the size of the least recently used image plus a little: two must go.
    MoreThanLru,
}

#[test]
fn gc_thresholds_table() {
    // High 85%, low 84%: on 100 GB, usage ≥ 85% frees down to 16 GB available.
    let policy = GcPolicy {
        high_threshold_percent: 85,
        low_threshold_percent: 84,
        min_age: Duration::ZERO,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
    let gb = 1_000_000_000u64;
    // ids: [0] last used 3000, [1] at 1000 (least recent), [2] at 2000.
    // (free, in use, removed in order, enough freed)
    let cases: Vec<(Free, Vec<usize>, Vec<usize>, bool)> = vec![
        (Free::Below(20 * gb), vec![], vec![], true), // 80% used
        (Free::Below(16 * gb), vec![], vec![], true), // 84%
        (Free::Bytes(1), vec![], vec![1], true),      // the LRU image
        (Free::Bytes(1), vec![1], vec![2], true),     // LRU in use: the next one
        (Free::MoreThanLru, vec![], vec![1, 2], true), // two
        (Free::Bytes(10_000_000), vec![], vec![1, 2, 0], false), // all, still short
        (Free::Bytes(10_000_000), vec![0], vec![1, 2], false), // in use is kept
    ];
    for (i, (free, in_use, removed, ok)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = gc_store(&dir);
        let lru_size = store
            .list()
            .unwrap()
            .into_iter()
            .find(|img| img.id == ids[1])
            .unwrap()
            .size;
        let available = match free {
            Free::Below(available) => available,
            Free::Bytes(n) => 16 * gb - n,
            Free::MoreThanLru => 16 * gb - lru_size - 1000,
        };
        let in_use: HashSet<Digest> = in_use.iter().map(|&i| ids[i].clone()).collect();
        let fs = FakeFs(FsUsage {
            capacity: 100 * gb,
            available,
        });
        let result = garbage_collect(&store, &fs, &policy, &in_use, now);
        let want: Vec<Digest> = removed.iter().map(|&i| ids[i].clone()).collect();
        let left: HashSet<Digest> = store.list().unwrap().into_iter().map(|i| i.id).collect();
        for id in &want {
            assert!(!left.contains(id), "case {i}: {id} should be gone");
        }
        assert_eq!(left.len(), 3 - want.len(), "case {i}");
        match result {
            Ok(report) => {
                assert!(ok, "case {i}: expected an error");
                assert_eq!(report.removed, want, "case {i}");
                assert!(report.freed >= report.to_free, "case {i}");
            }
            Err(e) => {
                assert!(!ok, "case {i}: {e}");
                assert!(matches!(e, GcError::NotEnoughFreed { .. }), "{e}");
            }
        }
    }
}

#[test]
fn gc_with_the_real_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = gc_store(&dir);
    let fs = Statvfs(store.root().to_path_buf());
    let usage = fs.usage().unwrap();
    assert!(usage.capacity > 0 && usage.available <= usage.capacity);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
    // A 100% high threshold is never reached: nothing is removed.
    let lenient = GcPolicy {
        high_threshold_percent: 100,
        low_threshold_percent: 99,
        min_age: Duration::ZERO,
    };
    let report = garbage_collect(&store, &fs, &lenient, &HashSet::new(), now).unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(store.list().unwrap().len(), 3);
    // A 1% threshold is always reached and cannot be met by three small images: every
    // unused image goes, the one in use stays, and GC reports the shortfall.
    let strict = GcPolicy {
        high_threshold_percent: 1,
        low_threshold_percent: 0,
        min_age: Duration::ZERO,
    };
    let keep = HashSet::from([ids[0].clone()]);
    let err = garbage_collect(&store, &fs, &strict, &keep, now).unwrap_err();
    assert!(
        matches!(err, GcError::NotEnoughFreed { freed, .. } if freed > 150_000),
        "{err}"
    );
    let left: Vec<Digest> = store.list().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(left, vec![ids[0].clone()]);
    // The kept image is whole.
    let kept = store.get(&r("tiny:0")).unwrap().unwrap();
    assert!(store.layer_dir(&kept.layers[0]).join("data/blob").is_file());
}
