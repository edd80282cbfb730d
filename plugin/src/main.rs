//! `kubectl guardrails`: GuardedRollouts and SloPolicies for people at a terminal.
//! Errors are one line on stderr and a non-zero exit.
#![forbid(unsafe_code)]

mod actions;
mod cli;
mod errors;
mod reaction;
mod view;

use std::process::ExitCode;

use clap::Parser;
use futures::StreamExt;
use guardrails::{
    api::{GuardedRollout, Phase, SloPolicy},
    conditions::ConditionType,
    rollout::workloads::revision,
};
use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
};
use serde::Serialize;

use actions::Action;
use cli::{Cli, Command, Output};
use errors::{Subject, explain, one_line};

/// A failed command: the line to print and the exit code.
struct Failure(String, u8);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s, 1)
    }
}

type Result<T> = std::result::Result<T, Failure>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(Failure(msg, code)) => {
            eprintln!("error: {}", one_line(&msg));
            ExitCode::from(code)
        }
    }
}

struct Session {
    client: Client,
    namespace: String,
    all: bool,
    output: Output,
    wait: std::time::Duration,
}

impl Session {
    fn rollouts(&self) -> Api<GuardedRollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn subject<'a>(&'a self, kind: &'a str, name: Option<&'a str>) -> Subject<'a> {
        Subject {
            kind,
            name,
            namespace: (!self.all).then_some(self.namespace.as_str()),
        }
    }

    async fn get_rollout(&self, name: &str) -> Result<GuardedRollout> {
        self.rollouts()
            .get(name)
            .await
            .map_err(|e| explain(&e, self.subject("GuardedRollout", Some(name))).into())
    }

    /// SloPolicies for budget columns. Best effort: a user who may read rollouts but
    /// not policies still gets the rollouts.
    async fn slo_policies_quietly(&self) -> Vec<SloPolicy> {
        let api: Api<SloPolicy> = if self.all {
            Api::all(self.client.clone())
        } else {
            Api::namespaced(self.client.clone(), &self.namespace)
        };
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    fn print<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        match self.output {
            Output::Text => print!("{}", text()),
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""))
            ),
        }
    }
}

async fn connect(cli: &Cli) -> Result<Session> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?,
        None => Config::infer().await.map_err(|e| {
            format!("no cluster configured (KUBECONFIG, ~/.kube/config or in-cluster): {e}")
        })?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("kubernetes client: {e}"))?;
    Ok(Session {
        client,
        namespace,
        all: cli.all_namespaces,
        output: cli.output,
        wait: cli.wait.as_duration(),
    })
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let s = connect(&cli).await?;
    match cli.command {
        Command::Get => get(&s).await,
        Command::Status { name } => status(&s, &name).await,
        Command::Watch { name, timeout } => {
            let limit = timeout.map(|t| t.as_duration());
            match limit {
                None => watch(&s, &name).await,
                Some(d) => tokio::time::timeout(d, watch(&s, &name))
                    .await
                    .map_err(|_| {
                        Failure(
                            format!(
                                "{name}: not finished after {}",
                                view::human_duration(d.as_secs_f64())
                            ),
                            2,
                        )
                    })?,
            }
        }
        Command::Budget { name } => budget(&s, name.as_deref()).await,
        Command::Promote { name } => act(&s, &name, Action::Promote).await,
        Command::Abort { name, reason } => act(&s, &name, Action::Abort { reason }).await,
        Command::Retry { name } => act(&s, &name, Action::Retry).await,
        Command::Pause { name } => act(&s, &name, Action::Pause).await,
        Command::Resume { name } => act(&s, &name, Action::Resume).await,
        Command::OverrideGate { name, reason } => {
            act(&s, &name, Action::OverrideGate { reason }).await
        }
    }
}

async fn get(s: &Session) -> Result<ExitCode> {
    let api: Api<GuardedRollout> = if s.all {
        Api::all(s.client.clone())
    } else {
        s.rollouts()
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(&e, s.subject("GuardedRollout", None)))?;
    let slos = s.slo_policies_quietly().await;
    let mut rows: Vec<_> = list
        .items
        .iter()
        .map(|gr| view::rollout_row(gr, &slos))
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    s.print(&rows, || view::rollouts_text(&rows, s.all));
    Ok(ExitCode::SUCCESS)
}

async fn status(s: &Session, name: &str) -> Result<ExitCode> {
    let gr = s.get_rollout(name).await?;
    let slos = s.slo_policies_quietly().await;
    let v = view::status_view(&gr, &slos, Timestamp::now());
    s.print(&v, || view::status_text(&v));
    Ok(ExitCode::SUCCESS)
}

/// How a watched rollout ended, if it did.
fn finished(
    gr: &GuardedRollout,
    target_revision: Option<&str>,
) -> Option<std::result::Result<(), String>> {
    let st = gr.status.as_ref()?;
    if let Some(c) = guardrails::conditions::get(&st.conditions, ConditionType::Stalled)
        && c.status == "True"
        && st.phase != Some(Phase::RolledBack)
    {
        return Some(Err(format!("stalled: {}: {}", c.reason, c.message)));
    }
    let current = |rev: &Option<String>| match target_revision {
        Some(t) => rev.as_deref() == Some(t),
        None => true,
    };
    match st.phase? {
        Phase::Succeeded | Phase::Idle if current(&st.stable_revision) => Some(Ok(())),
        Phase::RolledBack if current(&st.failed_revision) => Some(Err(format!(
            "rolled back: {}",
            st.message.clone().unwrap_or_default()
        ))),
        _ => None,
    }
}

