//! The blast radius of a build failing every request under share-link's shipped settings
//! (examples/share-link: 10% first step, analysis every 30 s, failureLimit 2, the
//! `sequential` check first), with and without the sequential check: how long the
//! canary served errors (its first ready pod to none left), and what that costs a
//! 99.9%/28-day budget when the canary takes 10% of the traffic. The end-to-end
//! environment of the tests: the realistic simulator, Prometheus scraping every second.
//! Run with `make bench`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{env::env, share_link::*};
use guardrails_sandbox::simulator;
use serde_json::json;

const RUNS: usize = 3;

#[tokio::main]
async fn main() {
    let shipped = shipped_share_link();
    let mut without = shipped.clone();
    if let Some(checks) = without["spec"]["analysis"]["checks"].as_array_mut() {
        checks.retain(|c| c.get("sequential").is_none());
    }
    println!("settings | runs | canary served errors (s) | share of a 99.9%/28d budget");
    for (label, key, gr) in [
        ("shipped (sequential first)", "seq", &shipped),
        ("shipped without the sequential check", "ticks", &without),
    ] {
        let mut served = Vec::new();
        for i in 1..=RUNS {
            let env = env(&format!("blast-{key}-{i}")).await;
            share_link(&env, json!({}), gr.clone()).await;
            ship_share_link(&env, json!({simulator::ERROR_RATE: "1"})).await;
            served.push(broken_canary_served(&env).await);
        }
        served.sort();
        let (p50, max) = (served[served.len() / 2], served[served.len() - 1]);
        println!(
            "{label} | {RUNS} | p50 {:.1}, max {:.1} | p50 {:.4}%, max {:.4}%",
            p50.as_secs_f64(),
            max.as_secs_f64(),
            budget_share(p50),
            budget_share(max)
        );
    }
}
