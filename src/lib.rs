//! pbxgate: Microsoft 365 sign-in and Microsoft 365 data in front of a 3CX phone system.
//!
//! Layers, each using only those below it (README "Architecture"):
//! 1. foundations: `clock`, `ids` (from `pbxgate-wire`), `config`, `errors`, `logging`,
//!    `metrics`, `seal`, `tls`, `web`;
//! 2. state and outside parties: `store`, `session`, `oidc` (Entra ID), `graph`, `pbx`
//!    (3CX), `proxy` (the forwarding to 3CX);
//! 3. domain: `directory`, `sync`;
//! 4. composition: `app`;
//! 5. front doors: `auth` (sign-in), `gate` (everything bound for 3CX), `http` (the server).
//!
//! Errors: each module has its own `thiserror` type; `anyhow` is used only by the binary
//! (`main.rs`), where errors are reported to a person.

pub use pbxgate_wire::{clock, ids};

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod directory;
pub mod doctor;
pub mod errors;
pub mod gate;
pub mod graph;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod pbx;
pub mod proxy;
pub mod seal;
pub mod session;
pub mod setup;
pub mod store;
pub mod sync;
pub mod tls;
pub mod web;
