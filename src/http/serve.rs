//! Serving: one current-thread runtime per core, each accepting from every listening socket
//! and serving each connection on the runtime with the fewest open (`spread`),
//! answering HTTP/1.1 (with upgrades) and HTTP/2 (chosen by ALPN over TLS; by the client's
//! preface on a plain listener with `h2c`), with connection limits at accept, a deadline
//! for request heads, an idle watchdog per connection and a graceful drain at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use super::conns::{Limits, Permit};
use super::observe::{ConnInfo, Handler};
use super::pin;
use super::routes::{self, OwnPaths};
use super::spread::{Handoff, Place, Spread};
use crate::app::App;
use crate::gate::ResBody;
use crate::metrics::RuntimeCounters;
use crate::proxy::{Peer, Upstream};

/// The largest request head (request line and headers) read; larger ones get 431. Browsers
/// send a few KB; hyper's default (~400 KB) let slow clients park that much per connection.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// HTTP/2 streams open at once on one connection. The webclient loads a page with some 60
/// parallel requests; RFC 9113 advises at least 100 so as not to limit parallelism. (Each
/// open stream may hold a connection to 3CX, as an HTTP/1.1 connection does.)
const H2_MAX_STREAMS: u32 = 100;

/// The ALPN protocols a TLS listener offers, preferred first: HTTP/2, then HTTP/1.1 for
/// clients without it (and for WebSockets, which browsers open over HTTP/1.1 when the
/// server does not offer RFC 8441 — pbxgate does not).
pub fn with_alpn(config: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One bound listener and how its connections are served.
pub struct Listening {
    pub listener: TcpListener,
    pub side: Side,
}

/// What sets one listener's connections apart.
#[derive(Clone)]
pub struct Side {
    /// TLS with ALPN `h2`/`http/1.1`, or plain TCP.
    pub tls: Option<TlsAcceptor>,
    /// Plain listeners: HTTP/2 with prior knowledge too.
    pub h2c: bool,
    /// Only passthrough paths are served (a plain LAN listener for provisioning).
    pub passthrough_only: bool,
}

/// How every connection is served, whatever its listener; made once, shared by the serving
/// threads.
#[derive(Clone)]
pub struct ConnSettings {
    /// No byte in either direction for this long closes a connection.
    pub idle: Duration,
    /// A request head must be complete this long after accept (the first) or after the
    /// previous answer (the next ones).
    pub header_read_timeout: Duration,
    pub limits: Arc<Limits>,
}

/// Serves the gateway thread-per-core until `shutdown`: one current-thread runtime per
/// core, each accepting from the same listening sockets and proxying through its own
/// upstream pool, so that a request never hops between threads (as nginx's processes).
/// On tokio's multi-thread runtime, a bare hyper forwarder reached 0.7-0.87x nginx's
/// requests per second here; thread-per-core, 0.95-0.98x (examples/bare_proxy.rs,
/// `BARE_PER_CORE=1`). Each connection is served by the runtime with the fewest open
/// ([`Spread`]), so that both cores work at any number of connections.
pub async fn per_core(
    app: Arc<App>,
    listeners: Vec<Listening>,
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
    let sides: Arc<[Side]> = listeners.iter().map(|l| l.side.clone()).collect();
    let listeners = match listeners
        .into_iter()
        .map(|l| l.listener.into_std())
        .collect::<std::io::Result<Vec<_>>>()
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the listeners to the serving threads");
            return serving;
        }
    };
    // One router for all threads, so that what its routes keep (the readiness cache) is
    // shared.
    let (own, own_paths) = routes::own(&app);
    let (spread, inboxes) = Spread::new(cores);
    let cpus = pin::plan(app.config.server.pin_threads, cores);
    for (index, inbox) in inboxes.into_iter().enumerate() {
        let shared = listeners
            .iter()
            .map(|l| l.try_clone())
            .collect::<std::io::Result<Vec<_>>>();
        let shared = match shared {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot share the listeners");
                break;
            }
        };
        let thread = Thread {
            index,
            cpu: cpus.as_ref().and_then(|c| c.get(index).copied()),
            app: app.clone(),
            own: own.clone(),
            own_paths: own_paths.clone(),
            settings: settings.clone(),
            sides: sides.clone(),
            spread: spread.clone(),
            inbox,
            stop: stop_rx.clone(),
            release: release_rx.clone(),
            drained: drained_tx.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("pbxgate-serve-{index}"))
            .spawn(move || thread.run(shared));
        match spawned {
            Ok(t) => serving.threads.push(t),
            Err(e) => tracing::error!(error = %e, "cannot start a serving thread"),
        }
    }
    drop((listeners, spread));
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
    /// Its place among the serving runtimes (the `runtime` label of its metrics).
    index: usize,
    /// The CPU it is pinned to ([`pin`]).
    cpu: Option<usize>,
    app: Arc<App>,
    own: Router,
    own_paths: OwnPaths,
    settings: ConnSettings,
    /// Each listener's kind, in `[server] listen` order (a handoff names its listener).
    sides: Arc<[Side]>,
    spread: Arc<Spread>,
    /// Connections other runtimes accepted for this one.
    inbox: UnboundedReceiver<Handoff>,
    stop: watch::Receiver<bool>,
    release: watch::Receiver<bool>,
    drained: tokio::sync::mpsc::Sender<()>,
}

