//! Calling a plugin (CNI spec "Section 3: Execution Protocol"): the binary of its `type`
//! found in the bin dirs (`CNI_PATH`), run with `CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH` and its config on stdin; exit 0 and
//! a result (or nothing) on stdout, or a non-zero exit and an error object
//! (`{"code", "msg", "details"}`) on stdout. Behind [`PluginExec`], so the list logic is
//! tested without plugins and the plugins for real as root (tests/cni.rs).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// A plugin's error (the spec's error object), or what went wrong running it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct PluginError {
    /// The spec's code (1-99 well-known, 100+ the plugin's own; 999: not a CNI answer).
    pub code: u64,
    pub msg: String,
    pub details: String,
}

impl PluginError {
    /// The error of a failed run: the error object on stdout, else stderr's text.
    pub fn from_output(stdout: &[u8], stderr: &[u8], exit: &str) -> Self {
        if let Ok(v) = serde_json::from_slice::<Value>(stdout)
            && let Some(msg) = v.get("msg").and_then(Value::as_str)
        {
            return PluginError {
                code: v.get("code").and_then(Value::as_u64).unwrap_or(999),
                msg: msg.to_string(),
                details: v
                    .get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            };
        }
        let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
        PluginError {
            code: 999,
            msg: format!("{exit}: {}", text.trim()),
            details: String::new(),
        }
    }
}

/// Runs plugins: the kernel-facing side of [`super::runtime::CniRuntime`].
pub trait PluginExec: Send + Sync {
    /// The binary of plugin `plugin_type` in the first of `dirs` that has it.
    fn find(&self, plugin_type: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
        dirs.iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
    }

    /// Runs `binary` with the CNI variables `env` and `stdin`: stdout on exit 0.
    fn exec(
        &self,
        binary: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, PluginError>;
}

/// Runs the real binaries, with the agent's environment plus the CNI variables (as libcni:
/// plugins such as portmap run `iptables`/`nft` from PATH).
pub struct RealExec;

impl PluginExec for RealExec {
    fn exec(
        &self,
        binary: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        let failed = |msg: String| PluginError {
            code: 999,
            msg,
            details: String::new(),
        };
        let mut child = Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("running {}: {e}", binary.display())))?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits before reading its config closes the pipe: its exit
            // status and output say why.
            let _ = input.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(format!("waiting for {}: {e}", binary.display())))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(PluginError::from_output(
                &out.stdout,
                &out.stderr,
                &out.status.to_string(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_from_the_spec_object_or_the_text() {
        let e = PluginError::from_output(
            br#"{"cniVersion": "1.0.0", "code": 7, "msg": "invalid network config", "details": "no bridge"}"#,
            b"",
            "exit status: 1",
        );
        assert_eq!(
            (e.code, e.to_string().as_str()),
            (7, "invalid network config: no bridge")
        );
        let e = PluginError::from_output(b"", b"panic: boom\n", "exit status: 2");
        assert_eq!(
            (e.code, e.to_string().as_str()),
            (999, "exit status: 2: panic: boom")
        );
    }
}
