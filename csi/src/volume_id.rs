//! Volume ids. A volume's id is derived from its CreateVolume `name` alone (FNV-1a 64), so
//! that a repeated CreateVolume, a restarted driver or a create interrupted halfway all
//! arrive at the same id, image file and directory. Ids are also file names under the
//! state dir: [`is_volume_id`] is checked before any id from a request touches a path.

const PREFIX: &str = "rk-";

/// The id of the volume CreateVolume calls `name`: `rk-` and 16 lowercase hex digits.
pub fn volume_id_for(name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{PREFIX}{hash:016x}")
}

/// Whether `id` has the form [`volume_id_for`] gives (and so is safe as a file name).
pub fn is_volume_id(id: &str) -> bool {
    id.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_name_and_differ_between_names() {
        assert_eq!(volume_id_for("pvc-1"), volume_id_for("pvc-1"));
        assert_ne!(volume_id_for("pvc-1"), volume_id_for("pvc-2"));
        // FNV-1a 64 of the empty string is its offset basis.
        assert_eq!(volume_id_for(""), "rk-cbf29ce484222325");
    }

    #[test]
    fn only_generated_ids_are_volume_ids() {
        for (id, ok) in [
            (volume_id_for("a").as_str(), true),
            ("rk-0123456789abcdef", true),
            ("rk-0123456789ABCDEF", false),
            ("rk-0123456789abcde", false),
            ("rk-0123456789abcdef0", false),
            ("rk-../../etc/passwd1", false),
            ("fake-vol-id", false),
            ("", false),
        ] {
            assert_eq!(is_volume_id(id), ok, "{id:?}");
        }
    }
}
