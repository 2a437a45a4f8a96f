//! FNV-1a hashing (Go's `hash/fnv` `New32a` and `New64a`), the one implementation behind
//! the pod-template-hash, the kubelet's container hash and its back-off keys.
use std::io::{self, Write};

const FNV32_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;
const FNV64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 32 bits (Go's `fnv.New32a`), fed incrementally.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a32(u32);

impl Default for Fnv1a32 {
    fn default() -> Self {
        Self(FNV32_OFFSET_BASIS)
    }
}

impl Fnv1a32 {
    /// Feeds bytes into the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u32::from(b);
            self.0 = self.0.wrapping_mul(FNV32_PRIME);
        }
    }

    /// The hash of everything fed so far (Go's `Sum32`).
    pub fn sum32(&self) -> u32 {
        self.0
    }
}

impl Write for Fnv1a32 {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// FNV-1a, 32 bits, of `bytes`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut h = Fnv1a32::default();
    h.update(bytes);
    h.sum32()
}

/// FNV-1a, 64 bits (Go's `fnv.New64a`), of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = FNV64_OFFSET_BASIS;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV64_PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vectors of the FNV specification (draft-eastlake-fnv), as Go's
    /// hash/fnv tests use.
    #[test]
    fn reference_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fed_in_pieces_or_written_the_hash_is_the_same() {
        let mut h = Fnv1a32::default();
        h.update(b"foo");
        write!(h, "bar").unwrap();
        assert_eq!(h.sum32(), fnv1a_32(b"foobar"));
    }
}