impl Thread {
    fn run(self, listeners: Vec<std::net::TcpListener>) {
        if let Some(cpu) = self.cpu
            && let Err(e) = pin::to_cpu(cpu)
        {
            tracing::warn!(cpu, error = %e, "cannot pin a serving thread to its CPU");
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(error = %e, "cannot start a runtime"),
        };
        let Self {
            index,
            cpu: _,
            app,
            own,
            own_paths,
            settings,
            sides,
            spread,
            inbox,
            mut stop,
            mut release,
            drained,
        } = self;
        rt.block_on(async move {
            let listeners = listeners
                .into_iter()
                .map(TcpListener::from_std)
                .collect::<std::io::Result<Vec<_>>>();
            let (listeners, upstream) =
                match (listeners, Upstream::new(&app.config, app.metrics.clone())) {
                    (Ok(l), Ok(u)) => (l, u),
                    _ => return tracing::error!("cannot start a serving thread"),
                };
            let counters = app.metrics.serving_runtime(index);
            let handler = Arc::new(Handler {
                hsts: hsts(&app),
                app,
                own,
                own_paths,
                upstream: Box::new(upstream),
            });
            let runtime = Runtime {
                index,
                http: Protocols::new(&settings),
                settings,
                sides,
                spread,
                handler,
                counters,
            };
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            runtime.accept_loop(listeners, inbox, stopped).await;
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

/// `Strict-Transport-Security` for every answer on a TLS listener (the handler leaves it
/// off plain ones) when `[server] hsts_max_age` is not 0. Over plain HTTP the header would
/// be ignored by browsers and the TLS in front (a load balancer) decides.
fn hsts(app: &App) -> Option<http::HeaderValue> {
    let max_age = app.config.server.hsts_max_age.get().as_secs();
    (max_age > 0)
        .then(|| http::HeaderValue::try_from(format!("max-age={max_age}")).ok())
        .flatten()
}

/// What one serving runtime serves its connections with.
struct Runtime {
    index: usize,
    settings: ConnSettings,
    http: Protocols,
    sides: Arc<[Side]>,
    spread: Arc<Spread>,
    handler: Arc<Handler>,
    counters: RuntimeCounters,
}

/// A connection on its way to being served: accepted here or handed over.
struct Accepted {
    tcp: TcpStream,
    addr: SocketAddr,
    listener: usize,
    accepted: Instant,
    permit: Permit,
    place: Place,
}

impl Runtime {
    /// Accepts connections from every listener and takes those other runtimes hand over,
    /// until `shutdown`; then stops accepting and gives open connections 10 s to finish.
    /// A connection over a limit is closed at once, before any byte is read. The limits
    /// are shared by all listeners and runtimes.
    async fn accept_loop(
        self,
        listeners: Vec<TcpListener>,
        mut inbox: UnboundedReceiver<Handoff>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let this = Arc::new(self);
        let mut first = 0;
        tokio::pin!(shutdown);
        loop {
            let conn = tokio::select! {
                _ = &mut shutdown => break,
                Some(handoff) = inbox.recv() => match TcpStream::from_std(handoff.tcp) {
                    Ok(tcp) => Accepted {
                        tcp,
                        addr: handoff.addr,
                        listener: handoff.listener,
                        accepted: handoff.accepted,
                        permit: handoff.permit,
                        place: handoff.place,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take over a connection");
                        continue;
                    }
                },
                (listener, accepted) = accept_any(&listeners, &mut first) => match accepted {
                    Ok((tcp, addr)) => match this.admit(tcp, addr, listener) {
                        Some(conn) => conn,
                        None => continue,
                    },
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            while conns.try_join_next().is_some() {}
            this.clone().serve(conn, stop_rx.clone(), &mut conns);
        }
        // Connections handed over from now on stay with the runtime that accepted them.
        drop(inbox);
        let _ = stop_tx.send(true);
        drop(listeners);
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

    /// Admits a connection this runtime accepted under the limits, and returns it to
    /// serve here, or hands it to a runtime with fewer open connections.
    fn admit(&self, tcp: TcpStream, addr: SocketAddr, listener: usize) -> Option<Accepted> {
        let accepted = Instant::now();
        let permit = self.settings.limits.admit(addr.ip()).ok()?;
        let place = self.spread.place(self.index);
        if place.runtime() == self.index {
            return Some(Accepted {
                tcp,
                addr,
                listener,
                accepted,
                permit,
                place,
            });
        }
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cannot hand over a connection");
                return None;
            }
        };
        let handoff = Handoff {
            tcp,
            addr,
            listener,
            accepted,
            permit,
            place,
        };
        // The other runtime is gone: serve it here.
        let back = self.spread.hand_off(handoff)?;
        Some(Accepted {
            tcp: TcpStream::from_std(back.tcp).ok()?,
            addr,
            listener,
            accepted,
            permit: back.permit,
            place: self.spread.place_on(self.index),
        })
    }

    /// Serves one connection on this runtime: TLS or h2c first as its listener says.
    ///
    /// A plain HTTP/1.1 listener's connections get a task of their own type: a task is as
    /// large as the largest state of its future, and the TLS handshake's and h2c's states
    /// made every plain connection's future 10.0 KB where 2.6 KB serve (`size_of_val`,
    /// 2026-12-03). HTTP/2's state is boxed in [`Connection::serve`] for the same reason.
    fn serve(
        self: Arc<Self>,
        conn: Accepted,
        stop: watch::Receiver<bool>,
        conns: &mut JoinSet<()>,
    ) {
        let side = self.sides[conn.listener].clone();
        let addr = conn.addr;
        let (conn, tcp, deadline) = self.connection(conn, &side, stop);
        if side.tls.is_none() && !side.h2c {
            conns.spawn(async move {
                tokio::pin!(deadline);
                conn.serve(tcp, Version::H1, deadline).await
            });
            return;
        }
        conns.spawn(async move {
            tokio::pin!(deadline);
            match side.tls {
                Some(acceptor) => tokio::select! {
                    accepted = acceptor.accept(tcp) => match accepted {
                        Ok(stream) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            conn.serve(stream, Version::of(h2), deadline).await
                        }
                        Err(e) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                    },
                    _ = &mut deadline => tracing::debug!(%addr, "TLS handshake timed out"),
                },
                // h2c: HTTP/2 with prior knowledge, or HTTP/1.1.
                None => tokio::select! {
                    sniffed = sniff_h2c(tcp) => match sniffed {
                        Ok((h2, io)) => conn.serve(io, Version::of(h2), deadline).await,
                        Err(e) => tracing::debug!(%addr, error = %e, "connection failed"),
                    },
                    _ = &mut deadline => tracing::debug!(%addr, "no request in time"),
                },
            }
        });
    }

    /// A connection's serving state, its socket and its first request head's deadline.
    fn connection(
        self: &Arc<Self>,
        conn: Accepted,
        side: &Side,
        stop: watch::Receiver<bool>,
    ) -> (Connection, TcpStream, Sleep) {
        let Accepted {
            tcp,
            addr,
            listener: _,
            accepted,
            permit,
            place,
        } = conn;
        self.counters.connections.inc();
        // The head deadline counts from accept, the TLS handshake and a handoff included.
        let deadline = tokio::time::sleep_until(accepted + self.settings.header_read_timeout);
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            peer: Peer {
                addr,
                tls: side.tls.is_some(),
            },
            passthrough_only: side.passthrough_only,
            handler: self.handler.clone(),
            runtime: self.clone(),
            idle: self.settings.idle,
            stop,
            permit,
            _place: place,
        };
        (conn, tcp, deadline)
    }
}

/// Accepts from whichever listener has a connection waiting, starting after the one that
/// had the last, so that a flood on one listener cannot starve the others.
async fn accept_any(
    listeners: &[TcpListener],
    first: &mut usize,
) -> (usize, std::io::Result<(TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for k in 0..n {
            let i = (*first + k) % n;
            if let Poll::Ready(r) = listeners[i].poll_accept(cx) {
                *first = (i + 1) % n;
                return Poll::Ready((i, r));
            }
        }
        Poll::Pending
    })
    .await
}

/// The HTTP version a connection speaks, settled before hyper sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    H1,
    H2,
}

impl Version {
    fn of(h2: bool) -> Self {
        if h2 { Self::H2 } else { Self::H1 }
    }
}

/// hyper's settings for every connection of a listener.
struct Protocols {
    /// Request heads limited in size (431 above) and in time (from when hyper starts
    /// reading each head).
    h1: http1::Builder,
    /// The same head size limit (as `SETTINGS_MAX_HEADER_LIST_SIZE`; larger heads get
    /// 431), [`H2_MAX_STREAMS`], no extended CONNECT (RFC 8441) and no keep-alive PINGs:
    /// the idle watchdog closes a connection that moves no byte, and PINGs would keep an
    /// idle one open forever. A dead peer is found by the same watchdog.
    h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(settings: &ConnSettings) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_header_size(MAX_HEADER_BYTES);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .keep_alive_interval(None);
        Self { h1, h2 }
    }
}

