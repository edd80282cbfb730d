//! The operator's API clients. Request/response calls have connect, read and write
//! timeouts (a hung apiserver becomes an error, never a stuck reconcile) and, with leader
//! election, refuse writes outside leadership. Watches keep kube's long-lived streams.

use std::time::Duration;

use kube::{Client, client::ClientBuilder};

use crate::leader::Leadership;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// From when a request is sent to its answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Clients {
    /// Reconciles' reads and writes: timeouts, and the leadership guard.
    pub calls: Client,
    /// Watch streams.
    pub watches: Client,
    /// The leader election's own Lease calls: timeouts, never guarded.
    pub election: Client,
}

impl Clients {
    pub fn new(config: kube::Config, leadership: Option<&Leadership>) -> Result<Self, kube::Error> {
        let watches = Client::try_from(config.clone())?;
        let mut timed = config;
        timed.connect_timeout = Some(CONNECT_TIMEOUT);
        timed.read_timeout = Some(READ_TIMEOUT);
        timed.write_timeout = Some(WRITE_TIMEOUT);
        timed.reset_reader_on_write = true;
        let election = Client::try_from(timed.clone())?;
        let calls = match leadership {
            None => election.clone(),
            Some(l) => ClientBuilder::try_from(timed)?
                .with_layer(&l.guard())
                .build(),
        };
        Ok(Clients {
            calls,
            watches,
            election,
        })
    }

    /// One client for everything (tests that build their own).
    pub fn single(client: Client) -> Self {
        Clients {
            calls: client.clone(),
            watches: client.clone(),
            election: client,
        }
    }
}
