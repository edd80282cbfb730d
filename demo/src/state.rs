//! The demo's state folder: the driver's pid, its log, the kubeconfig, the servers it
//! started and the summary. `down` needs nothing else to stop everything.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub struct StateDir(PathBuf);

/// A process the driver started, and the loopback ports in use.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Servers {
    /// (program name, pid)
    pub processes: Vec<(String, u32)>,
    /// (what, port)
    pub ports: Vec<(String, u16)>,
}

impl StateDir {
    pub fn new(path: PathBuf) -> Self {
        Self(path)
    }

    /// `$TMPDIR/guardrails-demo`.
    pub fn default_path() -> PathBuf {
        std::env::temp_dir().join("guardrails-demo")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("driver.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("demo.log")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.0.join("kubeconfig")
    }
    pub fn operator_log(&self) -> PathBuf {
        self.0.join("operator.log")
    }
    pub fn summary(&self) -> PathBuf {
        self.0.join("summary.json")
    }
    pub fn servers_file(&self) -> PathBuf {
        self.0.join("servers.json")
    }

    pub fn write_servers(&self, s: &Servers) -> Result<()> {
        std::fs::write(self.servers_file(), serde_json::to_string_pretty(s)?)
            .context("writing servers.json")
    }

    pub fn servers(&self) -> Servers {
        std::fs::read_to_string(self.servers_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The driver's pid, if the pid file names a live demo driver.
    pub fn running_driver(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        runs(pid, "guardrails-demo").then_some(pid)
    }
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `program`.
/// The name check keeps a recycled pid from being mistaken for ours.
pub fn runs(pid: u32, program: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    if state_of(&stat) == Some('Z') {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(program))
        .unwrap_or(false)
}

/// The state letter of a /proc/PID/stat line: the field after the parenthesised name.
fn state_of(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_state_survives_odd_process_names() {
        assert_eq!(state_of("42 (etcd) S 1 42"), Some('S'));
        assert_eq!(state_of("42 (a) b) Z 1 42"), Some('Z'));
        assert_eq!(state_of("garbage"), None);
    }

    #[test]
    fn this_process_runs_and_a_wrong_name_does_not() {
        let me = std::process::id();
        assert!(runs(me, "guardrails_demo") || runs(me, "guardrails-demo"));
        assert!(!runs(me, "no-such-program-name"));
        assert!(!runs(u32::MAX - 1, "x"));
    }
}
