//! Serving: one current-thread runtime per core, each accepting from the one listening
//! socket, answering HTTP/1.1 (with upgrades) over TLS or plain TCP, with connection limits
//! at accept, a deadline for request heads, an idle watchdog per connection and a graceful
//! drain at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use super::conns::{Limits, Permit};
use super::observe::{ConnInfo, Handler};
use super::routes::{self, OwnPaths};
use crate::app::App;
use crate::proxy::{Peer, Upstream};

/// The largest request head (request line and headers) read; larger ones get 431. Browsers
/// send a few KB; hyper's default (~400 KB) let slow clients park that much per connection.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How every connection is served; made once, shared by the serving threads.
#[derive(Clone)]
pub struct ConnSettings {
    pub tls: Option<TlsAcceptor>,
    /// No byte in either direction for this long closes a connection.
    pub idle: Duration,
    /// A request head must be complete this long after accept (the first) or after the
    /// previous answer (the next ones).
    pub header_read_timeout: Duration,
    pub limits: Arc<Limits>,
}

/// Serves the gateway thread-per-core until `shutdown`: one current-thread runtime per
/// core, each accepting from the same listening socket and proxying through its own
/// upstream pool, so that a request never hops between threads (as nginx's processes).
/// On tokio's multi-thread runtime, a bare hyper forwarder reached 0.7-0.87x nginx's
/// requests per second here; thread-per-core, 0.95-0.98x (examples/bare_proxy.rs,
/// `BARE_PER_CORE=1`).
pub async fn per_core(
    app: Arc<App>,
    listener: TcpListener,
    settings: ConnSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Serving {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Dropped (stop) when this function returns or its future is dropped.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (release_tx, release_rx) = watch::channel(false);
    let (drained_tx, mut drained_rx) = tokio::sync::mpsc::channel::<()>(cores.max(1));
    let mut serving = Serving {
        release: release_tx,
        threads: Vec::new(),
    };
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the listener to the serving threads");
            return serving;
        }
    };
    // One router for all threads, so that what its routes keep (the readiness cache) is
    // shared.
    let (own, own_paths) = routes::own(&app);
    for i in 0..cores {
        let listener = match listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot share the listener");
                break;
            }
        };
        let thread = Thread {
            app: app.clone(),
            own: own.clone(),
            own_paths: own_paths.clone(),
            settings: settings.clone(),
            stop: stop_rx.clone(),
            release: release_rx.clone(),
            drained: drained_tx.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("pbxgate-serve-{i}"))
            .spawn(move || thread.run(listener));
        match spawned {
            Ok(t) => serving.threads.push(t),
            Err(e) => tracing::error!(error = %e, "cannot start a serving thread"),
        }
    }
    drop(listener);
    shutdown.await;
    let _ = stop_tx.send(true);
    // Each thread drains its connections (up to 10 s), then waits for `Serving::finish`.
    drop(drained_tx);
    for _ in 0..serving.threads.len() {
        if drained_rx.recv().await.is_none() {
            break;
        }
    }
    serving
}

/// One serving thread's share of the work and its signals.
struct Thread {
    app: Arc<App>,
    own: Router,
    own_paths: OwnPaths,
    settings: ConnSettings,
    stop: watch::Receiver<bool>,
    release: watch::Receiver<bool>,
    drained: tokio::sync::mpsc::Sender<()>,
}

impl Thread {
    fn run(self, listener: std::net::TcpListener) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(error = %e, "cannot start a runtime"),
        };
        let Self {
            app,
            own,
            own_paths,
            settings,
            mut stop,
            mut release,
            drained,
        } = self;
        rt.block_on(async move {
            let (listener, upstream) = match (
                TcpListener::from_std(listener),
                Upstream::new(&app.config, app.metrics.clone()),
            ) {
                (Ok(l), Ok(u)) => (l, u),
                _ => return tracing::error!("cannot start a serving thread"),
            };
            let handler = Handler {
                hsts: hsts(&app, settings.tls.is_some()),
                app,
                own,
                own_paths,
                upstream: Box::new(upstream),
            };
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            accept_loop(listener, settings, Arc::new(handler), stopped).await;
            let _ = drained.send(()).await;
            // Store, Graph and 3CX connections opened on this runtime live as long as it
            // does: keep it until the workers and the store are done.
            let _ = release.wait_for(|r| *r).await;
        });
    }
}

