//! The Prometheus text exposition of the simulated pods and apps.

use std::fmt::Write as _;

use super::{Pod, World};

impl World {
    /// The Prometheus text exposition of every pod and app.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE http_requests_total counter\n");
        for (name, pod) in self.pods.values().flat_map(|pods| pods.iter()) {
            let (requests, errors) = (
                pod.requests.floor(),
                pod.errors.floor().min(pod.requests.floor()),
            );
            let l = labels(pod, name);
            // Series appear with their first request, as client libraries create them.
            if requests - errors >= 1.0 {
                let _ = writeln!(
                    out,
                    "http_requests_total{{{l},code=\"200\"}} {}",
                    requests - errors
                );
            }
            if errors >= 1.0 {
                let _ = writeln!(out, "http_requests_total{{{l},code=\"500\"}} {errors}");
            }
        }
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (name, pod) in self.pods.values().flat_map(|pods| pods.iter()) {
            let requests = pod.requests.floor();
            if requests < 1.0 {
                continue;
            }
            let l = labels(pod, name);
            for le in super::super::BUCKETS {
                let v = if pod.behaviour.latency <= le {
                    requests
                } else {
                    0.0
                };
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {v}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {requests}"
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{l}}} {}",
                requests * pod.behaviour.latency
            );
            let _ = writeln!(out, "http_request_duration_seconds_count{{{l}}} {requests}");
        }
        out.push_str("# TYPE sim_requests_without_ready_pod_total counter\n");
        for ((ns, app), state) in &self.apps {
            let _ = writeln!(
                out,
                "sim_requests_without_ready_pod_total{{namespace=\"{ns}\",app=\"{app}\"}} {}",
                state.lost.floor()
            );
        }
        out
    }
}

fn labels(pod: &Pod, name: &str) -> String {
    format!(
        "namespace=\"{}\",service=\"{}\",pod=\"{name}\"",
        pod.namespace, pod.behaviour.app
    )
}
