//! `up` starts the driver (`serve`) in its own process group, so it and the servers it
//! owns outlive `make demo`, and shows its log until the stories are over. `down` stops
//! the driver; its servers die with it.

use std::{
    io::Read,
    net::TcpStream,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal, kill_process};

use crate::{state::StateDir, summary::Summary};

pub const READY: &str = "==> demo ready";
pub const FAILED: &str = "==> demo failed";

pub fn up(state: &StateDir) -> Result<bool> {
    if let Some(pid) = state.running_driver() {
        bail!("a demo is already running (pid {pid}); stop it with `make demo-down`");
    }
    let _ = std::fs::remove_dir_all(state.path());
    std::fs::create_dir_all(state.path())?;
    let log = std::fs::File::create(state.log())?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--state-dir")
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the demo driver")?;
    std::fs::write(state.pid_file(), child.id().to_string())?;

    let mut file = std::fs::File::open(state.log())?;
    let mut pending = String::new();
    loop {
        let mut chunk = String::new();
        file.read_to_string(&mut chunk)?;
        pending.push_str(&chunk);
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            print!("{line}");
            if line.starts_with(READY) {
                let summary: Summary =
                    serde_json::from_str(&std::fs::read_to_string(state.summary())?)?;
                return Ok(summary.ok);
            }
            if line.starts_with(FAILED) {
                return Ok(false);
            }
        }
        if let Some(status) = child.try_wait()? {
            // Print what is left, then report.
            let mut rest = String::new();
            file.read_to_string(&mut rest)?;
            print!("{pending}{rest}");
            bail!(
                "the demo driver exited ({status}); log: {}",
                state.log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn down(state: &StateDir) -> Result<()> {
    if !state.path().exists() {
        println!(
            "no demo here ({}): nothing to remove",
            state.path().display()
        );
        return Ok(());
    }
    let servers = state.servers();
    match state.running_driver() {
        Some(pid) => {
            signal(pid, Signal::TERM);
            if !wait(Duration::from_secs(20), || {
                !crate::state::runs(pid, "guardrails-demo")
            }) {
                signal(pid, Signal::KILL);
            }
            println!("stopped the demo driver (pid {pid})");
        }
        None => println!("no demo driver running"),
    }
    // The servers die with the driver; anything left is killed by name and pid.
    for (name, pid) in &servers.processes {
        if !wait(Duration::from_secs(10), || !crate::state::runs(*pid, name)) {
            signal(*pid, Signal::KILL);
            println!("killed {name} (pid {pid})");
        }
    }
    let open: Vec<String> = servers
        .ports
        .iter()
        .filter(|(_, port)| !wait(Duration::from_secs(10), || !listening(*port)))
        .map(|(what, port)| format!("{what} {port}"))
        .collect();
    std::fs::remove_dir_all(state.path()).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    })?;
    if !open.is_empty() {
        bail!("ports still open: {}", open.join(", "));
    }
    println!(
        "demo removed: {} processes stopped, {} ports closed, {} deleted",
        servers.processes.len(),
        servers.ports.len(),
        state.path().display()
    );
    Ok(())
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}