/// Serving threads that have stopped serving but keep their runtimes (and the connections
/// opened on them) until the app is done.
pub struct Serving {
    release: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Serving {
    pub async fn finish(self) {
        let _ = self.release.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// `Strict-Transport-Security` for every answer when pbxgate terminates TLS itself and
/// `[server] hsts_max_age` is not 0. Over plain HTTP the header would be ignored by browsers
/// and the TLS in front (a load balancer) decides.
fn hsts(app: &App, tls: bool) -> Option<http::HeaderValue> {
    let max_age = app.config.server.hsts_max_age.get().as_secs();
    (tls && max_age > 0)
        .then(|| http::HeaderValue::try_from(format!("max-age={max_age}")).ok())
        .flatten()
}

/// Accepts connections until `shutdown`, then stops accepting and gives open connections
/// 10 s to finish. A connection over a limit is closed at once, before any byte is read.
async fn accept_loop(
    listener: TcpListener,
    settings: ConnSettings,
    handler: Arc<Handler>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let settings = Arc::new(settings);
    let http = http_builder(&settings);
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = settings.limits.admit(addr.ip()) else {
            drop(tcp);
            continue;
        };
        // Made now, so the head deadline counts from accept, the TLS handshake included.
        let deadline = tokio::time::sleep(settings.header_read_timeout);
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            peer: Peer {
                addr,
                tls: settings.tls.is_some(),
            },
            handler: handler.clone(),
            http: http.clone(),
            idle: settings.idle,
            stop: stop_rx.clone(),
            _permit: permit,
        };
        let tls = settings.tls.clone();
        conns.spawn(async move {
            tokio::pin!(deadline);
            let Some(acceptor) = tls else {
                return conn.serve(tcp, deadline).await;
            };
            tokio::select! {
                accepted = acceptor.accept(tcp) => match accepted {
                    Ok(stream) => conn.serve(stream, deadline).await,
                    Err(e) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                },
                _ = &mut deadline => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
    let _ = stop_tx.send(true);
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "closing connections still open after 10 s"
        );
        conns.abort_all();
    }
}

/// hyper's HTTP/1 settings for every connection: request heads limited in size (431 above)
/// and in time (from when hyper starts reading each head).
fn http_builder(settings: &ConnSettings) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    b
}

/// One accepted client connection and what serving it needs.
struct Connection {
    peer: Peer,
    handler: Arc<Handler>,
    http: http1::Builder,
    idle: Duration,
    stop: watch::Receiver<bool>,
    /// Its place under the connection limits, given back when the connection ends.
    _permit: Permit,
}

impl Connection {
    /// Serves the connection until it ends, it stalls (`idle`), its first request head is
    /// not complete at `deadline`, or the server stops. A connection that moves no byte in
    /// either direction for `idle` is closed: one coarse watchdog per connection.
    /// hyper's header timer bounds each head from when hyper starts reading it; `deadline`
    /// also counts the TLS handshake and the wait for the connection's first poll.
    async fn serve<I>(self, io: I, deadline: Pin<&mut Sleep>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            peer,
            handler,
            http,
            idle,
            mut stop,
            _permit,
        } = self;
        // Made once per connection; each request clones a reference to it.
        let info = Arc::new(ConnInfo::new(peer));
        let head_seen = Arc::new(AtomicBool::new(false));
        let seen = head_seen.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let (handler, info) = (handler.clone(), info.clone());
            seen.store(true, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(handler.call(&info, req).await) }
        });
        let activity = Arc::new(AtomicU64::new(0));
        let io = Counted {
            inner: io,
            activity: activity.clone(),
        };
        let conn = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let idle = async {
            let mut last = u64::MAX;
            loop {
                tokio::time::sleep(idle / 2).await;
                let now = activity.load(Ordering::Relaxed);
                if now == last {
                    return;
                }
                last = now;
            }
        };
        let first_head = async {
            deadline.await;
            if head_seen.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            res = conn.as_mut() => log_conn_end(res, peer),
            _ = idle => tracing::debug!(addr = %peer.addr, "closing idle connection"),
            _ = first_head => tracing::debug!(addr = %peer.addr, "no request head in time"),
            _ = async move { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                log_conn_end(conn.await, peer);
            }
        }
    }
}

/// Counts I/O calls that moved bytes, for the idle watchdog.
struct Counted<I> {
    inner: I,
    activity: Arc<AtomicU64>,
}

impl<I> Counted<I> {
    fn record<T>(&self, r: &Poll<std::io::Result<T>>) {
        if let Poll::Ready(Ok(_)) = r {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.record(&r);
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(&r);
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn log_conn_end(res: Result<(), hyper::Error>, peer: Peer) {
    if let Err(e) = res
        && !e.is_incomplete_message()
    {
        tracing::debug!(addr = %peer.addr, error = %e, "connection ended with an error");
    }
}
