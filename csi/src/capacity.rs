//! Capacity arithmetic, pure: a request's `capacity_range` to the size of the image file
//! (whole MiB, at least [`MIN_VOLUME_BYTES`], or the larger minimum of the filesystem
//! asked for: [`crate::filesystem`]), whether an existing volume satisfies a repeated
//! request, expansion, and what is left of `--capacity`.

use crate::csi::CapacityRange;

pub const MIB: u64 = 1 << 20;
/// The smallest local-disk volume: ext4 with its journal fits comfortably.
pub const MIN_VOLUME_BYTES: u64 = 16 * MIB;
/// The size of a volume whose request names no capacity.
pub const DEFAULT_VOLUME_BYTES: u64 = 1 << 30;

/// A validated capacity range: `required` bytes (0: none), at most `limit` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub required: u64,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("capacity range: required_bytes {0} is negative")]
    NegativeRequired(i64),
    #[error("capacity range: limit_bytes {0} is negative")]
    NegativeLimit(i64),
    #[error("capacity range: limit_bytes {limit} is below required_bytes {required}")]
    LimitBelowRequired { required: u64, limit: u64 },
    #[error(
        "capacity range: no size of whole MiB, at least {minimum} bytes, lies in [{required}, {limit}]"
    )]
    NoSizeInRange {
        required: u64,
        limit: u64,
        minimum: u64,
    },
    #[error("capacity range: limit_bytes {limit} is below the volume's current {current} bytes")]
    BelowCurrent { current: u64, limit: u64 },
}

impl CapacityError {
    /// Malformed ranges are INVALID_ARGUMENT; ranges the driver cannot meet, OUT_OF_RANGE.
    pub fn code(&self) -> tonic::Code {
        match self {
            CapacityError::NegativeRequired(_)
            | CapacityError::NegativeLimit(_)
            | CapacityError::LimitBelowRequired { .. } => tonic::Code::InvalidArgument,
            CapacityError::NoSizeInRange { .. } | CapacityError::BelowCurrent { .. } => {
                tonic::Code::OutOfRange
            }
        }
    }
}

/// Validates a request's range (absent, or 0 in a field: no constraint).
pub fn range(r: Option<&CapacityRange>) -> Result<Range, CapacityError> {
    let Some(r) = r else {
        return Ok(Range::default());
    };
    let required = u64::try_from(r.required_bytes)
        .map_err(|_| CapacityError::NegativeRequired(r.required_bytes))?;
    let limit =
        u64::try_from(r.limit_bytes).map_err(|_| CapacityError::NegativeLimit(r.limit_bytes))?;
    let limit = (limit != 0).then_some(limit);
    if let Some(limit) = limit
        && limit < required
    {
        return Err(CapacityError::LimitBelowRequired { required, limit });
    }
    Ok(Range { required, limit })
}

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(MIB).saturating_mul(MIB)
}

/// The size of a new volume for `range`: `required` (or the default) rounded up to whole
/// MiB and to `minimum` (whole MiB, at least [`MIN_VOLUME_BYTES`]: the filesystem's), or
/// the largest whole-MiB size under `limit` when that rounds past it.
pub fn volume_size(range: Range, minimum: u64) -> Result<u64, CapacityError> {
    let want = if range.required == 0 {
        range
            .limit
            .map_or(DEFAULT_VOLUME_BYTES, |l| l.min(DEFAULT_VOLUME_BYTES))
    } else {
        range.required
    };
    let size = round_up(want).max(minimum);
    match range.limit {
        Some(limit) if size > limit => {
            let down = limit / MIB * MIB;
            if down >= range.required.max(minimum) {
                Ok(down)
            } else {
                Err(CapacityError::NoSizeInRange {
                    required: range.required,
                    limit,
                    minimum,
                })
            }
        }
        _ => Ok(size),
    }
}

/// Whether a volume of `existing` bytes satisfies `range` (a repeated CreateVolume).
pub fn satisfies(existing: u64, range: Range) -> bool {
    existing >= range.required && range.limit.is_none_or(|l| existing <= l)
}

/// The size after ControllerExpandVolume: `current` when it already satisfies the
/// request (volumes never shrink), else `required` rounded up to whole MiB.
pub fn expanded_size(current: u64, range: Range) -> Result<u64, CapacityError> {
    if let Some(limit) = range.limit
        && limit < current
    {
        return Err(CapacityError::BelowCurrent { current, limit });
    }
    if range.required <= current {
        return Ok(current);
    }
    let size = round_up(range.required);
    match range.limit {
        Some(limit) if size > limit => {
            let down = limit / MIB * MIB;
            if down >= range.required {
                Ok(down)
            } else {
                Err(CapacityError::NoSizeInRange {
                    required: range.required,
                    limit,
                    minimum: current,
                })
            }
        }
        _ => Ok(size),
    }
}

/// What is left of `total` once `allocated` bytes are handed out.
pub fn remaining(total: u64, allocated: u64) -> u64 {
    total.saturating_sub(allocated)
}

