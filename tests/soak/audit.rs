//! Invariants read from the apiserver's audit log: one writer at a time, and every
//! GuardedRollout status that landed walks its steps one by one, never back.

use std::collections::BTreeMap;

use guardrails_sandbox::{OPERATOR_USERS, audit::Write};
use serde_json::Value;

/// Violations: two operator identities writing less than a second apart (Lease writes
/// aside: they are the election itself). Refused writes count too: the writer acted.
/// `writes` in the order received.
pub fn one_writer_at_a_time(writes: &[Write]) -> Vec<String> {
    let acting: Vec<&Write> = writes
        .iter()
        .filter(|w| OPERATOR_USERS.contains(&w.user.username.as_str()))
        .filter(|w| w.object_ref.as_ref().is_none_or(|r| r.resource != "leases"))
        .collect();
    acting
        .windows(2)
        .filter(|pair| pair[0].user.username != pair[1].user.username)
        .filter(|pair| (pair[1].at().as_millisecond() - pair[0].at().as_millisecond()).abs() < 1000)
        .map(|pair| {
            format!(
                "two writers within a second: {} then {}",
                pair[0].describe(),
                pair[1].describe()
            )
        })
        .collect()
}

/// The step fields of one landed status write.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    revision: String,
    phase: String,
    step: i64,
    started: String,
}

fn step_of(w: &Write) -> Option<(String, Step)> {
    let r = w.object_ref.as_ref()?;
    let landed = w
        .response_status
        .as_ref()
        .is_some_and(|s| s.code / 100 == 2);
    if r.resource != "guardedrollouts" || r.subresource.as_deref() != Some("status") || !landed {
        return None;
    }
    let status: &Value = &w.request_object.as_ref()?["status"];
    let text = |k: &str| status[k].as_str().unwrap_or_default().to_string();
    let step = Step {
        revision: text("canaryRevision"),
        phase: text("phase"),
        step: status["currentStep"].as_i64()?,
        started: text("stepStartedAt"),
    };
    Some((r.name.clone().unwrap_or_default(), step))
}

/// Violations: within one canary (same revision, a canary phase), a step skipped (the
/// step grew by more than one between two landed writes), repeated (it went back) or
/// restarted (same step, a new start time); a promotion before the last of `steps`
/// steps. The specs make every step a write of its own. Also the number of landed status
/// writes replayed, so a log without them fails.
pub fn steps_in_order(writes: &[Write], steps: i64) -> (usize, Vec<String>) {
    let canary = |s: &Step| matches!(s.phase.as_str(), "Progressing" | "Paused");
    let mut last: BTreeMap<String, Step> = BTreeMap::new();
    let mut replayed = 0;
    let mut out = Vec::new();
    for w in writes {
        let Some((name, now)) = step_of(w) else {
            continue;
        };
        replayed += 1;
        if let Some(before) = last.get(&name)
            && canary(before)
            && now.phase == "Promoting"
            && before.revision == now.revision
            && (now.step != steps || before.step < steps - 1)
        {
            out.push(format!(
                "{name}: promoted before the last step: {before:?} then {now:?} ({})",
                w.describe()
            ));
        }
        if let Some(before) = last.get(&name)
            && canary(before)
            && canary(&now)
            && before.revision == now.revision
        {
            let broken = match now.step - before.step {
                0 if now.started != before.started => Some("restarted"),
                0 | 1 => None,
                d if d < 0 => Some("repeated"),
                _ => Some("skipped"),
            };
            if let Some(what) = broken {
                out.push(format!(
                    "{name}: step {what}: {before:?} then {now:?} ({})",
                    w.describe()
                ));
            }
        }
        last.insert(name, now);
    }
    (replayed, out)
}

/// The checks themselves, on hand-written logs: each must catch what it is for.
mod checks {
    use super::*;
    use serde_json::json;

    fn write(user: &str, at: &str, resource: &str, status: Option<Value>) -> Write {
        let sub = status.as_ref().map(|_| "status");
        serde_json::from_value(json!({
            "verb": "patch", "user": {"username": user},
            "objectRef": {"resource": resource, "namespace": "ns", "name": "svc", "subresource": sub},
            "responseStatus": {"code": 200},
            "requestReceivedTimestamp": at,
            "requestObject": status.map(|s| json!({"status": s})),
        }))
        .unwrap()
    }

    fn step(at: &str, revision: &str, step: i64, started: &str) -> Write {
        let status = json!({"phase": "Progressing", "canaryRevision": revision,
            "currentStep": step, "stepStartedAt": started});
        write("operator-a", at, "guardedrollouts", Some(status))
    }

    #[test]
    fn two_identities_in_one_second_are_caught_lease_writes_aside() {
        let log = [
            write(
                "operator-a",
                "2026-11-28T10:00:00.100Z",
                "deployments",
                None,
            ),
            write("operator-b", "2026-11-28T10:00:00.900Z", "leases", None),
            write(
                "operator-b",
                "2026-11-28T10:00:01.100Z",
                "deployments",
                None,
            ),
        ];
        assert!(one_writer_at_a_time(&log).is_empty());
        let log = [
            write(
                "operator-a",
                "2026-11-28T10:00:00.100Z",
                "deployments",
                None,
            ),
            write("operator-b", "2026-11-28T10:00:00.900Z", "events", None),
        ];
        assert_eq!(one_writer_at_a_time(&log).len(), 1);
        // Across a second boundary too.
        let log = [
            write(
                "operator-a",
                "2026-11-28T10:00:00.900Z",
                "deployments",
                None,
            ),
            write("operator-b", "2026-11-28T10:00:01.100Z", "events", None),
        ];
        assert_eq!(one_writer_at_a_time(&log).len(), 1);
    }

    #[test]
    fn skipped_repeated_and_restarted_steps_are_caught() {
        let walk = [
            step("2026-11-28T10:00:00Z", "r2", 0, "t0"),
            step("2026-11-28T10:00:01Z", "r2", 0, "t0"),
            step("2026-11-28T10:00:02Z", "r2", 1, "t1"),
            step("2026-11-28T10:00:03Z", "r3", 0, "t3"),
        ];
        assert_eq!(steps_in_order(&walk, 2), (4, vec![]));
        for (bad, what) in [
            (step("2026-11-28T10:00:04Z", "r3", 2, "t4"), "skipped"),
            (step("2026-11-28T10:00:04Z", "r3", 0, "t4"), "restarted"),
        ] {
            let mut log = walk.to_vec();
            log.push(bad);
            let (_, broken) = steps_in_order(&log, 2);
            assert!(broken.len() == 1 && broken[0].contains(what), "{broken:?}");
        }
        let mut back = walk[..3].to_vec();
        back.push(step("2026-11-28T10:00:04Z", "r2", 0, "t5"));
        assert!(steps_in_order(&back, 2).1[0].contains("repeated"));
        let mut promoting = step("2026-11-28T10:00:04Z", "r2", 2, "t1");
        promoting.request_object.as_mut().unwrap()["status"]["phase"] = "Promoting".into();
        let mut done = walk[..3].to_vec();
        done.push(promoting.clone());
        assert_eq!(
            steps_in_order(&done, 2).1,
            Vec::<String>::new(),
            "after step 2 of 2"
        );
        let mut early = walk[..2].to_vec();
        early.push(promoting);
        assert!(steps_in_order(&early, 2).1[0].contains("promoted before the last step"));
    }
}
