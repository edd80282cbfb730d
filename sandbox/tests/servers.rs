//! The sandbox's servers are real, start on loopback, and go away with their owner.

use std::{path::Path, time::Duration};

use guardrails_sandbox::{Binaries, ControlPlane, Prometheus, PrometheusConfig, http};

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
}

#[test]
fn missing_binaries_say_how_to_get_them() {
    let empty = tempfile::tempdir().unwrap();
    let err = Binaries::locate_in(Some(empty.path()), empty.path(), empty.path().as_os_str())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("kube-apiserver not found"), "{msg}");
    assert!(msg.contains("make test-env"), "{msg}");
}

#[test]
fn kubebuilder_assets_win() {
    let assets = tempfile::tempdir().unwrap();
    for name in ["kube-apiserver", "etcd", "prometheus", "promtool"] {
        std::fs::write(assets.path().join(name), "").unwrap();
    }
    let bin = Binaries::locate_in(
        Some(assets.path()),
        Path::new("/nonexistent"),
        "/usr/bin".as_ref(),
    )
    .unwrap();
    assert_eq!(bin.kube_apiserver, assets.path().join("kube-apiserver"));
    assert_eq!(bin.etcd, assets.path().join("etcd"));
}

/// Five samples a minute apart, ending 10 minutes ago, the last one 400.
fn backfill() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let end = now - 600;
    let mut text = String::from("# TYPE requests counter\n");
    for i in 0..=4u64 {
        let t = end - (4 - i) * 60;
        text.push_str(&format!(
            "requests_total{{service=\"a\"}} {} {t}\n",
            i * 100
        ));
    }
    text.push_str("# EOF\n");
    text
}

async fn query(prom: &Prometheus, q: &str) -> Option<String> {
    let encoded: String = q
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let path = format!("/api/v1/query?query={encoded}");
    http::get(&prom.addr(), &path).await.map(|(_, body)| body)
}

#[tokio::test]
async fn prometheus_serves_backfilled_history_and_survives_restart() {
    let mut prom = Prometheus::start(PrometheusConfig {
        backfill: Some(backfill()),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = query(&prom, "max_over_time(requests_total[1h])")
        .await
        .unwrap();
    assert!(
        body.contains("\"400\""),
        "backfilled maximum 400 not found: {body}"
    );

    prom.stop();
    assert!(
        query(&prom, "up").await.is_none(),
        "stopped Prometheus still answers"
    );
    prom.restart().await.unwrap();
    let body = query(&prom, "max_over_time(requests_total[1h])")
        .await
        .unwrap();
    assert!(
        body.contains("\"400\""),
        "history lost over a restart: {body}"
    );
}

#[tokio::test]
async fn prometheus_scrapes_targets() {
    // One Prometheus scrapes another's own /metrics.
    let target = Prometheus::start(PrometheusConfig::default())
        .await
        .unwrap();
    let prom = Prometheus::start(PrometheusConfig {
        targets: vec![("other".into(), target.addr())],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut last = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = query(&prom, "up{job=\"other\"}").await.unwrap_or_default();
        if last.contains("\"job\":\"other\"") {
            return;
        }
    }
    panic!("no scrape of the configured target: {last}");
}

#[test]
fn servers_die_with_their_handle_even_on_panic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cp = ControlPlane::start().await.expect("control plane starts");
            let pids = cp.pids();
            tx.send(pids).unwrap();
            panic!("test failure while the control plane runs");
        })
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let pids = rx.recv().unwrap();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived its owner");
    }
}
