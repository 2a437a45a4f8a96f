//! Running rekube-node-agent for a test: `run` with a node name, labels and lease
//! namespace scoped to the test, its state under a temporary directory, killed on drop.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::TestNamespace;

/// The rekube-node-agent binary: REKUBE_NODE_AGENT_BIN, or the one built beside the test.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("REKUBE_NODE_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target folder")
        .join("rekube-node-agent")
}

pub struct AgentProcess {
    child: Option<Child>,
    pub node_name: String,
    pub root: PathBuf,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts `rekube-node-agent run` as node `short` of the test (named by
    /// [`TestNamespace::cluster_name`], labelled for the test's `--node-selector`), with
    /// its Lease in the test namespace.
    pub fn start(ns: &TestNamespace, short: &str, extra: &[&str]) -> Self {
        let node_name = ns.cluster_name(short);
        let root = std::env::temp_dir().join(format!("rekube-agent-{node_name}"));
        let log = std::env::temp_dir().join(format!("rekube-agent-{node_name}.log"));
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p rekube-node-agent`",
            bin.display()
        );
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .arg("run")
            .args(["--node-name", &node_name])
            .args([
                "--node-labels",
                &format!("{}={}", crate::nodes::SCOPE_LABEL, ns.name),
            ])
            .args(["--node-lease-namespace", &ns.name])
            .arg("--root-dir")
            .arg(&root)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        AgentProcess {
            child: Some(child),
            node_name,
            root,
            log,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the node goes silent, as a crashed or unplugged machine.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
        // The Node is not the test's object: delete it here (its Lease goes with it).
        let name = self.node_name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = crate::client().await;
                let _ = kube::Api::<rekube_crds::Node>::all(client)
                    .delete(&name, &Default::default())
                    .await;
            });
        })
        .join();
    }
}