/// The HTTP/2 client preface (RFC 9113 §3.4), which an h2c client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads as much of the connection's first bytes as tells HTTP/2 with prior knowledge from
/// HTTP/1.1 (one byte for the latter), and gives them back in front of the stream.
async fn sniff_h2c<I: AsyncRead + Unpin>(mut io: I) -> std::io::Result<(bool, Prefixed<I>)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    while n < buf.len() && buf[..n] == H2_PREFACE[..n] {
        match io.read(&mut buf[n..]).await? {
            0 => break,
            read => n += read,
        }
    }
    let h2 = buf[..n] == H2_PREFACE[..];
    let prefix = bytes::Bytes::copy_from_slice(&buf[..n]);
    Ok((h2, Prefixed { prefix, inner: io }))
}

/// A stream with bytes already read put back in front.
struct Prefixed<I> {
    prefix: bytes::Bytes,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// One accepted client connection and what serving it needs.
struct Connection {
    peer: Peer,
    passthrough_only: bool,
    handler: Arc<Handler>,
    /// The runtime serving it: hyper's settings and the request counter.
    runtime: Arc<Runtime>,
    idle: Duration,
    stop: watch::Receiver<bool>,
    /// Its place under the connection limits, given back when the connection ends.
    permit: Permit,
    /// Its place in its runtime's open count, given back when the connection ends.
    _place: Place,
}

impl Connection {
    /// Serves the connection until it ends, it stalls (`idle`), its first request head is
    /// not complete at `deadline`, or the server stops. A connection that moves no byte in
    /// either direction for `idle` is closed: one coarse watchdog per connection.
    /// hyper's HTTP/1 header timer bounds each head from when hyper starts reading it;
    /// `deadline` also counts the TLS handshake and the wait for the connection's first
    /// poll, and is all there is for HTTP/2 (whose later requests the idle watchdog bounds).
    async fn serve<I>(self, io: I, version: Version, deadline: Pin<&mut Sleep>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            peer,
            passthrough_only,
            handler,
            runtime,
            idle,
            mut stop,
            permit,
            _place,
        } = self;
        let requests = runtime.counters.requests.clone();
        // Made once per connection; each request clones a reference to it.
        let info = Arc::new(ConnInfo::new(peer, passthrough_only));
        let head_seen = Arc::new(AtomicBool::new(false));
        let seen = head_seen.clone();
        let activity = Arc::new(AtomicU64::new(0));
        let io = Counted {
            inner: io,
            activity: activity.clone(),
        };
        let watch = Watch {
            peer,
            idle,
            activity,
            head_seen,
            stop: &mut stop,
        };
        let io = TokioIo::new(io);
        match version {
            Version::H1 => {
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let (handler, info) = (handler.clone(), info.clone());
                    seen.store(true, Ordering::Relaxed);
                    requests.inc();
                    async move { Ok::<_, Infallible>(handler.call(&info, req).await) }
                });
                let conn = runtime
                    .http
                    .h1
                    .serve_connection(io, service)
                    .with_upgrades();
                watch.drive(conn, |c| c.graceful_shutdown(), deadline).await
            }
            Version::H2 => {
                let conn_permit = Arc::new(permit);
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let (handler, info) = (handler.clone(), info.clone());
                    seen.store(true, Ordering::Relaxed);
                    requests.inc();
                    let place = conn_permit.another();
                    async move {
                        let Ok(permit) = place else {
                            return Ok::<_, Infallible>(too_many_streams().map(Held::none));
                        };
                        let res = handler.call(&info, req).await;
                        Ok(res.map(|body| Held::new(body, permit)))
                    }
                });
                let conn = runtime.http.h2.serve_connection(io, service);
                // Boxed: HTTP/2's state would otherwise enlarge every HTTP/1.1 connection's.
                Box::pin(watch.drive(conn, |c| c.graceful_shutdown(), deadline)).await
            }
        }
    }
}

