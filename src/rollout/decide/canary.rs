//! A canary in flight: its deadline, burn-rate alerts, analysis ticks and steps.

use super::*;

impl Machine<'_> {
    /// A canary runs.
    pub(super) fn canary(&mut self, target: &Target) {
        let rev = self.s.canary_revision.clone().unwrap_or_default();
        if target.revision != rev {
            self.supersede(target, &rev);
            return;
        }
        if let Some(why) = self.blocked() {
            self.drain(&why);
            return;
        }
        self.start_evidence(&rev);
        if let Some(reason) = self.pending.abort.take() {
            self.roll_back(Outcome::Aborted, format!("aborted: {reason}"));
            return;
        }
        if let Some(reason) = self.burn_rate_alert() {
            self.roll_back(Outcome::RolledBack, reason);
            return;
        }
        if let Some(reason) = self.analyse() {
            self.roll_back(Outcome::RolledBack, reason);
            return;
        }
        if std::mem::take(&mut self.pending.promote) {
            self.begin_promotion("promoted by hand");
            return;
        }
        self.advance();
    }

    /// Through the steps as far as the canary allows, unless paused; the canary's
    /// deadline counts while it is not ready at its size.
    pub(super) fn advance(&mut self) {
        if self.spec.paused {
            let msg = steps::describe(self.spec, &self.s, "paused (spec.paused)");
            self.set_phase(Phase::Paused, msg);
            self.requeue_within(self.spec.analysis.interval.as_duration());
        } else if let Some(why) = self.inconclusive_too_long() {
            let msg = steps::describe(self.spec, &self.s, &why);
            self.set_phase(Phase::Paused, msg);
            self.requeue_within(self.spec.analysis.interval.as_duration());
        } else {
            self.progress();
        }
        if matches!(self.s.phase, Some(Phase::Progressing | Phase::Paused)) {
            let size = self.canary_size();
            let ready = self.canary_ready_at(size);
            let canary = self.obs.canary.clone();
            self.deadline(Role::Canary, canary.as_ref(), ready, size);
        }
    }

    /// The canary's size at its current weight.
    pub(super) fn canary_size(&self) -> i32 {
        let weight = self.s.canary_weight.unwrap_or(0);
        traffic::router(self.spec).canary_replicas(self.primary_replicas(), weight)
    }

    /// spec.progressDeadline: a workload asked to change that is not fully available in
    /// time is rolled back.
    pub(super) fn deadline(&mut self, role: Role, w: Option<&Workload>, ready: bool, size: i32) {
        if ready {
            self.s.unavailable_since = None;
            return;
        }
        let since = self
            .s
            .unavailable_since
            .get_or_insert_with(|| self.now.clone())
            .clone();
        let waited = elapsed(&since, self.now);
        let limit = self.spec.progress_deadline.as_duration();
        if waited < limit {
            self.requeue_within(limit - waited);
            return;
        }
        let name = role.name(&self.spec.target_ref.name);
        let seen = w.map_or("it does not exist".to_string(), |w| {
            let condition = w
                .deadline_exceeded
                .as_ref()
                .map(|m| format!("; Progressing: ProgressDeadlineExceeded, {m}"))
                .unwrap_or_default();
            format!(
                "{}/{size} ready, {} available, {} updated{condition}",
                w.ready, w.available, w.updated
            )
        });
        let reason = format!(
            "ProgressDeadlineExceeded: Deployment {name} not fully available after {} ({seen})",
            self.spec.progress_deadline
        );
        self.note(RolloutEvent::ProgressDeadlineExceeded, reason.clone());
        self.roll_back(Outcome::RolledBack, reason);
    }

    /// abortOnBurnRateAlert: a tier of the SloPolicy that started firing after this
    /// canary started. Never for a corrective change (it is the fix for the incident),
    /// and never for a tier already firing before the canary (an earlier bad revision's
    /// errors still in the window are not this canary's).
    pub(super) fn burn_rate_alert(&self) -> Option<String> {
        let class = self
            .s
            .gate
            .as_ref()
            .map_or(self.spec.change_class, |g| g.change_class);
        if class == crate::api::ChangeClass::Corrective {
            return None;
        }
        let view = self.obs.gate.found()?;
        let on = self.spec.analysis.abort_on_burn_rate_alert;
        let started = self.s.canary_started_at.as_ref()?;
        let (severity, since) = view.firing.iter().find(|(s, since)| {
            on.aborts_on(*s) && since.as_ref().is_none_or(|t| t.0 >= started.0)
        })?;
        let name = self
            .spec
            .slo_policy_ref
            .as_ref()
            .map(|r| r.name.as_str())
            .unwrap_or("");
        let when = since
            .as_ref()
            .map(|t| format!(" since {}", t.0))
            .unwrap_or_default();
        Some(format!(
            "SloPolicy {name} fires a {severity} burn-rate alert{when}, after the canary started"
        ))
    }

    /// Applies this reconcile's tick or evidence reading, if any. Returns the rollback
    /// reason when the canary must go.
    pub(super) fn analyse(&mut self) -> Option<String> {
        let analysis = self.s.analysis.get_or_insert_with(Default::default);
        let outcome = match (&self.obs.tick, &self.obs.evidence) {
            (Some(checks), _) => {
                tick::apply(&self.spec.analysis, analysis, checks.clone(), self.now)
            }
            (None, Some(checks)) => tick::apply_evidence(analysis, checks.clone(), self.now),
            (None, None) => return None,
        };
        if let Some(note) = outcome.failed_tick {
            self.note(RolloutEvent::AnalysisFailed, note);
        }
        outcome.rollback
    }

    /// Sequential checks count from the first moment every canary pod runs `rev`.
    fn start_evidence(&mut self, rev: &str) {
        let pure = self
            .obs
            .canary
            .as_ref()
            .is_some_and(|c| c.only_revision(rev));
        if let Some(a) = self.s.analysis.as_mut()
            && a.evidence_since.is_none()
            && pure
        {
            a.evidence_since = Some(self.now.clone());
        }
    }

    /// A sequential check still Inconclusive `maxDuration` after the canary started:
    /// what the rollout waits for (a person: promote or abort).
    fn inconclusive_too_long(&self) -> Option<String> {
        let started = self.s.canary_started_at.as_ref()?;
        let waited = elapsed(started, self.now);
        let analysis = self.s.analysis.as_ref()?;
        self.spec.analysis.checks.iter().find_map(|check| {
            let Ok(CheckKind::Sequential(s)) = check.kind() else {
                return None;
            };
            let status = analysis.checks.iter().find(|c| c.name == check.name)?;
            let open = status.result == CheckResult::Inconclusive;
            (open && waited >= s.max_duration.as_duration()).then(|| {
                format!(
                    "{} inconclusive after {}, waiting for a person (promote or abort)",
                    check.name, s.max_duration
                )
            })
        })
    }

    /// Moves through the steps; after the last one, promotes.
    pub(super) fn progress(&mut self) {
        let primary = self.primary_replicas();
        loop {
            let index = self.s.current_step.unwrap_or(0) as usize;
            let Some(step) = self.spec.steps.get(index) else {
                if !self.analysis_passing() {
                    // Promotion needs a passing tick at the final weight, and none since.
                    let what = steps::describe(self.spec, &self.s, "waiting for a passing tick");
                    self.set_phase(Phase::Progressing, what);
                    return;
                }
                let why = format!("all {} steps passed", self.spec.steps.len());
                self.begin_promotion(&why);
                return;
            };
            // A step of no kind is an invalid spec, blocked before any decision.
            let Ok(kind) = step.kind() else {
                return;
            };
            let done = match kind {
                StepKind::SetWeight(w) => self.weight_step_done(w, primary),
                StepKind::Pause(Some(d)) => self.timed_pause_done(d.as_duration()),
                StepKind::Pause(None) => {
                    let what = steps::describe(self.spec, &self.s, "waiting for a manual promote");
                    self.set_phase(Phase::Paused, what);
                    self.requeue_within(self.spec.analysis.interval.as_duration());
                    return;
                }
            };
            if !done {
                let what = steps::describe(self.spec, &self.s, "");
                self.set_phase(Phase::Progressing, what);
                return;
            }
            self.note(
                RolloutEvent::StepCompleted,
                format!("step {}/{} completed", index + 1, self.spec.steps.len()),
            );
            self.s.current_step = Some(index as i32 + 1);
            self.s.step_started_at = Some(self.now.clone());
        }
    }

    /// A setWeight step is done once the canary is ready at its size for the weight; a
    /// new weight starts counting passing ticks again.
    fn weight_step_done(&mut self, weight: i32, primary: i32) -> bool {
        if self.s.canary_weight != Some(weight) {
            self.s.canary_weight = Some(weight);
            if let Some(a) = &mut self.s.analysis {
                a.passing_ticks = 0;
            }
        }
        let size = traffic::router(self.spec).canary_replicas(primary, weight);
        self.canary_ready_at(size)
    }

    /// A timed pause is done once it has elapsed with the analysis passing.
    fn timed_pause_done(&mut self, duration: Duration) -> bool {
        let elapsed = self.elapsed_in_step();
        if elapsed < duration {
            self.requeue_within(duration - elapsed);
            return false;
        }
        let passing = self.s.analysis.as_ref().map_or(0, |a| a.passing_ticks);
        passing >= 1 && self.analysis_passing()
    }

    /// The analysis stands on a pass: a passing tick at the current weight, and no
    /// failure, missing data or provider error since, and no check Inconclusive now.
    pub(super) fn analysis_passing(&self) -> bool {
        self.s.analysis.as_ref().is_some_and(|a| {
            a.passing_ticks >= 1
                && a.consecutive_failures == 0
                && a.no_data_since.is_none()
                && a.provider_errors_since.is_none()
                && a.checks
                    .iter()
                    .all(|c| c.result != CheckResult::Inconclusive)
        })
    }

    pub(super) fn canary_ready_at(&self, replicas: i32) -> bool {
        let rev = self.s.canary_revision.as_deref().unwrap_or_default();
        self.obs
            .canary
            .as_ref()
            .is_some_and(|c| c.settled(rev, replicas))
    }

    pub(super) fn elapsed_in_step(&self) -> Duration {
        self.s
            .step_started_at
            .as_ref()
            .map(|t| elapsed(t, self.now))
            .unwrap_or_default()
    }

    /// A check of the running canary whose last answer was not one number stalls the
    /// rollout until the check is fixed (it holds as no data meanwhile).
    pub(super) fn invalid_check(&mut self) {
        let running = matches!(self.s.phase, Some(Phase::Progressing | Phase::Paused));
        let invalid = self
            .s
            .analysis
            .iter()
            .flat_map(|a| &a.checks)
            .find(|c| c.result == CheckResult::Invalid);
        if let (true, None, Some(c)) = (running, &self.stall, invalid) {
            let index = self
                .spec
                .analysis
                .checks
                .iter()
                .position(|k| k.name == c.name);
            let message = format!(
                "spec.analysis.checks[{}] ({}): {}",
                index.unwrap_or_default(),
                c.name,
                c.message.clone().unwrap_or_default()
            );
            self.stall = Some(Stall::Blocked(Blocker::InvalidSpec(message)));
        }
    }
}
