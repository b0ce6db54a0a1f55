//! Simulated outside parties on loopback, speaking the documented wire formats, for
//! `pbxgate demo` and the tests. Today: the 3CX web server. Entra ID, Graph and the 3CX XAPI
//! grow here with the features that need them.

pub mod demo;
pub mod pbx;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A simulator running in the background; stops when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub tls: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The simulator's origin, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until dropped.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let is_tls = tls.is_some();
    let task = tokio::spawn(crate::server::serve(
        listener,
        tls,
        router,
        std::time::Duration::from_secs(60),
        std::future::pending(),
    ));
    Ok(Running {
        addr,
        tls: is_tls,
        task,
    })
}
