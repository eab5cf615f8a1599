//! The Tessera daemon: it owns the node's GPUs through the backend trait and runs people's jobs
//! on their slices. Design: docs/design/daemon.md.
//!
//! * `engine`: the engine and its one seam (`engine::action`: callers, actions, replies) that
//!   every front door uses.
//! * `api`: the HTTP front door (routes to actions, errors to status codes); `http` and
//!   `server`: the connection layer with its limits; `openapi`: the document.
//! * `web`: the read-only web view (`/ui`): each GPU's slices drawn, the queue, recent events,
//!   live by server-sent events; a login form and sessions on TCP.
//! * `wire`: the typed requests and replies shared by the engine, `client` and the CLI.
//! * `daemon`: `tessera serve` — start-up, recovery, rounds, the health watcher.
//! * `utilisation`: GPM utilisation per MIG instance, sampled on the health watcher's thread.
//! * `config`: the TOML file and the TCP token file, every mistake at file:line:column;
//!   `signals`: signal names.

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod signals;
pub mod utilisation;
pub mod web;
pub mod wire;
