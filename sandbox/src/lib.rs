//! Real servers on loopback for tests and the demo: etcd + kube-apiserver and
//! Prometheus. Every server runs in its own temporary folder and dies with its handle
//! (Drop) or, if the process that started it dies first, with that process.

mod apiserver;
pub mod audit;
mod binaries;
mod exporter;
pub mod gateway;
pub mod http;
mod process;
mod prometheus;
pub mod receiver;
pub mod simulator;
pub mod wait;
mod workdir;

pub use apiserver::{ControlPlane, OPERATOR_USERS, RESTRICTED_USER};
pub use binaries::{Binaries, cache_dir};
pub use exporter::Exporter;
pub use process::{Server, free_port, pause};
pub use prometheus::{Prometheus, PrometheusConfig};
pub use receiver::Receiver;
pub use simulator::Simulator;