/// GetCapacity's `maximum_volume_size` for local-disk with `left` bytes free: the largest
/// `required_bytes` a CreateVolume can be granted ([`volume_size`] rounds a request up to
/// whole MiB and to `minimum`): `left` rounded down to whole MiB, or 0 when not even the
/// smallest volume fits. The scheduler compares a claim's request with it.
pub fn maximum_volume_size(left: u64, minimum: u64) -> u64 {
    let whole = left / MIB * MIB;
    if whole >= minimum { whole } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(required: i64, limit: i64) -> Option<CapacityRange> {
        Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        })
    }

    const M: u64 = MIB;

    #[test]
    fn ranges_are_validated() {
        assert_eq!(range(None), Ok(Range::default()));
        assert_eq!(
            range(r(5, 0).as_ref()),
            Ok(Range {
                required: 5,
                limit: None
            })
        );
        assert_eq!(
            range(r(-1, 0).as_ref()),
            Err(CapacityError::NegativeRequired(-1))
        );
        assert_eq!(
            range(r(0, -2).as_ref()),
            Err(CapacityError::NegativeLimit(-2))
        );
        let err = range(r(10, 5).as_ref()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "capacity range: limit_bytes 5 is below required_bytes 10"
        );
    }

    #[test]
    fn volume_sizes_round_to_whole_mib_within_the_limit() {
        const XFS: u64 = 300 * M;
        /// required, limit, minimum, the size (or OUT_OF_RANGE).
        type Case = (u64, Option<u64>, u64, Result<u64, ()>);
        let cases: &[Case] = &[
            (0, None, MIN_VOLUME_BYTES, Ok(DEFAULT_VOLUME_BYTES)),
            (0, Some(100 * M), MIN_VOLUME_BYTES, Ok(100 * M)),
            (64 * M, None, MIN_VOLUME_BYTES, Ok(64 * M)),
            (64 * M, Some(64 * M), MIN_VOLUME_BYTES, Ok(64 * M)),
            (64 * M + 1, None, MIN_VOLUME_BYTES, Ok(65 * M)),
            (1, None, MIN_VOLUME_BYTES, Ok(MIN_VOLUME_BYTES)),
            // Rounding up would pass the limit: the largest whole MiB under it.
            (64 * M + 1, Some(65 * M + 7), MIN_VOLUME_BYTES, Ok(65 * M)),
            (64 * M + 1, Some(64 * M + 7), MIN_VOLUME_BYTES, Err(())),
            (0, Some(MIN_VOLUME_BYTES - 1), MIN_VOLUME_BYTES, Err(())),
            // A filesystem's larger minimum (xfs): rounded up to it, within the limit.
            (64 * M, None, XFS, Ok(XFS)),
            (0, Some(100 * M), XFS, Err(())),
            (64 * M, Some(XFS), XFS, Ok(XFS)),
            (64 * M, Some(400 * M), XFS, Ok(XFS)),
            (64 * M, Some(XFS - 1), XFS, Err(())),
            (320 * M, None, XFS, Ok(320 * M)),
            (0, None, XFS, Ok(DEFAULT_VOLUME_BYTES)),
        ];
        for &(required, limit, minimum, want) in cases {
            let got = volume_size(Range { required, limit }, minimum);
            match want {
                Ok(size) => assert_eq!(got, Ok(size), "{required} {limit:?} {minimum}"),
                Err(()) => {
                    assert_eq!(
                        got.unwrap_err().code(),
                        tonic::Code::OutOfRange,
                        "{required} {limit:?} {minimum}"
                    )
                }
            }
        }
    }

    #[test]
    fn existing_volumes_satisfy_ranges_they_lie_in() {
        assert!(satisfies(64 * M, Range::default()));
        assert!(satisfies(
            64 * M,
            Range {
                required: 64 * M,
                limit: None
            }
        ));
        assert!(satisfies(
            64 * M,
            Range {
                required: 10,
                limit: Some(64 * M)
            }
        ));
        assert!(!satisfies(
            64 * M,
            Range {
                required: 128 * M,
                limit: None
            }
        ));
        assert!(!satisfies(
            64 * M,
            Range {
                required: 0,
                limit: Some(32 * M)
            }
        ));
    }

    #[test]
    fn expansion_grows_never_shrinks() {
        let e = |current, required, limit| expanded_size(current, Range { required, limit });
        assert_eq!(e(64 * M, 128 * M, None), Ok(128 * M));
        assert_eq!(e(64 * M, 100 * M + 1, None), Ok(101 * M));
        assert_eq!(e(64 * M, 32 * M, None), Ok(64 * M));
        assert_eq!(e(64 * M, 128 * M, Some(128 * M)), Ok(128 * M));
        assert_eq!(
            e(64 * M, 0, Some(32 * M)),
            Err(CapacityError::BelowCurrent {
                current: 64 * M,
                limit: 32 * M
            })
        );
        assert_eq!(
            e(64 * M, 100 * M + 1, Some(100 * M + 5))
                .unwrap_err()
                .code(),
            tonic::Code::OutOfRange
        );
    }

    #[test]
    fn maximum_volume_size_is_the_largest_request_create_volume_grants() {
        let min = MIN_VOLUME_BYTES;
        let xfs = 300 * M;
        let cases = [
            (0, min, 0),
            (min - 1, min, 0),
            (min, min, min),
            (100 * M, min, 100 * M),
            (100 * M + 1, min, 100 * M),
            (101 * M - 1, min, 100 * M),
            // xfs: nothing under its 300 MiB.
            (100 * M, xfs, 0),
            (xfs - 1, xfs, 0),
            (xfs, xfs, xfs),
            (400 * M + 5, xfs, 400 * M),
        ];
        for (left, minimum, want) in cases {
            let max = maximum_volume_size(left, minimum);
            assert_eq!(max, want, "{left} bytes left, at least {minimum}");
            if max > 0 {
                // A request of exactly the maximum fits; one byte more does not.
                let fits = |required| {
                    volume_size(
                        Range {
                            required,
                            limit: None,
                        },
                        minimum,
                    )
                    .unwrap()
                        <= left
                };
                assert!(fits(max), "{left}");
                assert!(!fits(max + 1), "{left}");
            }
        }
    }

    #[test]
    fn remaining_never_goes_negative() {
        assert_eq!(remaining(100, 30), 70);
        assert_eq!(remaining(100, 130), 0);
    }
}
