//! The server: binds the listeners, runs the workers' schedules and the session purge, and
//! serves until shutdown ([`Gateway`]). Its parts: [`serve`] (runtimes per core, accept
//! loop, connections), [`conns`] (connection limits, the open-file limit), [`observe`] (request id, metrics, access log), [`routes`] (pbxgate's
//! own routes and which paths they cover) and [`ops`] (health, readiness, metrics).
//!
//! Layer: the top. It uses `app`, `gate` and `auth`; nothing uses it but `main`.

mod conns;
mod observe;
mod ops;
mod pin;
mod routes;
mod serve;
mod spread;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::{App, StartError};
use crate::clock::Clock;
use crate::config::{Config, Listener};
use crate::tls::{self, TlsError};

pub use conns::{FilesLimit, raise_open_files_limit};

/// A bound, ready-to-run gateway.
pub struct Gateway {
    pub app: Arc<App>,
    listeners: Vec<serve::Listening>,
    /// The served certificates, reloaded on SIGHUP and when their files change.
    certs: Vec<Arc<tls::Reloadable>>,
    tls_poll: Duration,
}

impl Gateway {
    /// Builds the app (store, clients, workers) and binds the listeners, all sharing it.
    pub async fn bind(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let certs = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => vec![tls::Reloadable::load(cert, key, clock.clone())?],
            _ => Vec::new(),
        };
        // One acceptor for every TLS listener, on the reloadable certificate.
        let tls = match certs.first() {
            Some(cert) => Some(TlsAcceptor::from(serve::with_alpn(&cert.server_config()?))),
            None => None,
        };
        let wanted: Vec<Listener> = config.server.listeners().collect();
        let app = App::build(config, clock).await?;
        let mut listeners = Vec::with_capacity(wanted.len());
        for l in wanted {
            let addr = l.addr;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let tls = match (l.tls, &tls) {
                (false, _) => None,
                (true, Some(tls)) => Some(tls.clone()),
                (true, None) => return Err(no_certificate().into()),
            };
            let side = serve::Side {
                tls,
                h2c: l.h2c,
                passthrough_only: l.passthrough_only,
            };
            listeners.push(serve::Listening { listener, side });
        }
        Ok(Self {
            app,
            listeners,
            certs,
            tls_poll: tls::POLL_INTERVAL,
        })
    }

    /// How often the certificate files are checked for a change (default
    /// [`tls::POLL_INTERVAL`]); tests shorten it.
    pub fn with_tls_poll_interval(mut self, every: Duration) -> Self {
        self.tls_poll = every;
        self
    }

    /// The first listener's address (the one `[server] listen` names first).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    /// Every listener's address, in `[server] listen` order (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .zip(self.app.config.server.listen.iter())
            .map(|(l, c)| l.listener.local_addr().unwrap_or(c.addr))
            .collect()
    }

    /// Serves until `shutdown` resolves, then lets open requests finish (up to 10 s), lets
    /// the workers record their runs (up to 30 s) and closes the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let app = self.app.clone();
        let purge = tokio::spawn(app.sessions.clone().purge_hourly());
        let reloads = tls::spawn_watcher(self.certs.clone(), app.metrics.clone(), self.tls_poll);
        let (stop_tx, stop_rx) = watch::channel(false);
        let schedules = app.workers.spawn(&app.config, stop_rx);
        let doctor = tokio::spawn(
            app.doctor
                .clone()
                .refresh_every(crate::doctor::FIRST_REFRESH, crate::doctor::REFRESH_EVERY),
        );
        let server = &app.config.server;
        let settings = serve::ConnSettings {
            idle: server.idle_timeout.get(),
            header_read_timeout: server.header_read_timeout.get(),
            limits: Arc::new(conns::Limits::new(
                server,
                app.metrics.clone(),
                app.clock.clone(),
            )),
        };
        for (l, addr) in self.listeners.iter().zip(self.local_addrs()) {
            tracing::info!(
                %addr,
                tls = l.side.tls.is_some(),
                h2c = l.side.h2c,
                passthrough_only = l.side.passthrough_only,
                upstream = %app.config.pbx.url,
                max_connections = settings.limits.max(),
                "listening"
            );
        }
        let serving = serve::per_core(app.clone(), self.listeners, settings, shutdown).await;
        purge.abort();
        reloads.abort();
        doctor.abort();
        // A sync run in progress finishes its current item and records itself interrupted.
        let _ = stop_tx.send(true);
        for schedule in schedules {
            let _ = tokio::time::timeout(Duration::from_secs(30), schedule).await;
        }
        app.store.close().await;
        serving.finish().await;
    }
}

/// A TLS listener without a certificate (validation refuses it in config files).
fn no_certificate() -> TlsError {
    TlsError::NoCertificate {
        path: "server.tls_cert (not set, but a listener has tls = true)".into(),
    }
}
