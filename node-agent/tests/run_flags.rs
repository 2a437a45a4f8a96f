//! `rekube-node-agent run` refuses, before it touches anything, a cgroup parent or
//! directories that are not the agent's own to empty (start-up recovery kills every
//! process under `--cgroup-parent` and removes what is in `--run-dir`): the process exits
//! non-zero with the flag, its value and the reason on stderr.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rekube-node-agent"))
        .arg("run")
        .args(args)
        // Never reached: the flags are refused first.
        .env("KUBECONFIG", "/nonexistent/rekube-kubeconfig")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_owned_paths_stop_the_agent_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root_arg = root.to_str().unwrap();
    let run_arg = dir.path().join("run");
    let run_arg = run_arg.to_str().unwrap();
    for (args, message) in [
        (
            vec!["--cgroup-parent", ""],
            r#"error: invalid --cgroup-parent "": must not be empty or / (the pods' cgroups would be the host's root cgroup)"#.to_string(),
        ),
        (
            vec!["--cgroup-parent", "/"],
            r#"error: invalid --cgroup-parent "/": must not be empty or / (the pods' cgroups would be the host's root cgroup)"#.to_string(),
        ),
        (
            vec!["--cgroup-parent", "system.slice"],
            r#"error: invalid --cgroup-parent "system.slice": is a cgroup another manager owns (the agent kills every process under it)"#.to_string(),
        ),
        (
            vec!["--root-dir", root_arg, "--run-dir", "/tmp"],
            r#"error: invalid --run-dir "/tmp": is a shared host directory (the agent removes what it finds there)"#.to_string(),
        ),
        (
            vec!["--root-dir", root_arg, "--run-dir", root_arg],
            format!(r#"error: invalid --root-dir "{root_arg}": must differ from --run-dir"#),
        ),
        (
            vec!["--root-dir", "relative/root", "--run-dir", run_arg],
            r#"error: invalid --root-dir "relative/root": must be an absolute path"#.to_string(),
        ),
    ] {
        let (code, stderr) = run(&args);
        assert_ne!(code, 0, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().last(), Some(message.as_str()), "{args:?}");
    }
    assert!(
        !root.exists(),
        "nothing is created before the flags are checked"
    );

    // A cgroup parent holding the agent's own cgroup (the child runs in this process's).
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    match own
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(|p| p.trim_start_matches('/'))
        .find(|p| !p.is_empty())
    {
        Some(path) => {
            let parent = path.split('/').next().unwrap();
            let (code, stderr) = run(&["--cgroup-parent", parent, "--root-dir", root_arg]);
            assert_ne!(code, 0, "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "error: invalid --cgroup-parent \"{parent}\": holds the agent's own cgroup /"
                )) && stderr.contains("(the agent kills every process under it)"),
                "{stderr}"
            );
        }
        None => eprintln!("not checked here: this process is in every hierarchy's root cgroup"),
    }
}

/// The service proxy's flags: an unknown mode (`ipvs`, which rekube does not offer) is refused
/// when the flags are parsed, a bad value of its other flags before anything is created.
#[test]
fn bad_proxy_flags_stop_the_agent_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root_arg = root.to_str().unwrap();
    let (code, stderr) = run(&["--proxy-mode", "ipvs", "--root-dir", root_arg]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid value 'ipvs' for '--proxy-mode <PROXY_MODE>'")
            && stderr.contains("[possible values: nftables, iptables, none]"),
        "{stderr}"
    );
    for (args, message) in [
        (
            vec!["--cluster-cidr", "10.244.0.0"],
            r#"error: invalid --cluster-cidr "10.244.0.0": not a CIDR (e.g. 10.244.0.0/16)"#,
        ),
        (
            vec!["--nodeport-addresses", "eth0"],
            r#"error: invalid --nodeport-addresses "eth0": not a CIDR, or "primary" alone"#,
        ),
        (
            vec!["--proxy-min-sync-period", "1m"],
            r#"error: invalid --proxy-min-sync-period "1m": must not be longer than --proxy-sync-period"#,
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--root-dir", root_arg]);
        let (code, stderr) = run(&all);
        assert_ne!(code, 0, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().last(), Some(message), "{args:?}");
    }
    assert!(
        !root.exists(),
        "nothing is created before the flags are checked"
    );
}
