//! Leader election on a coordination.k8s.io Lease, so that several replicas can run and
//! exactly one reconciles. The leader renews every third of the lease duration; when it
//! cannot renew within the duration, or sees the lease taken, it stops (the process
//! exits and is restarted as a candidate). A leader that shuts down releases the lease
//! so a standby takes over at once.

pub mod lease;

use std::{future::Future, time::Duration};

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tracing::{info, warn};

use lease::Step;

#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("lease {0} held by {1} now")]
    TakenBy(String, String),
    #[error("lease {0} not renewed for {1:?}: {2}")]
    NotRenewed(String, Duration, String),
}

/// How one attempt to take or renew the lease went.
enum Attempt {
    /// We hold the lease.
    Held,
    /// Someone else holds it, for at most this long.
    HeldBy(String, Duration),
    /// Our write lost a race with another candidate.
    Conflict,
}

/// One candidate for one Lease.
#[derive(Clone)]
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Election {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    async fn attempt(&self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let now = Timestamp::now();
        let step = lease::next(spec, &self.identity, now);
        if let Step::Wait {
            holder,
            for_at_most,
        } = step
        {
            return Ok(Attempt::HeldBy(holder, for_at_most));
        }
        let new_spec = lease::spec_for(&step, spec, &self.identity, now, self.duration);
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(new_spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(new_spec);
                // resourceVersion from the read: optimistic concurrency.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if step != Step::Renew {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                }
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the lease.
    pub async fn acquire(&self) {
        let mut last_holder = String::new();
        loop {
            let wait = match self.attempt().await {
                Ok(Attempt::Held) => return,
                Ok(Attempt::HeldBy(holder, wait)) => {
                    if holder != last_holder {
                        info!(lease = %self.name, %holder, "waiting for the leader's lease");
                        last_holder = holder;
                    }
                    wait.min(self.duration / 3)
                }
                Ok(Attempt::Conflict) => self.duration / 3,
                Err(e) => {
                    warn!(lease = %self.name, error = %e, "lease not readable");
                    self.duration / 3
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
        }
    }

    /// Renews until renewing fails for a whole lease duration or someone else holds it.
    pub async fn hold(&self) -> Lost {
        let mut last_ok = tokio::time::Instant::now();
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.attempt().await {
                Ok(Attempt::Held) => last_ok = tokio::time::Instant::now(),
                Ok(Attempt::HeldBy(holder, _)) => {
                    return Lost::TakenBy(self.name.clone(), holder);
                }
                Ok(Attempt::Conflict) => last_error = "write conflict".into(),
                Err(e) => last_error = e.to_string(),
            }
            if last_ok.elapsed() >= self.duration {
                return Lost::NotRenewed(self.name.clone(), self.duration, last_error);
            }
        }
    }

    /// Gives the lease up if we hold it, so a standby need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_ref() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        lease.spec = Some(lease::released(spec));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "lease released"),
            Err(e) => warn!(lease = %self.name, error = %e, "releasing the lease failed"),
        }
    }

    /// Runs `work` while this candidate leads: waits for the lease, then runs `work`
    /// until it ends (then releases the lease) or leadership is lost (then drops it).
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Lost> {
        self.acquire().await;
        let out = tokio::select! {
            out = work => out,
            lost = self.hold() => return Err(lost),
        };
        self.release().await;
        Ok(out)
    }
}
