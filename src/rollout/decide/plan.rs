//! The workloads and route weight as they should be.

use super::*;

impl Machine<'_> {
    /// Keeps the stable revision's template in status, from wherever it is seen, so
    /// the primary can always be rebuilt from it.
    pub(super) fn remember_stable_template(&mut self, target: &Target) {
        let Some(stable) = self.s.stable_revision.clone() else {
            return;
        };
        if self.stable().is_some() {
            return;
        }
        let from_workload = |w: &Option<Workload>| {
            w.as_ref()
                .filter(|w| w.revision.as_deref() == Some(stable.as_str()))
                .and_then(|w| w.template.clone())
        };
        let found = from_workload(&self.obs.primary)
            .or_else(|| from_workload(&self.obs.canary))
            .or_else(|| (target.revision == stable).then(|| target.template.clone()));
        if let Some(template) = found {
            self.s.stable_template = Some(RevisionTemplate {
                revision: stable,
                template: template.into(),
            });
        }
    }

    /// The stable revision's template, if known.
    pub(super) fn stable(&self) -> Option<Desired> {
        let rev = self.s.stable_revision.clone()?;
        let stored = self
            .s
            .stable_template
            .as_ref()
            .filter(|t| t.revision == rev)?;
        Some(Desired {
            revision: rev,
            template: stored.template.get()?,
            replicas: self.primary_replicas(),
        })
    }

    /// Desired workloads for the state reached.
    pub(super) fn plan(&mut self, target: &Target) -> Plan {
        let phase = self.s.phase.unwrap_or(Phase::Initializing);
        let from_target = |replicas| Desired {
            revision: target.revision.clone(),
            template: target.template.clone(),
            replicas,
        };
        let existing_canary = |replicas| {
            self.obs
                .canary
                .as_ref()
                .and_then(|c| {
                    Some(Desired {
                        revision: c.revision.clone()?,
                        template: c.template.clone()?,
                        replicas,
                    })
                })
                .unwrap_or_else(|| from_target(replicas))
        };
        let canary = match phase {
            Phase::Progressing | Phase::Paused => from_target(self.canary_size()),
            Phase::Promoting => existing_canary(self.canary_size()),
            _ => existing_canary(0),
        };
        let primary = if phase == Phase::Promoting {
            Some(Desired {
                replicas: self.primary_replicas(),
                ..canary.clone()
            })
        } else {
            self.stable()
        };
        self.check_primary(primary.as_ref());
        let route_weight = self.route_weight(phase, canary.replicas);
        // The target gives up its pods only to a primary that serves: while the primary
        // is gone or being rebuilt, whatever the target runs (someone may have scaled it
        // up to stop an outage) stays.
        let primary_serves = self
            .obs
            .primary
            .as_ref()
            .is_some_and(|p| p.available >= p.replicas.max(1));
        Plan {
            primary,
            canary,
            scale_target_to_zero: phase != Phase::Initializing && primary_serves,
            route_weight,
            canary_waits_for_route: phase != Phase::RolledBack,
        }
    }

    /// A primary that is gone is rebuilt from the stable template, or the rollout
    /// stalls saying how to recover.
    pub(super) fn check_primary(&mut self, desired: Option<&Desired>) {
        let stable = self.s.stable_revision.clone().unwrap_or_default();
        let name = Role::Primary.name(&self.spec.target_ref.name);
        match (desired, &self.obs.primary) {
            (None, p) if p.as_ref().and_then(|p| p.revision.as_deref()) != Some(&stable) => {
                self.stall = Some(Stall::PrimaryTemplateUnknown(format!(
                    "Deployment {name} is gone and the template of stable revision {stable} is \
                     known nowhere: set the target's template back to revision {stable} (for \
                     example revert the change in Git), or delete and re-create the \
                     GuardedRollout to adopt the target as it is"
                )));
            }
            (Some(_), None) if self.s.phase != Some(Phase::Initializing) => self.note(
                RolloutEvent::PrimaryRebuilt,
                format!("Deployment {name} was missing: rebuilt from stable revision {stable}"),
            ),
            _ => {}
        }
    }

    /// The weight the router should send the canary (see TrafficRouter::plan_weight).
    pub(super) fn route_weight(&self, phase: Phase, canary_replicas: i32) -> Option<i32> {
        let router = traffic::router(self.spec);
        let previous = self.previous_weight();
        let needed = router.canary_replicas(self.primary_replicas(), previous);
        let rev = self.s.canary_revision.as_deref().unwrap_or_default();
        let ready_for_previous =
            self.obs.canary.as_ref().is_some_and(|c| {
                c.current && c.revision.as_deref() == Some(rev) && c.ready >= needed
            });
        router.plan_weight(traffic::Split {
            adopted: phase != Phase::Initializing,
            active: matches!(phase, Phase::Progressing | Phase::Paused | Phase::Promoting),
            weight: self.s.canary_weight.unwrap_or(0),
            ready: self.canary_ready_at(canary_replicas),
            previous,
            ready_for_previous,
        })
    }

    /// The weight of the setWeight step before the current weight's, 0 if none.
    pub(super) fn previous_weight(&self) -> i32 {
        let upto = (self.s.current_step.unwrap_or(0) as usize + 1).min(self.spec.steps.len());
        let weights: Vec<i32> = self.spec.steps[..upto]
            .iter()
            .filter_map(|s| match s.kind() {
                Ok(StepKind::SetWeight(w)) => Some(w),
                _ => None,
            })
            .collect();
        match weights.as_slice() {
            [.., previous, _] => *previous,
            _ => 0,
        }
    }
}