async fn watch(s: &Session, name: &str) -> Result<ExitCode> {
    let first = s.get_rollout(name).await?;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &s.namespace);
    let target = first.spec.target_ref.name.clone();
    let mut stream = watcher::watch_object(s.rollouts(), name).boxed();
    let mut last = String::new();
    while let Some(event) = stream.next().await {
        let gr = match event {
            Ok(Some(gr)) => gr,
            Ok(None) => return Err(format!("GuardedRollout \"{name}\" was deleted").into()),
            Err(e) => return Err(format!("watching {name}: {e}").into()),
        };
        // Until the operator has seen the target's newest template, an old phase does
        // not count. Without permission to read Deployments, the phase alone decides.
        let target_revision = deployments
            .get(&target)
            .await
            .ok()
            .and_then(|d| Some(revision(&d.spec?.template)));
        let v = view::status_view(&gr, &[], Timestamp::now());
        let line = view::watch_line(&v);
        if line != last {
            match s.output {
                Output::Text => println!("{}  {line}", Timestamp::now().strftime("%H:%M:%S")),
                Output::Json => println!("{}", serde_json::to_string(&v).unwrap_or_default()),
            }
            last = line;
        }
        match finished(&gr, target_revision.as_deref()) {
            Some(Ok(())) => return Ok(ExitCode::SUCCESS),
            Some(Err(why)) => return Err(format!("{name}: {why}").into()),
            None => {}
        }
    }
    Err(format!("watch of {name} ended").into())
}

async fn budget(s: &Session, name: Option<&str>) -> Result<ExitCode> {
    let api: Api<SloPolicy> = if s.all {
        Api::all(s.client.clone())
    } else {
        Api::namespaced(s.client.clone(), &s.namespace)
    };
    let policies = match name {
        Some(n) if !s.all => vec![
            api.get(n)
                .await
                .map_err(|e| explain(&e, s.subject("SloPolicy", Some(n))))?,
        ],
        _ => {
            let mut items = api
                .list(&ListParams::default())
                .await
                .map_err(|e| explain(&e, s.subject("SloPolicy", None)))?
                .items;
            if let Some(n) = name {
                items.retain(|p| p.metadata.name.as_deref() == Some(n));
            }
            items
        }
    };
    let mut views: Vec<_> = policies.iter().map(view::budget_view).collect();
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    s.print(&views, || view::budget_text(&views, s.all));
    Ok(ExitCode::SUCCESS)
}

async fn act(s: &Session, name: &str, action: Action) -> Result<ExitCode> {
    action.validate()?;
    let patch = action.patch();
    let since = Timestamp::now() - std::time::Duration::from_secs(2);
    s.rollouts()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| explain(&e, s.subject("GuardedRollout", Some(name))))?;
    let answer = match action.annotation() {
        Some(key) if !s.wait.is_zero() => Some(await_reaction(s, name, &action, key, since).await?),
        _ => None,
    };
    let (said, code) = match &answer {
        None => (None, 0),
        Some(Some(reaction::Reaction::Acted(m))) => (Some(format!("the operator: {m}")), 0),
        Some(Some(reaction::Reaction::Dropped(m))) => {
            (Some(format!("the operator dropped it: {m}")), 1)
        }
        Some(None) => (
            Some(format!(
                "the operator did not answer within {}s (is it running?)",
                s.wait.as_secs()
            )),
            2,
        ),
    };
    let out = serde_json::json!({
        "namespace": s.namespace, "name": name, "action": action.name(), "patch": patch,
        "operator": said,
    });
    s.print(&out, || {
        let done = action.done(&s.namespace, name);
        match &said {
            Some(said) => format!("{done}\n{said}\n"),
            None => format!("{done}\n"),
        }
    });
    Ok(ExitCode::from(code))
}

/// Waits (up to --wait) until the operator has consumed the annotation and said what it
/// did with it in an Event.
async fn await_reaction(
    s: &Session,
    name: &str,
    action: &Action,
    key: &str,
    since: Timestamp,
) -> Result<Option<reaction::Reaction>> {
    use k8s_openapi::api::events::v1::Event;
    let deadline = tokio::time::Instant::now() + s.wait;
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.namespace);
    while tokio::time::Instant::now() < deadline {
        let gr = s.get_rollout(name).await?;
        if !kube::ResourceExt::annotations(&gr).contains_key(key) {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| explain(&e, s.subject("Event", None)))?;
            let seen: Vec<reaction::Seen> = list
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                .map(|e| reaction::Seen {
                    at: e
                        .series
                        .as_ref()
                        .map(|x| x.last_observed_time.0)
                        .or(e.event_time.as_ref().map(|t| t.0))
                        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
                        .unwrap_or(Timestamp::UNIX_EPOCH),
                    reason: e.reason.unwrap_or_default(),
                    note: e.note.unwrap_or_default(),
                })
                .collect();
            if let Some(r) = reaction::find(action, &seen, since) {
                return Ok(Some(r));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Ok(None)
}
