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
    /// The leadership the calls are guarded by, with leader election.
    pub leadership: Option<Leadership>,
}

/// The config with the request/response timeouts.
fn timed(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    config.reset_reader_on_write = true;
    config
}

/// The client of the leader election's own Lease calls: timeouts, never guarded.
pub fn election_client(config: &kube::Config) -> Result<Client, kube::Error> {
    Client::try_from(timed(config.clone()))
}

impl Clients {
    pub fn new(config: kube::Config, leadership: Option<&Leadership>) -> Result<Self, kube::Error> {
        let watches = Client::try_from(config.clone())?;
        let builder = ClientBuilder::try_from(timed(config))?;
        let calls = match leadership {
            None => builder.build(),
            Some(l) => builder.with_layer(&l.guard()).build(),
        };
        Ok(Clients {
            calls,
            watches,
            leadership: leadership.cloned(),
        })
    }

    /// One client for everything (tests that build their own).
    pub fn single(client: Client) -> Self {
        Clients {
            calls: client.clone(),
            watches: client,
            leadership: None,
        }
    }
}
