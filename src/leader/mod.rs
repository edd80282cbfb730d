//! Leader election on a coordination.k8s.io Lease, so that several replicas can run and
//! exactly one reconciles. Timings follow client-go's 15/10/2 s shape: the leader tries to
//! renew every `duration * 2/15` and steps down when it has not renewed within the renew
//! deadline (`duration * 2/3`), counted from before the renew request was sent, so it stops
//! a third of the lease duration before a standby may take over. From the deadline on,
//! [`Leadership`] refuses every write the operator's clients make ([`guard`]), whatever
//! the scheduler does with the controllers' futures; the process then exits and is
//! restarted as a candidate. A leader that shuts down releases the lease so a standby
//! takes over at once.

pub mod guard;
pub mod lease;
pub mod wire;

pub use guard::Leadership;

use std::{future::Future, time::Duration};

use tokio::time::Instant;

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tracing::{info, warn};

use lease::Step;

/// How long a stopping leader tries to give its lease up: with the controllers' drain
/// and the Events' grace (`controller::DRAIN`, `controller::EVENTS_GRACE`), inside the
/// 30 s termination grace.
pub const RELEASE_LIMIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("lease {0} held by {1} now")]
    TakenBy(String, String),
    #[error("lease {0} not renewed within the renew deadline {1:?}: {2}")]
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
    leadership: Leadership,
}

impl Election {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
            leadership: Leadership::default(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this candidate may write now; shared with the clients' write guard.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// How long after the start of its last successful renewal the leader steps down.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often the leader renews, and a candidate retries.
    fn retry_period(&self) -> Duration {
        (self.duration * 2 / 15).max(Duration::from_millis(100))
    }

    /// One read and, unless someone else holds the lease, one write. With `deadline`
    /// (renewing), nothing is written once it has passed.
    async fn attempt(&self, deadline: Option<Instant>) -> Result<Attempt, kube::Error> {
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
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Attempt::Conflict);
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
            let sent = Instant::now();
            let wait = match self.attempt(None).await {
                Ok(Attempt::Held) => {
                    self.leadership.extend(sent + self.renew_deadline());
                    return;
                }
                Ok(Attempt::HeldBy(holder, wait)) => {
                    if holder != last_holder {
                        info!(lease = %self.name, %holder, "waiting for the leader's lease");
                        last_holder = holder;
                    }
                    wait.min(self.retry_period())
                }
                Ok(Attempt::Conflict) => self.retry_period(),
                Err(e) => {
                    warn!(lease = %self.name, error = %e, "lease not readable");
                    self.retry_period()
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
        }
    }

    /// Renews until the renew deadline passes without a renewal (a hung request counts as
    /// a failed one) or someone else holds the lease; from then on, writes are refused.
    pub async fn hold(&self) -> Lost {
        let lost = self.renew_until_lost().await;
        self.leadership.revoke();
        warn!(lease = %self.name, identity = %self.identity, reason = %lost, "leadership lost");
        lost
    }

    async fn renew_until_lost(&self) -> Lost {
        let mut deadline = Instant::now() + self.renew_deadline();
        let mut last_error = String::from("no renewal yet");
        loop {
            tokio::time::sleep_until((Instant::now() + self.retry_period()).min(deadline)).await;
            let sent = Instant::now();
            if sent >= deadline {
                return Lost::NotRenewed(self.name.clone(), self.renew_deadline(), last_error);
            }
            match tokio::time::timeout_at(deadline, self.attempt(Some(deadline))).await {
                Ok(Ok(Attempt::Held)) if Instant::now() < deadline => {
                    deadline = sent + self.renew_deadline();
                    self.leadership.extend(deadline);
                }
                Ok(Ok(Attempt::Held)) => last_error = "renewed too late".into(),
                Ok(Ok(Attempt::HeldBy(holder, _))) => {
                    return Lost::TakenBy(self.name.clone(), holder);
                }
                Ok(Ok(Attempt::Conflict)) => last_error = "write conflict".into(),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "renew request still unanswered".into(),
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
        self.lead(work).await
    }

    /// [`Election::run`], unless `stop` completes while the lease is still awaited: then
    /// `Ok(None)`, and `work` never starts. (Once the lease is held, stopping is
    /// `work`'s to do, so that the lease is released when it is done.)
    pub async fn run_unless_stopped<F: Future>(
        &self,
        work: F,
        stop: impl Future<Output = ()>,
    ) -> Result<Option<F::Output>, Lost> {
        tokio::select! {
            biased;
            () = self.acquire() => {}
            () = stop => {
                // A write that won the lease may have been under way: give it back.
                self.release_within_limit().await;
                return Ok(None);
            }
        }
        self.lead(work).await.map(Some)
    }

    /// [`Election::release`], left to expire if it does not answer within
    /// [`RELEASE_LIMIT`].
    async fn release_within_limit(&self) {
        if tokio::time::timeout(RELEASE_LIMIT, self.release())
            .await
            .is_err()
        {
            warn!(lease = %self.name, "releasing the lease timed out");
        }
    }

    /// Runs `work` on the lease just acquired, as [`Election::run`] does.
    async fn lead<F: Future>(&self, work: F) -> Result<F::Output, Lost> {
        // Leadership first: once lost, `work` is not polled again.
        let out = tokio::select! {
            biased;
            lost = self.hold() => return Err(lost),
            out = work => out,
        };
        // A stop has spent most of its termination grace by now: a release that does
        // not answer soon is left to expire.
        self.release_within_limit().await;
        Ok(out)
    }
}
