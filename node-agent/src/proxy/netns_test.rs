//! For the proxy tests that reach the kernel: a shell in a network namespace of the
//! test's own (`unshare --net`), made for it and gone with it, so the machine's rulesets
//! are never touched.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `sh` running `script` in a new network namespace; its output, whatever its status.
pub(crate) fn sh_in_new_netns(script: &str) -> Output {
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Applies `full`, then `partial`, with `apply` (a command the file's name is appended
/// to: `nft -f`, `iptables-restore --noflush <`) in a new network namespace, and prints
/// how long each took.
pub(crate) fn print_apply_times(apply: &str, full: &str, partial: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("full"), full).unwrap();
    std::fs::write(dir.path().join("partial"), partial).unwrap();
    let script = format!(
        "set -e\ncd {}\ns=$(date +%s%N); {apply} full; m=$(date +%s%N); {apply} partial; e=$(date +%s%N)\necho \"kernel apply: full $(( (m-s)/1000000 )) ms, partial $(( (e-m)/1000000 )) ms\"\n",
        dir.path().display()
    );
    let out = sh_in_new_netns(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}
