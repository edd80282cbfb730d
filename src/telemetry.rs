//! Logs, operator metrics (`guardrails_*`) and the /metrics, /healthz, /readyz endpoints.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

/// A label value that the series of one object share (its namespace, name, objective):
/// the twenty-odd series of a SloPolicy hold one copy of each, not one per series.
pub type Shared = Arc<str>;

/// Labels of a per-policy, per-objective series. All values come from object names and
/// the spec, so the set is bounded by what users apply.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectiveLabels {
    pub namespace: Shared,
    pub name: Shared,
    pub objective: Shared,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BurnRateLabels {
    pub namespace: Shared,
    pub name: Shared,
    pub objective: Shared,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    pub namespace: Shared,
    pub name: Shared,
    pub gate: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: Shared,
    pub name: Shared,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub namespace: Shared,
    pub name: Shared,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: Shared,
    pub name: Shared,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// Sent, or why an attempt failed (SecretNotFound, SecretInvalid, ReceiverFailed).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// status, deployment, annotations or event.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub budget_remaining: Family<ObjectiveLabels, FloatGauge>,
    pub burn_rate: Family<BurnRateLabels, FloatGauge>,
    pub gate: Family<GateLabels, Gauge>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    pub prometheus_queries: Counter,
    pub api_writes: Family<WriteLabels, Counter>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub rollout_phase: Family<PhaseLabels, Gauge>,
    pub rollout_outcomes: Family<OutcomeLabels, Counter>,
    pub canary_weight: Family<RolloutLabels, Gauge>,
    pub detect_seconds: Family<RolloutLabels, Histogram>,
    pub recover_seconds: Family<RolloutLabels, Histogram>,
}

/// Buckets of time to detect and time to recover, seconds.
fn incident_histogram() -> Histogram {
    Histogram::new([5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("guardrails");
        Self {
            budget_remaining: registered(
                &mut registry,
                "slo_error_budget_remaining_percent",
                "Error budget left per objective, percent (negative when overspent)",
                Family::<ObjectiveLabels, FloatGauge>::default(),
            ),
            burn_rate: registered(
                &mut registry,
                "slo_burn_rate",
                "Burn rate per objective and alerting window",
                Family::<BurnRateLabels, FloatGauge>::default(),
            ),
            gate: registered(
                &mut registry,
                "slo_gate",
                "1 for the current budget gate of a SloPolicy, 0 for the others",
                Family::<GateLabels, Gauge>::default(),
            ),
            reconciles: registered(
                &mut registry,
                "reconcile",
                "Reconciles by controller and result",
                Family::<ReconcileLabels, Counter>::default(),
            ),
            reconcile_seconds: registered(
                &mut registry,
                "reconcile_duration_seconds",
                "Time per reconcile",
                Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                    Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                }),
            ),
            prometheus_queries: registered(
                &mut registry,
                "prometheus_queries",
                "Requests sent to Prometheus (each a query, or several joined by or)",
                Counter::default(),
            ),
            api_writes: registered(
                &mut registry,
                "api_writes",
                "Writes to the Kubernetes API by kind",
                Family::<WriteLabels, Counter>::default(),
            ),
            notifications: registered(
                &mut registry,
                "notifications",
                "Webhook messages sent, and attempts failed by reason",
                Family::<NotificationLabels, Counter>::default(),
            ),
            rollout_phase: registered(
                &mut registry,
                "rollout_phase",
                "1 for the current phase of a GuardedRollout, 0 for the others",
                Family::<PhaseLabels, Gauge>::default(),
            ),
            rollout_outcomes: registered(
                &mut registry,
                "rollout_outcomes",
                "Finished deliveries by outcome",
                Family::<OutcomeLabels, Counter>::default(),
            ),
            canary_weight: registered(
                &mut registry,
                "rollout_canary_weight",
                "Percent of traffic the canary of a GuardedRollout receives",
                Family::<RolloutLabels, Gauge>::default(),
            ),
            detect_seconds: registered(
                &mut registry,
                "rollout_detect_seconds",
                "Rolled-back canaries: canary start to first failing tick",
                Family::<RolloutLabels, Histogram>::new_with_constructor(incident_histogram),
            ),
            recover_seconds: registered(
                &mut registry,
                "rollout_recover_seconds",
                "Rolled-back canaries: first failing tick to canary drained",
                Family::<RolloutLabels, Histogram>::new_with_constructor(incident_histogram),
            ),
            registry: Arc::new(registry),
        }
    }
}

/// `metric`, registered under `name`.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("encoding metrics into a String cannot fail");
        out
    }

    /// Counts one write to the Kubernetes API.
    pub fn wrote(&self, kind: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// A message sent (`Sent`) or an attempt failed (its reason).
    pub fn notified(&self, result: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Messages sent or attempts failed with `result` so far.
    pub fn notifications(&self, result: &str) -> u64 {
        self.notifications
            .get_or_create(&NotificationLabels {
                result: result.to_string(),
            })
            .get()
    }

    /// Writes of `kind` counted so far.
    pub fn writes(&self, kind: &str) -> u64 {
        self.api_writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
            })
            .get()
    }

    /// Starts a reconcile timer; it records the duration and result when dropped.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
            result: "error",
        }
    }
}

/// Records one reconcile on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
    result: &'static str,
}

impl ReconcileTimer<'_> {
    /// Marks the reconcile as successful (the default is "error").
    pub fn ok(&mut self) {
        self.result = "ok";
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let controller = self.controller.to_string();
        self.metrics
            .reconcile_seconds
            .get_or_create(&ControllerLabels {
                controller: controller.clone(),
            })
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics
            .reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                result: self.result.to_string(),
            })
            .inc();
    }
}

/// Shared state of the HTTP endpoints.
#[derive(Clone)]
pub struct Health {
    pub metrics: Metrics,
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves /metrics, /healthz and /readyz until the task is dropped.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the tracing subscriber; `RUST_LOG` filters (default info).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