/// An HTTP/2 stream over the client's connection caps (each stream counts as a connection
/// would): 503, and the client may try again once its other requests are answered.
fn too_many_streams() -> http::Response<ResBody> {
    let mut res = crate::web::page(
        None,
        crate::metrics::RouteClass::Rejected,
        http::StatusCode::SERVICE_UNAVAILABLE,
        "Too many requests at once",
        "Too many requests are open from your address. Please try again.",
    );
    res.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    res.map(http_body_util::Either::Right)
}

/// An answer's body that holds its stream's place under the connection caps until it ends.
struct Held {
    body: ResBody,
    _permit: Option<Permit>,
}

impl Held {
    fn new(body: ResBody, permit: Permit) -> Self {
        Self {
            body,
            _permit: Some(permit),
        }
    }
    fn none(body: ResBody) -> Self {
        Self {
            body,
            _permit: None,
        }
    }
}

impl hyper::body::Body for Held {
    type Data = bytes::Bytes;
    type Error = <ResBody as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What watches a connection while hyper serves it.
struct Watch<'a> {
    peer: Peer,
    idle: Duration,
    activity: Arc<AtomicU64>,
    head_seen: Arc<AtomicBool>,
    stop: &'a mut watch::Receiver<bool>,
}

impl Watch<'_> {
    /// Runs `conn` until it ends, stalls, misses `deadline` for its first request head, or
    /// the server stops (then `graceful` lets its open requests finish).
    async fn drive<C>(self, conn: C, graceful: impl FnOnce(Pin<&mut C>), deadline: Pin<&mut Sleep>)
    where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        let Self {
            peer,
            idle,
            activity,
            head_seen,
            stop,
        } = self;
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
                graceful(conn.as_mut());
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
