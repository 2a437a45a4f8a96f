//! Image garbage collection, as upstream's pkg/kubelet/images/image_gc_manager.go:
//! when the image filesystem's usage reaches `high_threshold_percent` (85), unused
//! images are deleted, least recently used first (ties: first detected first), until
//! the bytes to get back to `low_threshold_percent` (80) are freed. Images in use, used
//! at or after the GC started, or younger than `min_age` are kept.
//!
//! The disk usage comes through [`FsStats`] so the decision is table-testable; the real
//! one is `statvfs(2)` on the store's root. Freed bytes are measured (what the store's
//! prune actually removed), not estimated, so shared layers are not counted twice.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tracing::info;

use super::digest::Digest;
use super::store::{ImageTimes, Store, StoreError, unix};

/// Why image GC failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    #[error("image filesystem stats for {path}: {source}")]
    Stats { path: PathBuf, source: io::Error },
    #[error(
        "image gc policy: low threshold {low}% must be below high threshold {high}% and both at most 100"
    )]
    Policy { high: u8, low: u8 },
    #[error(
        "failed to garbage collect required amount of images: attempted to free {to_free} bytes, but only found {freed} bytes eligible to free"
    )]
    NotEnoughFreed { to_free: u64, freed: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// kubelet's `--image-gc-high-threshold`, `--image-gc-low-threshold`,
/// `--minimum-image-ttl-duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(2 * 60),
        }
    }
}

/// Capacity and available bytes of the image filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub available: u64,
}

/// Where disk usage comes from.
pub trait FsStats {
    fn usage(&self) -> Result<FsUsage, GcError>;
}

/// `statvfs(2)` on a path: blocks available to unprivileged users, as `df` shows.
pub struct Statvfs(pub PathBuf);

impl FsStats for Statvfs {
    fn usage(&self) -> Result<FsUsage, GcError> {
        let s = rustix::fs::statvfs(&self.0).map_err(|e| GcError::Stats {
            path: self.0.clone(),
            source: e.into(),
        })?;
        Ok(FsUsage {
            capacity: s.f_blocks * s.f_frsize,
            available: s.f_bavail * s.f_frsize,
        })
    }
}

/// Bytes to free, or `None` when usage is below the high threshold (upstream's
/// `usagePercent >= HighThresholdPercent` → `capacity*(100-low)/100 - available`).
pub fn bytes_to_free(policy: &GcPolicy, usage: FsUsage) -> Result<Option<u64>, GcError> {
    if policy.low_threshold_percent >= policy.high_threshold_percent
        || policy.high_threshold_percent > 100
    {
        return Err(GcError::Policy {
            high: policy.high_threshold_percent,
            low: policy.low_threshold_percent,
        });
    }
    if usage.capacity == 0 {
        return Err(GcError::InvalidCapacity);
    }
    let available = usage.available.min(usage.capacity);
    let usage_percent = 100 - (available as u128 * 100 / usage.capacity as u128) as u64;
    if usage_percent < u64::from(policy.high_threshold_percent) {
        return Ok(None);
    }
    let target_available =
        (usage.capacity as u128 * u128::from(100 - policy.low_threshold_percent) / 100) as u64;
    Ok(Some(target_available.saturating_sub(available)))
}

/// What GC knows of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: Digest,
    pub size: u64,
    pub times: ImageTimes,
}

/// The images GC may delete, in the order it deletes them (upstream `freeSpace`'s
/// filter and `byLastUsedAndDetected` sort). `free_time` is when GC started (unix s).
pub fn eviction_order(
    images: &[ImageRecord],
    in_use: &HashSet<Digest>,
    free_time: u64,
    min_age: Duration,
) -> Vec<ImageRecord> {
    let mut candidates: Vec<ImageRecord> = images
        .iter()
        .filter(|i| !in_use.contains(&i.id))
        .filter(|i| i.times.last_used < free_time)
        .filter(|i| free_time.saturating_sub(i.times.first_detected) >= min_age.as_secs())
        .cloned()
        .collect();
    candidates.sort_by(|a, b| {
        (a.times.last_used, a.times.first_detected, &a.id).cmp(&(
            b.times.last_used,
            b.times.first_detected,
            &b.id,
        ))
    });
    candidates
}

/// Which images to delete to free `to_free` bytes, by their sizes (the pure form of
/// what [`garbage_collect`] does with measured sizes).
pub fn images_to_free(
    images: &[ImageRecord],
    in_use: &HashSet<Digest>,
    to_free: u64,
    free_time: u64,
    min_age: Duration,
) -> Vec<Digest> {
    let mut freed = 0;
    let mut out = Vec::new();
    for image in eviction_order(images, in_use, free_time, min_age) {
        if freed >= to_free {
            break;
        }
        freed += image.size;
        out.push(image.id);
    }
    out
}

/// What a GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub usage: Option<FsUsage>,
    pub to_free: u64,
    pub freed: u64,
    pub removed: Vec<Digest>,
}

