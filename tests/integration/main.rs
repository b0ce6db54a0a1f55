//! One integration-test binary (one link, shared helpers): real listeners on loopback ports.

#![allow(
    clippy::disallowed_methods,
    reason = "tests measure how long things take"
)]

mod admin;
mod auth;
mod backup;
mod binary;
mod config_env;
mod connections;
mod doctor;
mod door;
mod faults;
mod forwarding;
mod http2;
mod listeners;
mod oidc_provider;
mod pbx;
mod proxy;
mod replicas;
mod revocation;
mod runtimes;
mod setup;
mod signout;
mod store;
mod support;
mod sync_contacts;
mod sync_contacts_load;
mod sync_presence;
mod sync_users;
mod tls;
mod tls_reload;
mod tokens;
