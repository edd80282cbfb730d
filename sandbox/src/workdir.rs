//! Temporary folders for servers, under one root, removed when their owner is gone.

use std::path::{Path, PathBuf};

use anyhow::Result;

fn root() -> PathBuf {
    std::env::temp_dir().join("guardrails-sandbox")
}

/// A new folder named after this process. Folders of processes that no longer run are
/// removed first: a server shared by a whole test binary is never dropped, so its
/// folder goes when the next run starts.
pub fn new_workdir(kind: &str) -> Result<tempfile::TempDir> {
    let root = root();
    std::fs::create_dir_all(&root)?;
    remove_stale(&root);
    Ok(tempfile::Builder::new()
        .prefix(&format!("{}-{kind}-", std::process::id()))
        .tempdir_in(&root)?)
}

fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
