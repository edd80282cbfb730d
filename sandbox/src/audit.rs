//! The apiserver's audit log: who wrote what, when. The sandbox logs every request but
//! reads (get, list, watch) at Metadata level, so tests can attribute writes to users;
//! GuardedRollout status writes also carry the status written, so tests can replay
//! every decision that landed.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// The audit policy: writes only, at Metadata level; GuardedRollout status writes at
/// Request level (with the object written).
pub const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: Request
  resources:
  - group: guardrails.dev
    resources: [guardedrollouts/status]
- level: Metadata
";

/// One write the apiserver received.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Write {
    pub verb: String,
    pub user: User,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    /// When the apiserver received the request (RFC 3339, microseconds).
    pub request_received_timestamp: String,
    /// The object sent, for writes logged at Request level.
    #[serde(default)]
    pub request_object: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub username: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: i32,
}

impl Write {
    /// When the apiserver received the request.
    pub fn at(&self) -> k8s_openapi::jiff::Timestamp {
        self.request_received_timestamp
            .parse()
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    /// e.g. "patch guardedrollouts/status ns/app (200)"
    pub fn describe(&self) -> String {
        let r = self.object_ref.clone().unwrap_or_default();
        let sub = r.subresource.map(|s| format!("/{s}")).unwrap_or_default();
        format!(
            "{} {} {}{sub} {}/{} ({}) at {}",
            self.user.username,
            self.verb,
            r.resource,
            r.namespace.unwrap_or_default(),
            r.name.unwrap_or_default(),
            self.response_status.as_ref().map_or(0, |s| s.code),
            self.request_received_timestamp
        )
    }
}

/// Every write in the audit log at `path`, in the order logged.
pub fn writes(path: &Path) -> Result<Vec<Write>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the audit log {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("audit entry {l}")))
        .collect()
}
