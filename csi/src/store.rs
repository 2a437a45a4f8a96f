//! The driver's volume records under `--state-dir`, so that a restarted driver knows its
//! volumes. Layout:
//!
//! ```text
//! <state-dir>/volumes/<id>.json   one record per volume (written atomically)
//! <state-dir>/images/<id>.img     local-disk: the sparse image file
//! <state-dir>/hostpath/<id>/      hostpath: the directory
//! ```
//!
//! Records are written to a temporary file, synced and renamed over the old one, then the
//! directory is synced: a crash leaves the old record or the new, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::parameters::VolumeKind;
use crate::publish::Publication;

/// What the driver knows of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub volume_id: String,
    /// The CreateVolume name.
    pub name: String,
    pub kind: VolumeKind,
    /// The image file's size (local-disk); what was asked for (hostpath, not enforced).
    pub capacity_bytes: u64,
    /// The node the volume is published to (ControllerPublishVolume, under
    /// `--attach-required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Publication>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume record {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// The records, in memory and on disk. Callers serialize access (the driver's lock).
#[derive(Debug)]
pub struct VolumeStore {
    root: PathBuf,
    records: BTreeMap<String, VolumeRecord>,
}

impl VolumeStore {
    /// Opens (making what is missing) the state dir and loads its records; temporary
    /// files of an interrupted write are removed.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        for dir in ["volumes", "images", "hostpath"] {
            let dir = state_dir.join(dir);
            fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        }
        let root = fs::canonicalize(state_dir).map_err(io("resolve", state_dir))?;
        let volumes = root.join("volumes");
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(&volumes).map_err(io("read", &volumes))? {
            let path = entry.map_err(io("read", &volumes))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => {
                    let text = fs::read(&path).map_err(io("read", &path))?;
                    let record: VolumeRecord =
                        serde_json::from_slice(&text).map_err(|source| StoreError::Decode {
                            path: path.clone(),
                            source,
                        })?;
                    records.insert(record.volume_id.clone(), record);
                }
                Some("tmp") => fs::remove_file(&path).map_err(io("remove", &path))?,
                _ => {}
            }
        }
        Ok(VolumeStore { root, records })
    }

    /// The state dir, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn get(&self, volume_id: &str) -> Option<&VolumeRecord> {
        self.records.get(volume_id)
    }

    /// Every record, by id.
    pub fn list(&self) -> impl Iterator<Item = &VolumeRecord> {
        self.records.values()
    }

    /// The bytes handed out to local-disk volumes (what `--capacity` limits).
    pub fn allocated_bytes(&self) -> u64 {
        self.records
            .values()
            .filter(|r| r.kind == VolumeKind::LocalDisk)
            .map(|r| r.capacity_bytes)
            .sum()
    }

    /// The image file of a local-disk volume.
    pub fn image_path(&self, volume_id: &str) -> PathBuf {
        self.root.join("images").join(format!("{volume_id}.img"))
    }

    /// The directory of a hostpath volume.
    pub fn hostpath_dir(&self, volume_id: &str) -> PathBuf {
        self.root.join("hostpath").join(volume_id)
    }

    fn record_path(&self, volume_id: &str) -> PathBuf {
        self.root.join("volumes").join(format!("{volume_id}.json"))
    }

    /// Writes `record` atomically and keeps it.
    pub fn put(&mut self, record: VolumeRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.volume_id);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&record).expect("a volume record serializes");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(path.parent().expect("a record has a directory"))?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io("write", &path)(e));
        }
        self.records.insert(record.volume_id.clone(), record);
        Ok(())
    }

    /// Removes the record of `volume_id` (none is fine).
    pub fn remove(&mut self, volume_id: &str) -> Result<(), StoreError> {
        let path = self.record_path(volume_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
        self.records.remove(volume_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, kind: VolumeKind, capacity_bytes: u64) -> VolumeRecord {
        VolumeRecord {
            volume_id: id.into(),
            name: format!("name-{id}"),
            kind,
            capacity_bytes,
            published: None,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_interrupted_writes_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = VolumeStore::open(dir.path()).unwrap();
        store
            .put(record("rk-a", VolumeKind::LocalDisk, 10))
            .unwrap();
        store.put(record("rk-b", VolumeKind::HostPath, 5)).unwrap();
        store
            .put(record("rk-c", VolumeKind::LocalDisk, 20))
            .unwrap();
        store.remove("rk-c").unwrap();
        store.remove("rk-never").unwrap();
        fs::write(dir.path().join("volumes/rk-d.json.tmp"), b"{half").unwrap();

        let store = VolumeStore::open(dir.path()).unwrap();
        let ids: Vec<_> = store.list().map(|r| r.volume_id.as_str()).collect();
        assert_eq!(ids, ["rk-a", "rk-b"]);
        assert_eq!(
            store.get("rk-b"),
            Some(&record("rk-b", VolumeKind::HostPath, 5))
        );
        // Only local-disk volumes count against --capacity.
        assert_eq!(store.allocated_bytes(), 10);
        assert!(!dir.path().join("volumes/rk-d.json.tmp").exists());
        let mut names: Vec<_> = fs::read_dir(dir.path().join("volumes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["rk-a.json", "rk-b.json"]);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        VolumeStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("volumes/rk-x.json"), b"{").unwrap();
        let err = VolumeStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("volume record "), "{err}");
        assert!(err.contains("rk-x.json"), "{err}");
    }
}
