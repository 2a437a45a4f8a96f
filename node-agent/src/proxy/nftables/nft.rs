//! The real kernel behind [`Nftables`] (knftables' `realNFTables`, exec.go): a transaction
//! is one `nft -f -` run with its text on stdin (nft applies a file atomically), names are
//! listed with `nft --json -t list chains|sets|maps <family>` and filtered to the table
//! (nft 1.0.6 takes no table there; an absent table lists nothing). Optionally inside a
//! network namespace (`nsenter --net=<path>`), which the tests and the benchmark use; the
//! agent runs nft in its own namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::interface::{Nftables, NftablesError, ObjectKind};
use super::transaction::{Transaction, family_keyword};
use crate::proxy::types::IpFamily;

/// `nft` on one table of one family.
#[derive(Debug, Clone)]
pub struct Nft {
    family: IpFamily,
    table: String,
    netns: Option<PathBuf>,
}

impl Nft {
    /// `nft` inside the network namespace at `netns` (`/run/netns/<name>`,
    /// `/proc/<pid>/ns/net`), or in the agent's own when None.
    pub fn new(family: IpFamily, table: &str, netns: Option<&Path>) -> Self {
        Nft {
            family,
            table: table.to_string(),
            netns: netns.map(Path::to_path_buf),
        }
    }

    /// That nft runs (kube-proxy fails at start when nftables is unusable): `nft list
    /// tables` of the family, in the namespace.
    pub fn check(&self) -> Result<(), NftablesError> {
        self.exec(
            "check nft",
            &["list", "tables", family_keyword(self.family)],
            None,
        )
        .map(|_| ())
    }

    fn command(&self) -> Command {
        match &self.netns {
            None => Command::new("nft"),
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display())).arg("nft");
                c
            }
        }
    }

    /// Runs nft with `args` (and `stdin`), returning its stdout.
    fn exec(&self, op: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NftablesError> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| NftablesError::Failed {
            op: op.to_string(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "nft is not installed (Debian's nftables package)".to_string()
            } else {
                format!("running nft: {e}")
            },
        })?;
        if let Some(text) = stdin {
            // A write error shows as nft's own failure below.
            let _ = child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| NftablesError::Failed {
                op: op.to_string(),
                message: format!("waiting for nft: {e}"),
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(classify_error(op, &self.table, &stderr))
    }
}

/// nft's failure as an [`NftablesError`]: "No such file or directory" is NotFound (a table,
/// chain, set or element that is not there), as knftables' exec.go reads it.
pub fn classify_error(op: &str, table: &str, stderr: &str) -> NftablesError {
    if stderr.contains("No such file or directory") {
        NftablesError::NotFound {
            op: op.to_string(),
            object: format!("table {table} (or an object in it)"),
        }
    } else {
        NftablesError::Failed {
            op: op.to_string(),
            message: format!("nft failed: {stderr}"),
        }
    }
}

/// The names of the `kind` objects in `nft --json list ...` output (the `metainfo` and
/// objects of other tables skipped).
pub fn parse_json_names(json: &str, kind: ObjectKind, table: &str) -> Result<Vec<String>, String> {
    let key = match kind {
        ObjectKind::Chains => "chain",
        ObjectKind::Sets => "set",
        ObjectKind::Maps => "map",
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("nft's JSON output: {e}"))?;
    let items = value
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or("nft's JSON output has no \"nftables\" array")?;
    Ok(items
        .iter()
        .filter_map(|item| item.get(key))
        .filter(|o| o.get("table").and_then(|t| t.as_str()) == Some(table))
        .filter_map(|o| o.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect())
}

impl Nftables for Nft {
    fn list(&self, kind: ObjectKind) -> Result<Vec<String>, NftablesError> {
        let what = match kind {
            ObjectKind::Chains => "chains",
            ObjectKind::Sets => "sets",
            ObjectKind::Maps => "maps",
        };
        let op = format!("list {what}");
        // -t (terse): no set and map elements.
        let out = self.exec(
            &op,
            &["--json", "-t", "list", what, family_keyword(self.family)],
            None,
        )?;
        parse_json_names(&out, kind, &self.table)
            .map_err(|message| NftablesError::Failed { op, message })
    }

    fn run(&self, tx: &Transaction) -> Result<(), NftablesError> {
        if tx.is_empty() {
            return Ok(());
        }
        self.exec("run transaction", &["-f", "-"], Some(&tx.nft_input()))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_of_the_table_and_kind() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"chain": {"family": "ip", "table": "rekube-proxy", "name": "services", "handle": 1}},
            {"chain": {"family": "ip", "table": "other", "name": "foreign", "handle": 2}},
            {"set": {"family": "ip", "name": "cluster-ips", "table": "rekube-proxy", "type": "ipv4_addr", "handle": 3}},
            {"chain": {"family": "ip", "table": "rekube-proxy", "name": "reject-chain", "handle": 4}}]}"#;
        assert_eq!(
            parse_json_names(json, ObjectKind::Chains, "rekube-proxy").unwrap(),
            vec!["services", "reject-chain"]
        );
        assert_eq!(
            parse_json_names(json, ObjectKind::Sets, "rekube-proxy").unwrap(),
            vec!["cluster-ips"]
        );
        assert!(
            parse_json_names(json, ObjectKind::Maps, "rekube-proxy")
                .unwrap()
                .is_empty()
        );
        assert!(parse_json_names("{}", ObjectKind::Chains, "t").is_err());
        assert!(parse_json_names("not json", ObjectKind::Chains, "t").is_err());
    }

    #[test]
    fn errors_are_classified_as_knftables_does() {
        assert!(
            classify_error(
                "list chains",
                "rekube-proxy",
                "Error: No such file or directory\nlist chains ip rekube-proxy\n                   ^^^^^^^^^^^^"
            )
            .is_not_found()
        );
        let e = classify_error("run transaction", "rekube-proxy", "Error: syntax error");
        assert!(!e.is_not_found());
        assert_eq!(
            e.to_string(),
            "run transaction: nft failed: Error: syntax error"
        );
    }
}
