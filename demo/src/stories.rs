//! The three stories, played at once on the portal's services.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Result;
use guardrails::{
    api::{
        ANNOTATION_CHANGE_CLASS, ANNOTATION_PROMOTE, Gate, GuardedRollout, GuardedRolloutStatus,
        Outcome, Phase, SloPolicy,
    },
    rollout::workloads::revision,
};
use guardrails_sandbox::simulator::ERROR_RATE;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{cluster::NAMESPACE, summary::StoryResult, timeline::Timeline};

const STORY_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Stories {
    client: Client,
    tl: Timeline,
    /// Last progress printed per service, so a line is printed only on a change.
    printed: Mutex<HashMap<String, String>>,
}

/// A phase, step, weight and check results: a new line whenever one changes.
fn progress_key(s: &GuardedRolloutStatus) -> String {
    let checks: Vec<String> = s
        .analysis
        .iter()
        .flat_map(|a| &a.checks)
        .map(|c| format!("{}:{:?}", c.name, c.result))
        .collect();
    format!(
        "{:?}/{:?}/{:?}/{}",
        s.phase,
        s.current_step,
        s.canary_weight,
        checks.join(",")
    )
}

fn describe(gr: &GuardedRollout) -> String {
    let s = gr.status.clone().unwrap_or_default();
    let phase = s.phase.map_or("Pending".to_string(), |p| format!("{p:?}"));
    match s.phase {
        Some(Phase::Progressing | Phase::Paused) => {
            let checks: Vec<String> = s
                .analysis
                .iter()
                .flat_map(|a| &a.checks)
                .map(|c| {
                    let v = c.value.map_or("-".into(), |v| format!("{v:.3}"));
                    format!("{} {v} {:?}", c.name, c.result)
                })
                .collect();
            let mut line = format!(
                "{phase}: step {}/{}, {}% of traffic on the canary",
                s.current_step.unwrap_or(0) + 1,
                gr.spec.steps.len(),
                s.canary_weight.unwrap_or(0)
            );
            if !checks.is_empty() {
                line.push_str(&format!("; checks: {}", checks.join(", ")));
            }
            line
        }
        _ => format!("{phase}: {}", s.message.unwrap_or_default()),
    }
}

impl Stories {
    pub fn new(client: Client, tl: Timeline) -> Self {
        Self {
            client,
            tl,
            printed: Mutex::default(),
        }
    }

    fn rollouts(&self) -> Api<GuardedRollout> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn budget_left(&self, name: &str) -> Option<f64> {
        Api::<SloPolicy>::namespaced(self.client.clone(), NAMESPACE)
            .get(name)
            .await
            .ok()?
            .status?
            .error_budget_remaining
    }

