//! Observed state of a GuardedRollout.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ChangeClass, Gate};

crate::vocabulary! {
/// Lifecycle phase of a GuardedRollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Adopting the target and creating the primary.
    Initializing,
    /// The primary serves; nothing to ship.
    Idle,
    /// A new revision waits for the budget gate.
    Blocked,
    /// The canary is moving through its steps.
    Progressing,
    /// Progression is held by spec.paused or by a pause step without a duration (until
    /// a manual promote); analysis and rollback go on.
    Paused,
    /// The primary is being updated to the canary's template.
    Promoting,
    /// The last revision was promoted.
    Succeeded,
    /// The last revision was rolled back.
    RolledBack,
}
}

/// Result of one check on one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CheckResult {
    Pass,
    Fail,
    /// The query returned nothing or NaN.
    NoData,
    /// Prometheus was unreachable or returned an error.
    Error,
    /// The query does not give one number (e.g. it returned several series): the check
    /// must be fixed; it never passes.
    Invalid,
    /// A sequential check without enough evidence either way yet; never a pass.
    Inconclusive,
}

crate::vocabulary! {
/// How a revision's delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    Promoted,
    RolledBack,
    Blocked,
    Superseded,
    Aborted,
}
}

/// Observed state of a GuardedRollout. All progress lives here, so a restarted
/// operator resumes where it was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardedRolloutStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Initializing, Idle, Blocked, Progressing, Paused, Promoting, Succeeded or RolledBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What is happening, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Size of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replica count of the target Deployment when it was adopted; restored when the
    /// GuardedRollout is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<i32>,
    /// Revision (pod-template hash) the primary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The stable revision's pod template: the primary is rebuilt only from it (if the
    /// primary is deleted, or a promotion is rolled back), never from an unanalysed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_template: Option<RevisionTemplate>,
    /// Since when the canary (or the primary being promoted) has not been fully
    /// available at the size asked of it; past spec.progressDeadline it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_since: Option<Time>,
    /// Someone else scaled the target up after the operator scaled it to 0 (a GitOps
    /// tool re-applying its replicas): who, to what, when last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_scaled_up: Option<TargetScaledUp>,
    /// Revision under analysis, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Last revision rolled back; not retried until the template changes or a retry is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// Index of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,
    /// Percent of traffic on the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// When the current canary started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_started_at: Option<Time>,
    /// Budget gate decision for the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateStatus>,
    /// Analysis of the current canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// What spec.notifications has delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<super::NotificationStatus>,
    /// Past deliveries, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Ready, Reconciling and Stalled (kstatus), each with observedGeneration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A writer that scales the target up behind the operator's back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetScaledUp {
    /// The field manager that owns the target's spec.replicas (from managedFields).
    pub manager: String,
    /// The replicas it set.
    pub replicas: i32,
    /// When the operator last found the target scaled up.
    pub last_seen: Time,
}

/// A revision and its pod template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionTemplate {
    /// The revision (pod-template hash).
    pub revision: String,
    /// The pod template, as the target had it.
    #[schemars(schema_with = "super::schema::embedded_object")]
    pub template: super::PodTemplate,
}

/// The budget gate's decision for a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// Gate of the SloPolicy when the decision was made.
    pub state: Gate,
    /// Change class of the revision.
    pub change_class: ChangeClass,
    /// Whether the revision may ship.
    pub allowed: bool,
    /// Reason given in the guardrails.dev/override-gate annotation, when it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#override: Option<String>,
}

/// Analysis state of the current canary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Failed ticks in a row.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Passing ticks at the current weight.
    #[serde(default)]
    pub passing_ticks: i32,
    /// When the last tick ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick_time: Option<Time>,
    /// When sequential checks last read their evidence (on ticks and between them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evidence_time: Option<Time>,
    /// Since when every canary pod the Deployment lists runs this revision: sequential
    /// checks count from here, so an earlier revision's pods (matching the same names) do
    /// not count; terminating ones may, for their last seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_since: Option<Time>,
    /// First failed tick of the current run of failures (becomes history detectedAt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// Since when checks have returned no data, if they do now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data_since: Option<Time>,
    /// Since when Prometheus has been failing, if it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_errors_since: Option<Time>,
    /// Results of the last tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
}

/// Result of one check on the last tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// Name of the check.
    pub name: String,
    /// Value the query returned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Lowest passing value, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest passing value, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Pass, Fail, NoData or Error.
    pub result: CheckResult,
    /// Details (the error, or the primary's value for compare checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A sequential check's evidence since the canary started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceStatus>,
}

/// What a sequential check has read since the canary started, and what it says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceStatus {
    /// The canary's requests and errors.
    pub canary: RequestCounts,
    /// The primary's requests and errors over the same time.
    pub primary: RequestCounts,
    /// Log-likelihood ratio of `detect` over `tolerate`, canary against primary.
    pub vs_primary: f64,
    /// The same against the objective's allowed error ratio.
    pub vs_objective: f64,
    /// ln(1/alpha): Fail at or above it. Pass is at or below -ln(2/alpha) (bound + ln 2).
    pub bound: f64,
    /// Pass, Fail or Inconclusive; a Pass holds unless the evidence turns to Fail.
    pub decision: CheckResult,
}

/// Requests and errors counted by a sequential check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RequestCounts {
    pub requests: i64,
    pub errors: i64,
}

impl HistoryEntry {
    /// Seconds from the canary's start to its first failing tick (rollbacks).
    pub fn detect_seconds(&self) -> Option<f64> {
        seconds_between(self.started_at.as_ref()?, self.detected_at.as_ref()?)
    }

    /// Seconds from the first failing tick to the canary drained (rollbacks).
    pub fn recover_seconds(&self) -> Option<f64> {
        seconds_between(self.detected_at.as_ref()?, self.finished_at.as_ref()?)
    }
}

fn seconds_between(a: &Time, b: &Time) -> Option<f64> {
    Some((b.0.as_millisecond() - a.0.as_millisecond()) as f64 / 1000.0)
}

/// One past delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Revision delivered.
    pub revision: String,
    /// Its change class.
    pub change_class: ChangeClass,
    /// Promoted, RolledBack, Blocked, Superseded or Aborted.
    pub outcome: Outcome,
    /// When the canary started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// First failing tick, for rollbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
    /// When the canary was drained (or the primary promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why it ended this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
