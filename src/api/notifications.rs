//! Where a GuardedRollout reports how its deliveries end, and what it has reported.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalRef, Outcome};

/// A webhook told of every delivery that ends with one of `outcomes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// Secret, in the same namespace, whose key `url` holds the webhook's http(s) URL.
    /// The operator reads only the Secrets its RBAC names (by default
    /// `guardrails-notifications`).
    pub secret_ref: LocalRef,
    /// JSON (the outcome's fields) or Slack (an incoming-webhook `text`). Default JSON.
    #[serde(default)]
    pub format: NotificationFormat,
    /// The outcomes sent. Default RolledBack, Blocked and Aborted.
    #[serde(default = "default_outcomes")]
    #[schemars(length(min = 1))]
    pub outcomes: Vec<Outcome>,
    /// A link put in every message, with `{namespace}`, `{name}`, `{service}` and
    /// `{revision}` replaced (e.g. a dashboard URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_template: Option<String>,
}

fn default_outcomes() -> Vec<Outcome> {
    vec![Outcome::RolledBack, Outcome::Blocked, Outcome::Aborted]
}

crate::vocabulary! {
/// The body a webhook receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotificationFormat {
    /// A JSON object with the outcome's fields.
    #[default]
    JSON,
    /// A Slack incoming-webhook payload: `{"text": ...}`.
    Slack,
}
}

/// What this rollout's notifications have delivered, and why the last attempt failed.
/// Written by the notifier alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    /// The newest history entry handled (sent, or of an outcome not sent), as
    /// `<outcome>/<revision>/<started>`; the entries after it are sent in order.
    /// Absent: none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_up_to: Option<String>,
    /// The spec generation whose Secret was last read and found usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_generation: Option<i64>,
    /// Why the last attempt failed; absent once one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<NotificationFailure>,
}

/// A failed attempt to notify; retried with backoff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationFailure {
    /// SecretNotFound, SecretInvalid or ReceiverFailed.
    pub reason: crate::reasons::NotifyCondition,
    /// What went wrong.
    pub message: String,
    /// Since when attempts fail this way (retried with backoff, written again only
    /// when the reason or message changes).
    pub since: Time,
}