    /// Changes the service's pod template (as a Git commit would) and returns the new
    /// revision.
    async fn ship(
        &self,
        service: &str,
        version: &str,
        annotations: serde_json::Value,
    ) -> Result<String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        let patch = json!({"spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": format!("portal/{service}:{version}")}]}
        }}});
        let d = api
            .patch(service, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        Ok(d.spec.map(|s| revision(&s.template)).unwrap_or_default())
    }

    /// Prints every change of the rollout until `done` holds.
    async fn follow(
        &self,
        service: &str,
        done: impl Fn(&GuardedRollout) -> bool,
    ) -> Result<GuardedRollout> {
        let api = self.rollouts();
        let deadline = Instant::now() + STORY_TIMEOUT;
        loop {
            let gr = api.get(service).await?;
            let key = gr.status.as_ref().map(progress_key).unwrap_or_default();
            let changed = {
                let mut printed = self.printed.lock().unwrap_or_else(|p| p.into_inner());
                printed.insert(service.to_string(), key.clone()) != Some(key)
            };
            if changed {
                self.tl.say(service, describe(&gr));
            }
            if done(&gr) {
                return Ok(gr);
            }
            if Instant::now() > deadline {
                anyhow::bail!("{service}: no outcome within {STORY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits for the operator to adopt the service.
    pub async fn adopted(&self, service: &str) -> Result<()> {
        let gr = self
            .follow(service, |gr| {
                gr.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Some(Phase::Idle))
            })
            .await?;
        let rev = gr
            .status
            .and_then(|s| s.stable_revision)
            .unwrap_or_default();
        self.tl.say(
            service,
            format!("adopted: {service}-primary serves revision {rev}, {service} scaled to 0"),
        );
        Ok(())
    }

    fn result(&self, service: &str, story: &str, expected: Outcome) -> StoryResult {
        StoryResult {
            service: service.into(),
            story: story.into(),
            expected: format!("{expected:?}"),
            outcome: "none".into(),
            seconds: None,
            detect_seconds: None,
            recover_seconds: None,
            budget_left: None,
            detail: String::new(),
        }
    }

    /// Finishes a result from the history entry of `rev`.
    async fn record(
        &self,
        mut r: StoryResult,
        gr: &GuardedRollout,
        rev: &str,
        started: Instant,
    ) -> StoryResult {
        let entry = gr
            .status
            .iter()
            .flat_map(|s| &s.history)
            .find(|h| h.revision == rev);
        r.seconds = Some(started.elapsed().as_secs_f64());
        r.budget_left = self.budget_left(&r.service).await;
        if let Some(h) = entry {
            r.outcome = format!("{:?}", h.outcome);
            r.detail = h.reason.clone().unwrap_or_default();
            r.detect_seconds = h.detect_seconds();
            r.recover_seconds = h.recover_seconds();
        }
        r
    }

    /// The story's result, or `r` with the error that ended it.
    fn or_failed(&self, mut r: StoryResult, played: Result<StoryResult>) -> StoryResult {
        played.unwrap_or_else(|err| {
            self.tl.say(&r.service, format!("story failed: {err:#}"));
            r.detail = format!("{err:#}");
            r
        })
    }

    /// share-link ships version 1.1, healthy, through every step to 100%.
    pub async fn healthy_canary(&self) -> Vec<StoryResult> {
        let s = "share-link";
        let r = self.result(s, "healthy canary, every step to 100%", Outcome::Promoted);
        let played = self.try_healthy(s, r.clone()).await;
        vec![self.or_failed(r, played)]
    }

    async fn try_healthy(&self, s: &str, r: StoryResult) -> Result<StoryResult> {
        self.tl
            .say(s, "ships version 1.1 (healthy): a new pod template");
        let started = Instant::now();
        let rev = self.ship(s, "1.1", json!({})).await?;
        let gr = self.follow(s, |gr| settled(gr, &rev)).await?;
        Ok(self.record(r, &gr, &rev, started).await)
    }

    /// asset-pipeline ships version 2.0, which fails 20% of its requests.
    pub async fn bad_canary(&self) -> Vec<StoryResult> {
        let s = "asset-pipeline";
        let r = self.result(s, "canary fails 20% of requests", Outcome::RolledBack);
        let played = self.try_bad(s, r.clone()).await;
        vec![self.or_failed(r, played)]
    }

    async fn try_bad(&self, s: &str, r: StoryResult) -> Result<StoryResult> {
        self.tl
            .say(s, "ships version 2.0, which fails 20% of its requests");
        let started = Instant::now();
        let rev = self.ship(s, "2.0", json!({ERROR_RATE: "0.2"})).await?;
        let gr = self.follow(s, |gr| settled(gr, &rev)).await?;
        let r = self.record(r, &gr, &rev, started).await;
        self.tl.say(
            s,
            format!(
                "bad canary gone: {:.1}s from canary start to the first failing tick, {:.1}s from there to zero canary replicas",
                r.detect_seconds.unwrap_or(f64::NAN),
                r.recover_seconds.unwrap_or(f64::NAN)
            ),
        );
        Ok(r)
    }

    /// notification's budget is spent: a feature waits, a corrective change ships.
    pub async fn frozen_budget(&self) -> Vec<StoryResult> {
        let s = "notification";
        let blocked = self.result(s, "feature during a budget freeze", Outcome::Blocked);
        let fix = self.result(s, "corrective change during the freeze", Outcome::Promoted);
        let played = self.try_blocked(s, blocked.clone()).await;
        if played.is_err() {
            return vec![self.or_failed(blocked, played), fix];
        }
        let played_fix = self.try_corrective(s, fix.clone()).await;
        vec![
            self.or_failed(blocked, played),
            self.or_failed(fix, played_fix),
        ]
    }

    async fn try_blocked(&self, s: &str, mut r: StoryResult) -> Result<StoryResult> {
        let slos: Api<SloPolicy> = Api::namespaced(self.client.clone(), NAMESPACE);
        let deadline = Instant::now() + Duration::from_secs(60);
        let policy = loop {
            let p = slos.get(s).await?;
            if p.status.as_ref().and_then(|st| st.gate) == Some(Gate::Frozen) {
                break p;
            }
            if Instant::now() > deadline {
                anyhow::bail!("SloPolicy {s} not Frozen after 60s: {:?}", p.status);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let st = policy.status.unwrap_or_default();
        self.tl.say(
            s,
            format!(
                "SloPolicy gate Frozen: {} ({:.1}% of the budget left after an incident four days ago)",
                st.gate_reason.unwrap_or_default(),
                st.error_budget_remaining.unwrap_or(f64::NAN)
            ),
        );
        self.tl.say(s, "ships version 1.1, a feature");
        let started = Instant::now();
        self.ship(s, "1.1", json!({})).await?;
        let gr = self
            .follow(s, |gr| {
                gr.status
                    .as_ref()
                    .is_some_and(|st| st.phase == Some(Phase::Blocked))
            })
            .await?;
        r.outcome = "Blocked".into();
        r.seconds = Some(started.elapsed().as_secs_f64());
        r.detail = gr.status.and_then(|s| s.message).unwrap_or_default();
        r.budget_left = self.budget_left(s).await;
        Ok(r)
    }

    async fn try_corrective(&self, s: &str, r: StoryResult) -> Result<StoryResult> {
        self.tl.say(
            s,
            format!("ships version 1.1.1, the fix, marked {ANNOTATION_CHANGE_CLASS}=corrective"),
        );
        let started = Instant::now();
        let rev = self
            .ship(s, "1.1.1", json!({ANNOTATION_CHANGE_CLASS: "corrective"}))
            .await?;
        let manual = |gr: &GuardedRollout| waiting_for_promote(gr);
        let gr = self.follow(s, |gr| settled(gr, &rev) || manual(gr)).await?;
        let gr = if settled(&gr, &rev) {
            gr
        } else {
            self.tl.say(
                s,
                "waits for a person; on-call checks the dashboards and runs: kubectl guardrails promote notification",
            );
            let patch = json!({"metadata": {"annotations": {ANNOTATION_PROMOTE: ""}}});
            self.rollouts()
                .patch(s, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            self.follow(s, |gr| settled(gr, &rev)).await?
        };
        Ok(self.record(r, &gr, &rev, started).await)
    }
}

/// The revision was promoted or rolled back, and its canary drained (finishedAt).
fn settled(gr: &GuardedRollout, rev: &str) -> bool {
    gr.status.as_ref().is_some_and(|s| {
        matches!(s.phase, Some(Phase::Succeeded | Phase::RolledBack))
            && s.history
                .first()
                .is_some_and(|h| h.revision == rev && h.finished_at.is_some())
    })
}

/// Paused on a pause step without a duration, after a passing tick.
fn waiting_for_promote(gr: &GuardedRollout) -> bool {
    let Some(s) = gr.status.as_ref() else {
        return false;
    };
    let step = s.current_step.and_then(|i| gr.spec.steps.get(i as usize));
    s.phase == Some(Phase::Paused)
        && step.is_some_and(|st| st.pause.as_ref().is_some_and(|p| p.duration.is_none()))
        && s.analysis.as_ref().is_some_and(|a| a.passing_ticks > 0)
}
