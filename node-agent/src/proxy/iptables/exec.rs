//! The real kernel behind [`Iptables`] (pkg/util/iptables' runner): `iptables` /
//! `ip6tables` with `-w` for the jump rules (`-N`, `-C` then `-I`, `-C` then `-D`),
//! `iptables-save -t <table>`, and `iptables-restore -w --noflush --counters` with the
//! input on stdin. Whatever backend Debian's alternatives select (iptables-nft on Debian
//! 12). Optionally inside a network namespace (`nsenter --net=<path>`), which the tests
//! use; the agent runs them in its own namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::interface::{Iptables, IptablesError, Table};
use crate::proxy::types::IpFamily;

/// How long iptables waits for the xtables lock (`-w 5`).
const WAIT_SECONDS: &str = "5";

/// The iptables binaries of one family.
#[derive(Debug, Clone)]
pub struct IptablesExec {
    family: IpFamily,
    netns: Option<PathBuf>,
}

/// One run's exit code, stdout and stderr.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl IptablesExec {
    /// The family's tools inside the network namespace at `netns`, or in the agent's own
    /// when None.
    pub fn new(family: IpFamily, netns: Option<&Path>) -> Self {
        IptablesExec {
            family,
            netns: netns.map(Path::to_path_buf),
        }
    }

    fn binary(&self, tool: &str) -> String {
        let base = match self.family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        format!("{base}{tool}")
    }

    /// Whether the family's iptables is installed (cleanup skips a family without it:
    /// rekube cannot have written rules through a binary that is not there).
    pub fn installed(&self) -> bool {
        Command::new(self.binary(""))
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// That iptables runs (kube-proxy fails at start when it cannot): `iptables-save -t
    /// nat`, in the namespace.
    pub fn check(&self) -> Result<(), IptablesError> {
        self.save(Table::Nat).map(|_| ())
    }

    fn run(
        &self,
        op: &str,
        tool: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, IptablesError> {
        let binary = self.binary(tool);
        let mut cmd = match &self.netns {
            None => Command::new(&binary),
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg(&binary);
                c
            }
        };
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| IptablesError::Failed {
            op: op.to_string(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{binary} is not installed (Debian's iptables package)")
            } else {
                format!("running {binary}: {e}")
            },
        })?;
        if let Some(text) = stdin {
            // A write error shows as the tool's own failure below.
            let _ = child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| IptablesError::Failed {
                op: op.to_string(),
                message: format!("waiting for {binary}: {e}"),
            })?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    fn failed(&self, op: &str, out: &Output) -> IptablesError {
        IptablesError::Failed {
            op: op.to_string(),
            message: format!(
                "{} exited with {:?}: {}",
                self.binary(""),
                out.code,
                out.stderr
            ),
        }
    }

    /// `iptables -w -t <table> -C <chain> <args>`: exit 0 is there, 1 is not, and so is a
    /// rule whose chain or target chain does not exist (exit 2, "does not exist" with
    /// iptables-nft, "No chain/target/match by that name" with legacy).
    fn check_rule(&self, table: Table, chain: &str, args: &[&str]) -> Result<bool, IptablesError> {
        let mut argv = vec!["-w", WAIT_SECONDS, "-t", table.name(), "-C", chain];
        argv.extend_from_slice(args);
        let out = self.run("check rule", "", &argv, None)?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            Some(2)
                if out.stderr.contains("does not exist")
                    || out.stderr.contains("No chain/target/match") =>
            {
                Ok(false)
            }
            _ => Err(self.failed("check rule", &out)),
        }
    }
}

impl Iptables for IptablesExec {
    fn family(&self) -> IpFamily {
        self.family
    }

    fn ensure_chain(&self, table: Table, chain: &str) -> Result<bool, IptablesError> {
        let out = self.run(
            "ensure chain",
            "",
            &["-w", WAIT_SECONDS, "-t", table.name(), "-N", chain],
            None,
        )?;
        match out.code {
            Some(0) => Ok(false),
            // "Chain already exists."
            Some(1) if out.stderr.contains("exists") => Ok(true),
            _ => Err(self.failed(&format!("ensure chain {chain}"), &out)),
        }
    }

    fn ensure_rule(&self, table: Table, chain: &str, args: &[&str]) -> Result<bool, IptablesError> {
        if self.check_rule(table, chain, args)? {
            return Ok(true);
        }
        let mut argv = vec!["-w", WAIT_SECONDS, "-t", table.name(), "-I", chain];
        argv.extend_from_slice(args);
        let out = self.run("ensure rule", "", &argv, None)?;
        match out.code {
            Some(0) => Ok(false),
            _ => Err(self.failed(&format!("ensure rule in {chain}"), &out)),
        }
    }

    fn delete_rule(&self, table: Table, chain: &str, args: &[&str]) -> Result<(), IptablesError> {
        if !self.check_rule(table, chain, args)? {
            return Err(IptablesError::NotFound {
                op: "delete rule".to_string(),
                object: format!("rule in {} {chain}", table.name()),
            });
        }
        let mut argv = vec!["-w", WAIT_SECONDS, "-t", table.name(), "-D", chain];
        argv.extend_from_slice(args);
        let out = self.run("delete rule", "", &argv, None)?;
        match out.code {
            Some(0) => Ok(()),
            _ => Err(self.failed(&format!("delete rule in {chain}"), &out)),
        }
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        let out = self.run("iptables-save", "-save", &["-t", table.name()], None)?;
        match out.code {
            Some(0) => Ok(out.stdout),
            _ => Err(self.failed(&format!("iptables-save -t {}", table.name()), &out)),
        }
    }

    fn restore_all(&self, data: &str) -> Result<(), IptablesError> {
        let out = self.run(
            "iptables-restore",
            "-restore",
            &["-w", WAIT_SECONDS, "--noflush", "--counters"],
            Some(data),
        )?;
        match out.code {
            Some(0) => Ok(()),
            _ => Err(self.failed("iptables-restore", &out)),
        }
    }
}
