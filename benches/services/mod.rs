//! The objects of one service, as both the scale and the memory benches create them: a
//! Deployment, a SloPolicy with two objectives and a GuardedRollout.

use guardrails::api::{GuardedRollout, SloPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

pub fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name},
                "annotations": {"sim.guardrails.dev/rps": "2"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    }))
    .expect("deployment")
}

pub fn policy(ns: &str, name: &str) -> SloPolicy {
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "SloPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"service": name, "window": "28d", "interval": "1m", "objectives": [
            {"name": "availability", "target": 99.9, "indicator": {"ratio": {
                "errors": format!("http_requests_total{{service=\"{name}\",code=~\"5..\"}}"),
                "total": format!("http_requests_total{{service=\"{name}\"}}")}}},
            {"name": "latency", "target": 99.0, "indicator": {"latency": {
                "histogram": format!("http_request_duration_seconds_bucket{{service=\"{name}\"}}"),
                "threshold": "0.3"}}}
        ]}
    }))
    .expect("policy")
}

pub fn rollout(name: &str) -> GuardedRollout {
    serde_json::from_value(json!({
        "apiVersion": "guardrails.dev/v1alpha1", "kind": "GuardedRollout",
        "metadata": {"name": name},
        "spec": {"targetRef": {"name": name}, "sloPolicyRef": {"name": name},
            "steps": [{"setWeight": 50}, {"pause": {"duration": "1m"}}],
            "analysis": {"interval": "10s", "checks": [{"name": "burn", "sloBurnRate": {"objective": "availability", "window": "5m", "max": 10}}]}}
    }))
    .expect("rollout")
}

/// The operator process a bench started; killed (and reaped) when dropped, on every path.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
