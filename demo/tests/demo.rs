//! `make demo` headless: the driver plays its three stories against real servers and
//! the operator binary; `down` leaves no process, port or file behind.
//!
//! Needs the operator binary next to the driver (`cargo test --workspace` and
//! `cargo build --bins` build it).

use std::{net::TcpStream, path::Path, process::Output, time::Duration};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_guardrails-demo");

async fn demo(args: &[&str], state: &Path, secs: u64) -> Output {
    let run = tokio::process::Command::new(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output();
    tokio::time::timeout(Duration::from_secs(secs), run)
        .await
        .unwrap_or_else(|_| panic!("guardrails-demo {args:?} took over {secs}s"))
        .expect("running guardrails-demo")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Live and not a zombie.
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn listening(port: u64) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port as u16)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Stops the demo if the test fails half-way.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::process::Command::new(BIN)
                .args(["down", "--state-dir"])
                .arg(&self.0)
                .output();
        }
    }
}

fn story<'a>(summary: &'a Value, service: &str, outcome: &str) -> &'a Value {
    summary["stories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service && s["outcome"] == outcome)
        .unwrap_or_else(|| panic!("{service} {outcome} in {summary:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_plays_three_stories_and_down_leaves_nothing_behind() {
    assert!(
        Path::new(BIN).with_file_name("guardrails").exists(),
        "the operator binary must be built next to the driver: cargo build --bins"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");

    let _cleanup = Down(state.clone());
    let up = demo(&["up"], &state, 420).await;
    let log = text(&up);
    assert!(up.status.success(), "demo up failed:\n{log}");
    for line in [
        "share-link      Succeeded",
        "asset-pipeline  RolledBack",
        "notification    Blocked",
        "==> demo ready",
        "make demo-down",
    ] {
        assert!(log.contains(line), "{line:?} in the timeline:\n{log}");
    }

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    story(&summary, "share-link", "Promoted");
    let bad = story(&summary, "asset-pipeline", "RolledBack");
    let detect = bad["detectSeconds"].as_f64().expect("time to detect");
    let recover = bad["recoverSeconds"].as_f64().expect("time to recover");
    // Times are whole seconds (the API's timestamps): a canary drained within the
    // second of its rollback recovers in 0 s.
    assert!(detect > 0.0 && recover >= 0.0, "{bad}");
    story(&summary, "notification", "Blocked");
    let fix = story(&summary, "notification", "Promoted");
    assert!(
        fix["story"].as_str().unwrap().contains("corrective"),
        "{fix}"
    );
    let kubeconfig = summary["kubeconfig"].as_str().unwrap();
    assert!(log.contains(kubeconfig), "kubeconfig path printed");

    // The cluster stays up for the user, and a second demo is refused meanwhile.
    let servers: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("servers.json")).unwrap())
            .unwrap();
    let pids: Vec<u64> = servers["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .collect();
    let ports: Vec<u64> = servers["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 4, "etcd, kube-apiserver, prometheus, operator");
    assert!(pids.iter().all(|p| alive(*p)), "{servers}");
    assert!(ports.iter().any(|p| listening(*p)), "{servers}");
    let driver: u64 = std::fs::read_to_string(state.join("driver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(driver));
    let again = demo(&["up"], &state, 30).await;
    assert!(!again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let down = demo(&["down"], &state, 60).await;
    assert!(down.status.success(), "{}", text(&down));
    for pid in pids.iter().chain([&driver]) {
        assert!(!alive(*pid), "process {pid} still running");
    }
    for port in &ports {
        assert!(!listening(*port), "port {port} still open");
    }
    assert!(!state.exists(), "state folder removed");
    // Down again is harmless.
    let again = demo(&["down"], &state, 30).await;
    assert!(again.status.success(), "{}", text(&again));
}