/// One GC pass over `store`.
pub fn garbage_collect(
    store: &Store,
    stats: &dyn FsStats,
    policy: &GcPolicy,
    in_use: &HashSet<Digest>,
    now: SystemTime,
) -> Result<GcReport, GcError> {
    let usage = stats.usage()?;
    let Some(to_free) = bytes_to_free(policy, usage)? else {
        return Ok(GcReport {
            usage: Some(usage),
            ..Default::default()
        });
    };
    info!(
        to_free,
        high = policy.high_threshold_percent,
        low = policy.low_threshold_percent,
        "disk usage on image filesystem is over the high threshold, trying to free bytes down to the low threshold"
    );
    let records: Vec<ImageRecord> = store
        .list()?
        .into_iter()
        .map(|i| ImageRecord {
            id: i.id,
            size: i.size,
            times: i.times,
        })
        .collect();
    let mut report = GcReport {
        usage: Some(usage),
        to_free,
        ..Default::default()
    };
    for image in eviction_order(&records, in_use, unix(now), policy.min_age) {
        if report.freed >= to_free {
            break;
        }
        let before = store_bytes(store);
        store.remove(&image.id.to_string())?;
        report.freed += before.saturating_sub(store_bytes(store));
        info!(image = %image.id, "image garbage collected");
        report.removed.push(image.id);
    }
    if report.freed < to_free {
        return Err(GcError::NotEnoughFreed {
            to_free,
            freed: report.freed,
        });
    }
    Ok(report)
}

/// Bytes of file content under the store (blobs and unpacked layers).
fn store_bytes(store: &Store) -> u64 {
    let mut total = 0;
    let mut stack = vec![store.root().to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8, size: u64, first_detected: u64, last_used: u64) -> ImageRecord {
        ImageRecord {
            id: Digest::of(&[n]),
            size,
            times: ImageTimes {
                first_detected,
                last_used,
            },
        }
    }

    #[test]
    fn thresholds() {
        let p = GcPolicy::default();
        let u = |capacity, available| FsUsage {
            capacity,
            available,
        };
        // (capacity, available) → bytes to free
        for (capacity, available, want) in [
            (1000, 200, None),      // 80% used: below 85
            (1000, 151, Some(49)),  // 84.9% counts as 85 (integer percent, as upstream)
            (1000, 160, None),      // 84%
            (1000, 150, Some(50)),  // 85%: free to 80% → 200 available
            (1000, 100, Some(100)), // 90%
            (1000, 0, Some(200)),   // full
            (1000, 2000, None),     // available > capacity is capped
        ] {
            assert_eq!(
                bytes_to_free(&p, u(capacity, available)).unwrap(),
                want,
                "{capacity}/{available}"
            );
        }
        assert!(matches!(
            bytes_to_free(&p, u(0, 0)),
            Err(GcError::InvalidCapacity)
        ));
        let bad = GcPolicy {
            high_threshold_percent: 80,
            low_threshold_percent: 80,
            ..p
        };
        assert!(matches!(
            bytes_to_free(&bad, u(1, 1)),
            Err(GcError::Policy { .. })
        ));
        // high 0 → always collect everything down to low
        let zero = GcPolicy {
            high_threshold_percent: 1,
            low_threshold_percent: 0,
            ..p
        };
        assert_eq!(bytes_to_free(&zero, u(1000, 990)).unwrap(), Some(10));
    }

    #[test]
    fn least_recently_used_first() {
        let now = 10_000;
        let images = vec![
            rec(1, 100, 100, 5_000), // used at 5000
            rec(2, 100, 100, 1_000), // oldest use: first to go
            rec(3, 100, 50, 3_000),  // in use: kept
            rec(4, 100, 200, 3_000), // same last use as 5, detected later
            rec(5, 100, 150, 3_000),
            rec(6, 100, 9_990, 9_990), // too young for min_age 120 s
            rec(7, 100, 100, now),     // used since GC started
        ];
        let in_use = HashSet::from([Digest::of(&[3])]);
        let ids = |v: Vec<Digest>| -> Vec<Digest> { v };
        let order: Vec<Digest> = eviction_order(&images, &in_use, now, Duration::from_secs(120))
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            order,
            ids(vec![
                Digest::of(&[2]),
                Digest::of(&[5]),
                Digest::of(&[4]),
                Digest::of(&[1])
            ])
        );
        // Stops once enough is freed.
        assert_eq!(
            images_to_free(&images, &in_use, 150, now, Duration::from_secs(120)),
            vec![Digest::of(&[2]), Digest::of(&[5])]
        );
        assert_eq!(
            images_to_free(&images, &in_use, 0, now, Duration::ZERO),
            Vec::<Digest>::new()
        );
        // min_age 0 lets the young one go too, still after the older ones.
        assert_eq!(
            images_to_free(&images, &in_use, 10_000, now, Duration::ZERO).len(),
            5
        );
    }
}
