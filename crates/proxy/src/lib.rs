//! pgha-proxy: the PostgreSQL wire-protocol proxy in front of a pgha cluster.
//!
//! * [`codec`] — the v3 protocol codec (no I/O).
//! * [`auth`] — verifier lookup SQL, SCRAM-SHA-256 both sides, md5.
//! * [`classify`] — the SQL classifier (read-only? transaction/session effects).
//! * [`topology`] — who is primary, which standbys exist (watch channel).
//! * [`monitor`] — node health and WAL positions, role lookup.
//! * [`backend`] — opening an authenticated backend connection as the client.
//! * [`pool`] — backend pools of transaction-mode sessions.
//! * [`bufio`] — socket reads without per-connection read buffers.
//! * [`routing`] — the routing decision (pure): where a unit of client work runs.
//! * [`session`] — one client: routing, session state, failover handling.
//! * [`clients`] — the connected clients, for the admin console's `SHOW CLIENTS`.
//! * [`shared`] — what every session shares (settings, cancel registry, listener kinds).
//! * [`http`] — the HTTP listener (`/metrics`).
//! * [`metrics`] — Prometheus counters (`/metrics` on `http_listen`).
//! * [`login_cache`] — recent backend logins, to answer equivalent logins without a backend.
//! * [`server`] — listeners and the entry point [`Proxy::start`].
//! * [`tls`] — TLS towards clients (rustls), plain-or-TLS client stream.
//! * [`config`] — `ProxySettings` (`proxy.toml`).
//!
//! Hazard for every module: client bytes are untrusted; a bad client must
//! only ever end its own session.

pub mod auth;
pub mod backend;
pub mod bufio;
pub mod classify;
pub mod clients;
pub mod codec;
pub mod config;
pub mod http;
pub mod login_cache;
pub mod metrics;
pub mod monitor;
pub mod pool;
pub mod routing;
pub mod server;
pub mod session;
pub mod shared;
pub mod tls;
pub mod topology;

pub use config::ProxySettings;
pub use server::{ListenerKind, Proxy, ProxyHandle};
pub use topology::{Node, StaticTopology, Topology};
