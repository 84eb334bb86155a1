//! Weft: a WebAssembly-extensible L7 proxy.
//!
//! A request flows one way through these modules, all on one [`worker`]
//! thread: [`listener`] accepts it,
//! [`proxy`] drives its phases, [`route`] picks its route, [`filter`] runs
//! the route's Wasm chain, [`upstream`] sends it on. [`config`] and
//! [`snapshot`] turn a config file into the immutable state requests read;
//! [`reload`] swaps that state while traffic flows; [`admin`] serves
//! readiness and metrics. [`control_client`] takes the configuration from
//! a control plane (`weft run --control`).

pub mod admin;
pub mod allocator;
pub mod config;
pub mod control_client;
pub mod filter;
pub mod http;
pub mod listener;
pub mod logging;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod worker;
