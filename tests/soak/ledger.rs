//! What happened during the soak: chaos done, decisions taken, invariants broken (each
//! with its time), shared by the chaos loop, the people shipping and the final checks.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use guardrails::api::Outcome;

#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

#[derive(Default)]
struct Inner {
    /// Chaos actions by kind.
    chaos: BTreeMap<&'static str, u32>,
    /// (outcome, revision good) -> count.
    decisions: BTreeMap<(String, bool), u32>,
    violations: Vec<String>,
    /// (start, end) of each outage longer than providerErrors.timeout; end None while on.
    long_outages: Vec<(Instant, Option<Instant>)>,
    /// Images of the bad revisions shipped.
    bad: std::collections::HashSet<String>,
}

impl Ledger {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            start: Instant::now(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Seconds since the soak started, for the record.
    pub fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn violation(&self, what: String) {
        let line = format!("t={:.1}s {what}", self.t());
        eprintln!("VIOLATION {line}");
        self.with(|i| i.violations.push(line));
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|i| i.violations.clone())
    }

    pub fn chaos(&self, kind: &'static str) {
        eprintln!("t={:.1}s chaos: {kind}", self.t());
        self.with(|i| *i.chaos.entry(kind).or_default() += 1);
    }

    pub fn count(&self, kind: &'static str) -> u32 {
        self.with(|i| i.chaos.get(kind).copied().unwrap_or(0))
    }

    pub fn shipped_bad(&self, image: &str) {
        self.with(|i| i.bad.insert(image.to_string()));
    }

    pub fn is_bad(&self, image: &str) -> bool {
        self.with(|i| i.bad.contains(image))
    }

    pub fn long_outage_began(&self) {
        self.with(|i| i.long_outages.push((Instant::now(), None)));
    }

    pub fn long_outage_ended(&self) {
        self.with(|i| {
            if let Some((_, end)) = i.long_outages.last_mut() {
                *end = Some(Instant::now());
            }
        });
    }

    /// Whether a rollback seen now may be one for a Prometheus outage past `timeout`:
    /// an outage longer than that began at least `timeout` ago and ended at most 30 s
    /// ago (the time to see the rollback).
    pub fn in_long_outage(&self, timeout: std::time::Duration) -> bool {
        let grace = std::time::Duration::from_secs(30);
        self.with(|i| {
            i.long_outages.iter().any(|(start, end)| {
                start.elapsed() >= timeout && end.is_none_or(|e| e.elapsed() <= grace)
            })
        })
    }

    pub fn decided(&self, outcome: Outcome, good: bool) {
        self.with(|i| *i.decisions.entry((outcome.to_string(), good)).or_default() += 1);
    }

    /// The closing table: chaos, decisions, violations.
    pub fn report(&self) -> String {
        self.with(|i| {
            let mut out = format!("soak: {:.0}s\n", self.start.elapsed().as_secs_f64());
            for (kind, n) in &i.chaos {
                out.push_str(&format!("  chaos {kind:<28} {n}\n"));
            }
            for ((outcome, good), n) in &i.decisions {
                let revision = if *good { "good" } else { "bad" };
                out.push_str(&format!(
                    "  decision {outcome:<11} {revision:<4} revisions {n}\n"
                ));
            }
            out.push_str(&format!("  invariant violations {}\n", i.violations.len()));
            out
        })
    }
}

/// A small seeded generator (xorshift64*): the seed is printed, so a run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A duration between `lo` and `hi` seconds.
    pub fn secs(&mut self, lo: f64, hi: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64(lo + (hi - lo) * self.unit())
    }
}
