//! Where the server binaries come from.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

/// Paths of the server binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

/// The folder `make test-env` caches built binaries in: `$GUARDRAILS_CACHE`, else
/// `~/.cache/guardrails`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GUARDRAILS_CACHE") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/guardrails")
}

const HINT: &str =
    "run `make test-env` (or point KUBEBUILDER_ASSETS at a folder with kube-apiserver and etcd)";

impl Binaries {
    /// Finds every binary or fails with a message saying how to get it. `KUBEBUILDER_ASSETS`
    /// (the envtest convention) wins; then the `make test-env` cache; then `PATH`.
    pub fn locate() -> Result<Self> {
        let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::locate_in(assets.as_deref(), &cache_dir().join("bin"), &path)
    }

    /// `locate` with its inputs spelled out.
    pub fn locate_in(assets: Option<&Path>, cache_bin: &Path, path: &OsStr) -> Result<Self> {
        let find = |name: &str| -> Result<PathBuf> {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(a) = assets {
                candidates.push(a.join(name));
            }
            candidates.push(cache_bin.join(name));
            candidates.extend(std::env::split_paths(path).map(|d| d.join(name)));
            match candidates.into_iter().find(|p| p.is_file()) {
                Some(p) => Ok(p),
                None => bail!("{name} not found: {HINT}"),
            }
        };
        Ok(Self {
            kube_apiserver: find("kube-apiserver")?,
            etcd: find("etcd")?,
            prometheus: find("prometheus")?,
            promtool: find("promtool")?,
        })
    }
}
