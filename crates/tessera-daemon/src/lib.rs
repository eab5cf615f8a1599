//! The Tessera daemon: it owns the node's GPUs through the backend trait and runs people's jobs
//! on MIG slices. `api` turns HTTP requests into actions, `config` reads the TOML file, `client`
//! is what the CLI uses to talk to it. Design: docs/design/daemon.md.

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod openapi;
pub mod server;
