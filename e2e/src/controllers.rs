//! Running rekube-controllers for a test. By default each test starts its own process,
//! scoped to the test's namespace with its own Lease, so tests run in parallel and can kill
//! and restart it. With `REKUBE_E2E_CONTROLLERS=external` the tests rely on controllers
//! already running in the cluster (installed by Helm, on kind) and skip what needs a
//! process of their own.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether the controllers under test run outside the test (REKUBE_E2E_CONTROLLERS=external).
pub fn external() -> bool {
    std::env::var("REKUBE_E2E_CONTROLLERS").is_ok_and(|v| v == "external")
}

/// The rekube-controllers binary: REKUBE_CONTROLLERS_BIN, or the one built beside this test.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("REKUBE_CONTROLLERS_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug/rekube-controllers
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target folder");
    dir.join("rekube-controllers")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A rekube-controllers process scoped to one namespace, killed on drop.
pub struct ControllerProcess {
    child: Option<Child>,
    pub namespace: String,
    pub metrics_port: u16,
    pub log: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl ControllerProcess {
    /// Starts rekube-controllers for `namespace` with leader election on a Lease in it.
    pub fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with_env(namespace, extra, &[])
    }

    /// As [`Self::start`], with extra environment (a KUBECONFIG of other credentials).
    pub fn start_with_env(namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut p = ControllerProcess {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            namespace: namespace.into(),
            metrics_port: free_port(),
            log: std::env::temp_dir().join(format!(
                "rekube-controllers-{namespace}-{}.log",
                free_port()
            )),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p rekube-controllers`",
            bin.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&bin)
            .args(["--namespace", &self.namespace])
            .args([
                "--bind-address",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .args(self.scoping_defaults())
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// Nodes are cluster-scoped: unless the test says otherwise, the controllers watch only
    /// the test's nodes (labelled by [`crate::nodes::create_node`]) and PersistentVolumes and
    /// StorageClasses (labelled with the same label by the test), read their heartbeat
    /// Leases from the test namespace and keep their ServiceAccounts there, so parallel
    /// tests never touch each other's nodes; their own Lease is in the test namespace too.
    fn scoping_defaults(&self) -> Vec<String> {
        let mut args = Vec::new();
        let given = |flag: &str| {
            self.extra
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        if !given("--node-selector") {
            args.push("--node-selector".into());
            args.push(format!("{}={}", crate::nodes::SCOPE_LABEL, self.namespace));
        }
        if !given("--storage-selector") {
            args.push("--storage-selector".into());
            args.push(format!("{}={}", crate::nodes::SCOPE_LABEL, self.namespace));
        }
        if !given("--controllers") {
            // Tests of other controllers make pods but no nodes: leave them unscheduled
            // rather than marked Unschedulable by a scheduler they did not ask for.
            args.push("--controllers=*,-scheduler".into());
        }
        // Leader election faster than upstream's 15 s / 10 s / 2 s, so failover tests are
        // quick, with room for a busy apiserver: a renewal slower than the renew deadline
        // makes the process step down and exit, as upstream's does.
        if !given("--leader-elect-lease-duration") {
            args.extend([
                "--leader-elect-lease-duration".into(),
                "8s".into(),
                "--leader-elect-renew-deadline".into(),
                "6s".into(),
                "--leader-elect-retry-period".into(),
                "1s".into(),
            ]);
        }
        if !given("--leader-elect-resource-namespace") {
            args.push("--leader-elect-resource-namespace".into());
            args.push(self.namespace.clone());
        }
        if !given("--node-lease-namespace") {
            args.push("--node-lease-namespace".into());
            args.push(self.namespace.clone());
        }
        if !given("--node-identity-namespace") {
            args.push("--node-identity-namespace".into());
            args.push(self.namespace.clone());
        }
        args
    }

    /// SIGKILL, as a crash: no lease release, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a graceful exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe_kill(c.id(), "TERM");
        for _ in 0..200 {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Starts the process again after [`Self::kill`] or [`Self::terminate`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM, a graceful exit (the lease released), and a new process at once: the path
    /// of every `helm upgrade`, where the new process leads before its caches are synced.
    pub fn restart_gracefully(&mut self) {
        let status = self.terminate();
        assert!(
            status.is_some_and(|s| s.success()),
            "graceful exit: {status:?}\n{}",
            self.logs()
        );
        self.spawn();
    }

    /// The exit status if the process has exited (it is not waited for).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The process's `/metrics` text.
    pub fn metrics(&self) -> Option<String> {
        let out = Command::new("curl")
            .args([
                "-fsS",
                &format!("http://127.0.0.1:{}/metrics", self.metrics_port),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
