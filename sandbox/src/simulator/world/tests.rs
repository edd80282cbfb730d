use super::*;

const S: Duration = Duration::from_secs(1);

fn view(name: &str, hash: &str, replicas: i32, ready_after: Option<Duration>) -> DeploymentView {
    DeploymentView {
        namespace: "ns".into(),
        name: name.into(),
        generation: 1,
        replicas,
        hash: hash.into(),
        behaviour: Behaviour {
            app: "app".into(),
            error_rate: 0.0,
            latency: 0.02,
            rps: 10.0,
            ready_after,
        },
        min_ready: Duration::ZERO,
        progress_deadline: 600 * S,
    }
}

#[test]
fn pods_become_ready_after_their_delay() {
    let t0 = Instant::now();
    let mut w = World::default();
    w.apply(view("a", "h1", 2, Some(2 * S)), t0);
    let s = w.status("ns", "a", t0 + S).unwrap();
    assert_eq!((s.replicas, s.updated, s.ready, s.available), (2, 2, 0, 0));
    w.advance(t0 + 2 * S);
    let s = w.status("ns", "a", t0 + 2 * S).unwrap();
    assert_eq!((s.ready, s.available), (2, 2));
    assert_eq!(s.progressing.1, "NewReplicaSetAvailable");
}

#[test]
fn rolling_update_keeps_old_pods_until_new_ones_are_ready() {
    let t0 = Instant::now();
    let mut w = World::default();
    w.apply(view("a", "h1", 2, Some(S)), t0);
    w.advance(t0 + 2 * S);
    w.apply(view("a", "h2", 2, Some(3 * S)), t0 + 2 * S);
    let s = w.status("ns", "a", t0 + 3 * S).unwrap();
    assert_eq!(
        (s.replicas, s.updated, s.ready),
        (4, 2, 2),
        "old pods serve"
    );
    w.advance(t0 + 5 * S);
    let s = w.status("ns", "a", t0 + 5 * S).unwrap();
    assert_eq!((s.replicas, s.updated, s.ready), (2, 2, 2));
    assert_eq!(w.lost("ns", "app"), 0.0);
}

#[test]
fn an_app_without_ready_pods_loses_its_requests() {
    let t0 = Instant::now();
    let mut w = World::default();
    w.apply(view("a", "h1", 1, Some(S)), t0);
    assert_eq!(
        w.lost("ns", "app"),
        0.0,
        "nothing lost before it ever served"
    );
    w.advance(t0 + 2 * S);
    w.delete("ns", "a", t0 + 2 * S);
    w.apply(view("b", "h1", 1, Some(4 * S)), t0 + 3 * S);
    w.advance(t0 + 10 * S);
    // Unready from 2 s to 7 s, at 10 req/s.
    assert!(
        (w.lost("ns", "app") - 50.0).abs() < 1e-6,
        "{}",
        w.lost("ns", "app")
    );
    assert!(
        w.render()
            .contains("sim_requests_without_ready_pod_total{namespace=\"ns\",app=\"app\"} 50")
    );
}

#[test]
fn never_ready_pods_serve_nothing_and_time_out() {
    let t0 = Instant::now();
    let mut w = World::default();
    let mut v = view("a", "h1", 1, None);
    v.progress_deadline = 5 * S;
    w.apply(v, t0);
    w.advance(t0 + 6 * S);
    let s = w.status("ns", "a", t0 + 6 * S).unwrap();
    assert_eq!(s.ready, 0);
    assert_eq!(
        (s.progressing.0, s.progressing.1),
        (false, "ProgressDeadlineExceeded")
    );
    assert!(
        !w.render().contains("pod=\"a-h1"),
        "no series before a first request"
    );
}

#[test]
fn status_code_series_appear_with_their_first_request_and_reset_on_restart() {
    let t0 = Instant::now();
    let mut w = World::default();
    let mut v = view("a", "h1", 1, Some(Duration::ZERO));
    v.behaviour.error_rate = 0.01;
    w.apply(v, t0);
    w.advance(t0 + 5 * S);
    let text = w.render();
    assert!(text.contains("code=\"200\"} 50"), "{text}");
    assert!(
        !text.contains("code=\"500\""),
        "0.5 errors is no error yet: {text}"
    );
    w.advance(t0 + 10 * S);
    assert!(w.render().contains("code=\"500\"} 1"));
    w.restart("ns", "a", t0 + 10 * S);
    w.advance(t0 + 11 * S);
    assert!(
        w.render().contains("code=\"200\"} 10"),
        "counters start again"
    );
}
