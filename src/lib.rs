//! pbxgate: Microsoft 365 sign-in and Microsoft 365 data in front of a 3CX phone system.
//!
//! Errors: each module has its own `thiserror` type; `anyhow` is used only by the binary
//! (`main.rs`), where errors are reported to a person.

pub mod auth;
pub mod clock;
pub mod config;
pub mod directory;
pub mod graph;
pub mod ids;
pub mod metrics;
pub mod pbx;
pub mod proxy;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod store;
pub mod sync;
pub mod tls;
pub mod web;
