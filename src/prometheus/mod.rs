//! Metric sources: what the controllers ask for numbers. `MetricSource` is the seam;
//! `PrometheusSource` the real thing over the Prometheus HTTP API.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use prometheus_http_query::response::Data;

/// Timeout of one query, on the wire and in Prometheus.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a query gave no number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// Prometheus could not be reached (connection refused, timeout, ...).
    #[error("Prometheus at {url} unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// Prometheus answered with an error (bad query, overload, ...).
    #[error("Prometheus at {url} rejected the query: {detail}")]
    Query { url: String, detail: String },
    /// Neither the object nor the operator names a Prometheus.
    #[error("no Prometheus URL: set spec.prometheus.url or the operator's --prometheus-url")]
    NotConfigured,
    /// The query returned more than one series.
    #[error("query returned {0} series; it must return a single number")]
    NotSingle(usize),
}

/// Something that answers PromQL with one number.
pub trait MetricSource: Send + Sync {
    /// The value of `query` at `at`: `Ok(None)` when there is no data (no series, NaN).
    fn scalar(
        &self,
        query: &str,
        at: Timestamp,
    ) -> impl std::future::Future<Output = Result<Option<f64>, SourceError>> + Send;

    /// The value of each query at `at`, in order, each as [`MetricSource::scalar`] gives
    /// it, and the number of requests sent.
    fn scalars(&self, queries: &[String], at: Timestamp) -> impl Future<Output = Scalars> + Send {
        one_by_one(self, queries, at)
    }
}

/// Each query in a request of its own.
async fn one_by_one<S: MetricSource + ?Sized>(
    source: &S,
    queries: &[String],
    at: Timestamp,
) -> Scalars {
    let each = queries.iter().map(|q| source.scalar(q, at));
    (futures::future::join_all(each).await, queries.len() as u64)
}

/// What [`MetricSource::scalars`] answers: a value per query, and the requests sent.
pub type Scalars = (Vec<Result<Option<f64>, SourceError>>, u64);

/// The label that tells apart the queries [`combined`] joins.
const PART: &str = "guardrails_part";

/// One query answering every query of `queries`: each result labelled with its index.
/// Each must return at most one series (`sum(...)`, a ratio of sums), as `scalar` asks.
fn combined(queries: &[String]) -> String {
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| format!("label_replace({q}, \"{PART}\", \"{i}\", \"\", \"\")"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The combined query's result split back per query, as `scalar` would give each.
fn split(count: usize, data: &Data) -> Vec<Result<Option<f64>, SourceError>> {
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); count];
    if let Data::Vector(v) = data {
        for s in v {
            let part = s.metric().get(PART).and_then(|p| p.parse::<usize>().ok());
            if let Some(values) = part.and_then(|i| values.get_mut(i)) {
                values.push(s.sample().value());
            }
        }
    }
    values
        .into_iter()
        .map(|v| match v.as_slice() {
            [] => Ok(None),
            [x] => Ok(Some(*x).filter(|x| !x.is_nan())),
            more => Err(SourceError::NotSingle(more.len())),
        })
        .collect()
}

/// A Prometheus server.
#[derive(Clone)]
pub struct PrometheusSource {
    url: String,
    client: prometheus_http_query::Client,
    queries: Arc<AtomicU64>,
    /// The operator's `guardrails_prometheus_queries_total`, counted with `queries`.
    counted: Option<prometheus_client::metrics::counter::Counter>,
    /// The shortest scrape interval of the active targets, once read.
    scrape_interval: Arc<Mutex<Lookup>>,
    /// Recorded SLO families as last read, shared by every SloPolicy.
    families: Arc<Mutex<HashMap<String, Slot>>>,
    /// Joined queries that failed, by digest, and when.
    refused: Arc<Mutex<HashMap<u64, std::time::Instant>>>,
}

/// How long queries that failed joined are sent one by one: a policy too heavy to read
/// in one request does not cost Prometheus a timeout at every evaluation.
const REFUSED_KEPT: Duration = Duration::from_secs(600);

/// One recorded family: the last read, locked while a read is in flight.
type Slot = Arc<tokio::sync::Mutex<Option<Fetched>>>;

/// A recorded family (or why it could not be read) and when it was read.
struct Fetched {
    at: std::time::Instant,
    family: Result<Arc<crate::slo::recorded::Family>, SourceError>,
}

/// How long a failed read of a recorded family is answered from memory: a Prometheus
/// that is down costs one timeout per family, not one per SloPolicy.
const FAILED_FAMILY_KEPT: Duration = Duration::from_secs(10);

/// What is known of a Prometheus' scrape interval.
#[derive(Clone, Copy, Default)]
enum Lookup {
    #[default]
    Unknown,
    Known(Duration),
    /// Could not be read at this moment: not asked again for `LOOKUP_BACKOFF`.
    Failed(std::time::Instant),
}

/// How long a failed scrape-interval lookup is not repeated: an unreachable Prometheus
/// must not slow every reconcile down by a connection timeout.
const LOOKUP_BACKOFF: Duration = Duration::from_secs(30);

