//! The one rule for tests that need something of the machine (root, a cluster, busybox,
//! a registry binary): they fail with a clear message when it is missing. Only an explicit
//! `REKUBE_SKIP_PRIVILEGED=1` lets them return early instead; CI never sets it.

/// The environment variable that lets tests skip what this machine cannot run.
pub const SKIP_PRIVILEGED: &str = "REKUBE_SKIP_PRIVILEGED";

/// Called by a test whose prerequisite `why` is missing: panics with `why`, unless
/// `REKUBE_SKIP_PRIVILEGED=1`, when it says so on stderr and returns (the caller then
/// returns without testing).
pub fn missing_prerequisite(why: &str) {
    if skip_allowed() {
        eprintln!("skipped ({SKIP_PRIVILEGED}=1): {why}");
        return;
    }
    panic!(
        "{why}: run the tests as root on a machine set up by e2e/scripts/bootstrap.sh, with a cluster (`just cluster-up`), or set {SKIP_PRIVILEGED}=1 to skip them"
    );
}

/// Where the project's scripts cache what they build (Go-built binaries, the local
/// cluster, CNI plugins): `REKUBE_CACHE`, or `~/.cache/rekube` as the justfile's default.
pub fn cache_dir() -> std::path::PathBuf {
    match std::env::var("REKUBE_CACHE") {
        Ok(dir) if !dir.is_empty() => dir.into(),
        _ => std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/rekube"),
    }
}

/// The reference CNI plugins for tests: `REKUBE_CNI_BIN_DIR`, or the ones
/// `e2e/scripts/build-kubernetes.sh cni-plugins` builds into the cache.
pub fn cni_bin_dir() -> std::path::PathBuf {
    match std::env::var("REKUBE_CNI_BIN_DIR") {
        Ok(dir) if !dir.is_empty() => dir.into(),
        _ => cache_dir().join("bin/cni-plugins-v1.10.0"),
    }
}

fn skip_allowed() -> bool {
    std::env::var(SKIP_PRIVILEGED).is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_prerequisite_fails_the_test_unless_skipping_is_asked_for() {
        // The variable is read, not set, here: tests run in parallel threads of one process.
        let result = std::panic::catch_unwind(|| missing_prerequisite("no busybox"));
        if skip_allowed() {
            assert!(result.is_ok());
        } else {
            let message = result.unwrap_err();
            let text = message.downcast_ref::<String>().unwrap();
            assert!(
                text.starts_with("no busybox: run the tests as root"),
                "{text}"
            );
            assert!(text.contains("REKUBE_SKIP_PRIVILEGED=1"), "{text}");
        }
    }
}
