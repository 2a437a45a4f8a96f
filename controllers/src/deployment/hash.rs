//! The pod-template-hash (upstream: controller.ComputeHash in
//! pkg/controller/controller_utils.go, with k8s.io/apimachinery's rand.SafeEncodeString).
//!
//! Upstream hashes Go's `%v` dump of the template; rekube hashes the canonical serde_json
//! serialization of the k8s-openapi template instead (deterministic: maps are BTreeMaps,
//! struct fields have a fixed order). The strings therefore differ from upstream's, which
//! nothing depends on: the hash only has to be stable, change with the template, and be
//! the new ReplicaSet's name suffix, label and selector value. Likewise the collision
//! count is salted in as its decimal string (upstream writes it as little-endian bytes).

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The alphabet of rand.SafeEncodeString: no vowels (no bad words), no 0/1/3 (no confusion
/// with o/l/e).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub use rekube_crds::fnv::Fnv1a32;

/// rand.SafeEncodeString: maps each byte of `s` into the safe alphabet.
pub fn safe_encode_string(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// controller.ComputeHash: FNV-1a of the template's JSON, salted with the collision count's
/// decimal string when present, encoded with SafeEncodeString.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hasher = Fnv1a32::default();
    // Serializing k8s-openapi types cannot fail (string map keys only, times always
    // format), and writing into the hasher cannot fail either.
    let _ = serde_json::to_writer(&mut hasher, template);
    if let Some(count) = collision_count {
        hasher.update(count.to_string().as_bytes());
    }
    safe_encode_string(&hasher.sum32().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn template(image: &str, labels: &[(&str, &str)]) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_string(),
                    image: Some(image.to_string()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn safe_encode_string_matches_upstream_alphabet() {
        // '0' is 48: 48 % 27 = 21 → '4'; '9' is 57: 57 % 27 = 3 → 'f'.
        assert_eq!(safe_encode_string("09"), "4f");
        assert_eq!(safe_encode_string(""), "");
    }

    #[test]
    fn hash_is_stable() {
        let t = template("nginx:1", &[("app", "web")]);
        assert_eq!(compute_hash(&t, None), compute_hash(&t.clone(), None));
        assert_eq!(compute_hash(&t, Some(1)), compute_hash(&t, Some(1)));
        // Label order in the input does not matter: labels are a BTreeMap.
        let a = template("nginx:1", &[("a", "1"), ("b", "2")]);
        let b = template("nginx:1", &[("b", "2"), ("a", "1")]);
        assert_eq!(compute_hash(&a, None), compute_hash(&b, None));
    }

    #[test]
    fn hash_changes_with_the_template() {
        let a = template("nginx:1", &[("app", "web")]);
        let b = template("nginx:2", &[("app", "web")]);
        let c = template("nginx:1", &[("app", "api")]);
        assert_ne!(compute_hash(&a, None), compute_hash(&b, None));
        assert_ne!(compute_hash(&a, None), compute_hash(&c, None));
    }

    #[test]
    fn hash_changes_with_the_collision_count() {
        let t = template("nginx:1", &[("app", "web")]);
        let none = compute_hash(&t, None);
        let zero = compute_hash(&t, Some(0));
        let one = compute_hash(&t, Some(1));
        assert_ne!(none, zero);
        assert_ne!(zero, one);
        assert_ne!(none, one);
    }

    #[test]
    fn hash_uses_only_safe_characters() {
        for i in 0..50 {
            let t = template(&format!("image:{i}"), &[("app", "web")]);
            let h = compute_hash(&t, (i % 2 == 0).then_some(i));
            assert!(!h.is_empty() && h.len() <= 10, "{h}");
            assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
        }
    }
}
