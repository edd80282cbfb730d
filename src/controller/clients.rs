//! The operator's API clients. Request/response calls have connect, read and write
//! timeouts (a hung apiserver becomes an error, never a stuck reconcile) and, with leader
//! election, refuse writes outside leadership: writes travel on connections of their own
//! that hand nothing more to the socket once the renew deadline has passed. Watches keep
//! kube's long-lived streams.

use std::{future::Future, pin::Pin, task::Poll, time::Duration};

use http::{Request, Response};
use hyper_timeout::TimeoutConnector;
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioExecutor};
use kube::{
    Client,
    client::{Body, ConfigExt, retry::RetryPolicy},
};
use tower::{BoxError, Layer, Service, ServiceBuilder, retry::RetryLayer};

use crate::leader::{Leadership, guard::is_read, wire::GuardedConnector};

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
        let calls = match leadership {
            None => Client::try_from(timed(config))?,
            Some(l) => guarded(timed(config), l)?,
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

/// Reads on kube's own stack; writes on connections of their own that write nothing
/// outside leadership ([`crate::leader::wire`]); all of it behind the guard layer, which
/// refuses a write at once rather than at the socket.
fn guarded(config: kube::Config, leadership: &Leadership) -> Result<Client, kube::Error> {
    let namespace = config.default_namespace.clone();
    let reads = Client::try_from(config.clone())?;
    let writes = match config.proxy_url {
        // Proxies are connected by kube's own connectors: the guard layer alone.
        Some(_) => reads.clone(),
        None => write_client(&config, leadership)?,
    };
    let routed = leadership.guard().layer(Route { reads, writes });
    Ok(Client::new(routed, namespace))
}

/// kube's stack (base URI, retries, auth, headers, timeouts, TLS) over guarded sockets.
fn write_client(config: &kube::Config, leadership: &Leadership) -> Result<Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = config
        .rustls_https_connector_with_connector(GuardedConnector::new(http, leadership.clone()))?;
    let mut connector = TimeoutConnector::new(tls);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// Sends reads and writes to their own clients.
#[derive(Clone)]
struct Route {
    reads: Client,
    writes: Client,
}

type Sent = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

impl Service<Request<Body>> for Route {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Sent;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Sent {
        let client = match is_read(request.method()) {
            true => self.reads.clone(),
            false => self.writes.clone(),
        };
        Box::pin(async move { client.send(request).await })
    }
}