/// The scrape interval assumed while Prometheus cannot tell (unreachable, or no active
/// target discovered yet); asked again on the next reading.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(5);

impl PrometheusSource {
    pub fn new(url: &str) -> Result<Self, SourceError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT + Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| SourceError::Unreachable {
                url: url.into(),
                detail: e.to_string(),
            })?;
        let client =
            prometheus_http_query::Client::from(http, url).map_err(|e| SourceError::Query {
                url: url.into(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            url: url.to_string(),
            client,
            queries: Arc::new(AtomicU64::new(0)),
            counted: None,
            scrape_interval: Default::default(),
            families: Default::default(),
            refused: Default::default(),
        })
    }

    /// Every series of the recorded SLO family `name` (e.g.
    /// `guardrails_slo:burn_rate:5m`), by the SloPolicy objective it belongs to. One
    /// query serves every policy: a family read less than `max_age` ago is not read
    /// again, and callers asking at the same moment wait for the one query in flight.
    /// Returns the family and whether a query was sent.
    pub async fn family(
        &self,
        name: &str,
        max_age: Duration,
    ) -> Result<(Arc<crate::slo::recorded::Family>, bool), SourceError> {
        let slot = {
            let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
            families.entry(name.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        let fresh = |f: &&Fetched| match &f.family {
            Ok(_) => f.at.elapsed() < max_age,
            Err(_) => f.at.elapsed() < max_age.min(FAILED_FAMILY_KEPT),
        };
        if let Some(f) = slot.as_ref().filter(fresh) {
            return f.family.clone().map(|family| (family, false));
        }
        let family = self.instant(name, Timestamp::now()).await.map(|result| {
            let family: crate::slo::recorded::Family = match result.data() {
                Data::Vector(v) => v
                    .iter()
                    .filter_map(|s| {
                        let key = crate::slo::recorded::SeriesKey::from_labels(s.metric())?;
                        Some((key, s.sample().value()))
                    })
                    .collect(),
                _ => Default::default(),
            };
            Arc::new(family)
        });
        *slot = Some(Fetched {
            at: std::time::Instant::now(),
            family: family.clone(),
        });
        family.map(|family| (family, true))
    }

    /// The shortest scrape interval among the active targets: how often new samples
    /// can appear. Read once per source; `DEFAULT_SCRAPE_INTERVAL` while unreadable (and
    /// for `LOOKUP_BACKOFF` after a failed read).
    pub async fn scrape_interval(&self) -> Duration {
        let lookup = *self
            .scrape_interval
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match lookup {
            Lookup::Known(interval) => return interval,
            Lookup::Failed(at) if at.elapsed() < LOOKUP_BACKOFF => {
                return DEFAULT_SCRAPE_INTERVAL;
            }
            _ => {}
        }
        let targets = self
            .client
            .targets(Some(prometheus_http_query::TargetState::Active))
            .await;
        let shortest = targets.ok().and_then(|t| {
            t.active()
                .iter()
                .map(|a| a.scrape_interval().whole_milliseconds())
                .filter(|ms| *ms > 0)
                .min()
        });
        let (lookup, interval) = match shortest {
            Some(ms) => {
                let interval = Duration::from_millis(ms as u64);
                (Lookup::Known(interval), interval)
            }
            None => (
                Lookup::Failed(std::time::Instant::now()),
                DEFAULT_SCRAPE_INTERVAL,
            ),
        };
        *self
            .scrape_interval
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = lookup;
        interval
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The values of `label` over the series `query` returns at `at` (e.g. the `le`
    /// buckets of a histogram), for diagnosing a query that found nothing.
    pub async fn label_values(
        &self,
        query: &str,
        label: &str,
        at: Timestamp,
    ) -> Result<Vec<String>, SourceError> {
        let result = self.instant(query, at).await?;
        Ok(match result.data() {
            Data::Vector(v) => v
                .iter()
                .filter_map(|s| s.metric().get(label).cloned())
                .collect(),
            _ => Vec::new(),
        })
    }

    /// One instant query at `at`, counted, with the query timeout.
    async fn instant(
        &self,
        query: &str,
        at: Timestamp,
    ) -> Result<prometheus_http_query::response::PromqlResult, SourceError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = &self.counted {
            counter.inc();
        }
        self.client
            .query(query)
            .query(
                "time",
                format!("{:.3}", at.as_millisecond() as f64 / 1000.0),
            )
            .timeout(QUERY_TIMEOUT.as_millis() as i64)
            // In the body: a policy's joined queries are several KiB, more than some
            // proxies take in a URL.
            .post()
            .await
            .map_err(|e| match e {
                prometheus_http_query::Error::Prometheus(p) => SourceError::Query {
                    url: self.url.clone(),
                    detail: p.to_string(),
                },
                other => SourceError::Unreachable {
                    url: self.url.clone(),
                    detail: error_chain(&other),
                },
            })
    }

    /// Whether `joined` failed less than [`REFUSED_KEPT`] ago; `refuse` records that it
    /// just did.
    fn refused(&self, joined: &str, refuse: bool) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let digest = BuildHasherDefault::<DefaultHasher>::default().hash_one(joined);
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.retain(|_, at| at.elapsed() < REFUSED_KEPT);
        if refuse {
            refused.insert(digest, std::time::Instant::now());
        }
        refused.contains_key(&digest)
    }

    /// Queries sent so far (for benchmarks and metrics).
    pub fn queries_sent(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl MetricSource for PrometheusSource {
    /// One request for all (`or` of the queries, each labelled with its index): a
    /// policy's dozen windows cost Prometheus one request and one parse. When it fails
    /// (Prometheus refused it, a window too slow or too heavy, or it did not answer in
    /// time), each query is sent alone, so that one window does not lose the others,
    /// and alone again for [`REFUSED_KEPT`].
    async fn scalars(&self, queries: &[String], at: Timestamp) -> Scalars {
        let joined = combined(queries);
        if queries.len() < 2 || self.refused(&joined, false) {
            return one_by_one(self, queries, at).await;
        }
        match self.instant(&joined, at).await {
            Ok(result) => (split(queries.len(), result.data()), 1),
            Err(_) => {
                self.refused(&joined, true);
                let (values, sent) = one_by_one(self, queries, at).await;
                (values, sent + 1)
            }
        }
    }

    async fn scalar(&self, query: &str, at: Timestamp) -> Result<Option<f64>, SourceError> {
        let result = self.instant(query, at).await?;
        let value = match result.data() {
            Data::Scalar(s) => Some(s.value()),
            Data::Vector(v) if v.is_empty() => None,
            Data::Vector(v) if v.len() == 1 => Some(v[0].sample().value()),
            Data::Vector(v) => return Err(SourceError::NotSingle(v.len())),
            Data::Matrix(m) => return Err(SourceError::NotSingle(m.len())),
        };
        Ok(value.filter(|v| !v.is_nan()))
    }
}

/// ring is the one TLS crypto provider in the build (kube uses it too); reqwest needs
/// it installed as the process default.
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// One `PrometheusSource` per URL, shared by all reconciles.
#[derive(Clone, Default)]
pub struct Sources {
    default_url: Option<String>,
    by_url: Arc<Mutex<HashMap<String, PrometheusSource>>>,
    counted: prometheus_client::metrics::counter::Counter,
}

impl Sources {
    /// Sources whose every request, whoever sends it (a SloPolicy's evaluation, a
    /// rollout's analysis, a threshold check), counts in `counted` too.
    pub fn new(
        default_url: Option<String>,
        counted: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            default_url,
            by_url: Default::default(),
            counted,
        }
    }

    /// The source for `url`, else the operator's default.
    pub fn get(&self, url: Option<&str>) -> Result<PrometheusSource, SourceError> {
        let url = url
            .or(self.default_url.as_deref())
            .ok_or(SourceError::NotConfigured)?;
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(url) {
            return Ok(s.clone());
        }
        let source = PrometheusSource {
            counted: Some(self.counted.clone()),
            ..PrometheusSource::new(url)?
        };
        map.insert(url.to_string(), source.clone());
        Ok(source)
    }

    /// Queries sent to every source so far.
    pub fn queries_sent(&self) -> u64 {
        let map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(PrometheusSource::queries_sent).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_queries_are_labelled_by_index_and_split_back() {
        let queries = vec!["sum(a)".to_string(), "sum(b)".into(), "sum(c)".into()];
        assert_eq!(
            combined(&queries),
            "label_replace(sum(a), \"guardrails_part\", \"0\", \"\", \"\") or \
             label_replace(sum(b), \"guardrails_part\", \"1\", \"\", \"\") or \
             label_replace(sum(c), \"guardrails_part\", \"2\", \"\", \"\")"
        );
        // Part 0 answered, part 1 had no data, part 2 is NaN; a part 3 does not exist.
        let data: Data = serde_json::from_value(serde_json::json!({
            "resultType": "vector",
            "result": [
                {"metric": {"guardrails_part": "2"}, "value": [1, "NaN"]},
                {"metric": {"guardrails_part": "0"}, "value": [1, "0.25"]},
                {"metric": {"guardrails_part": "3"}, "value": [1, "1"]},
            ]
        }))
        .unwrap();
        assert_eq!(split(3, &data), vec![Ok(Some(0.25)), Ok(None), Ok(None)]);
        // A part with two series is an error of that part only, as `scalar` says it.
        let data: Data = serde_json::from_value(serde_json::json!({
            "resultType": "vector",
            "result": [
                {"metric": {"guardrails_part": "1", "x": "a"}, "value": [1, "1"]},
                {"metric": {"guardrails_part": "1", "x": "b"}, "value": [1, "2"]},
                {"metric": {"guardrails_part": "0"}, "value": [1, "3"]},
            ]
        }))
        .unwrap();
        assert_eq!(
            split(2, &data),
            vec![Ok(Some(3.0)), Err(SourceError::NotSingle(2))]
        );
    }
}
