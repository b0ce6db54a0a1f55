//! Serving: one current-thread runtime per core, each accepting from the one listening
//! socket, answering HTTP/1.1 (with upgrades) over TLS or plain TCP, with an idle watchdog
//! per connection and a graceful drain at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::observe::{ConnInfo, Handler};
use super::routes;
use crate::app::App;
use crate::proxy::{Peer, Upstream};

/// Serves the gateway thread-per-core until `shutdown`: one current-thread runtime per
/// core, each accepting from the same listening socket and proxying through its own
/// upstream pool, so that a request never hops between threads (as nginx's processes).
/// On tokio's multi-thread runtime, a bare hyper forwarder reached 0.7-0.87x nginx's
/// requests per second here; thread-per-core, 0.95-0.98x (examples/bare_proxy.rs,
/// `BARE_PER_CORE=1`).
pub async fn per_core(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    idle: Duration,
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
            tls: tls.clone(),
            idle,
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
    tls: Option<TlsAcceptor>,
    idle: Duration,
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
            tls,
            idle,
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
            let (own, own_paths) = routes::own(&app);
            let handler = Handler {
                app,
                own,
                own_paths,
                upstream: Box::new(upstream),
            };
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            accept_loop(listener, tls, Arc::new(handler), idle, stopped).await;
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

/// Accepts connections until `shutdown`, then stops accepting and gives open connections
/// 10 s to finish.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<Handler>,
    idle: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
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
        let _ = tcp.set_nodelay(true);
        let (handler, tls, stop) = (handler.clone(), tls.clone(), stop_rx.clone());
        conns.spawn(async move {
            let peer = Peer {
                addr,
                tls: tls.is_some(),
            };
            let Some(acceptor) = tls else {
                return serve_connection(tcp, peer, handler, idle, stop).await;
            };
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_connection(stream, peer, handler, idle, stop).await,
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
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

/// Serves one connection. A connection that moves no byte in either direction for `idle`
/// is closed: one coarse watchdog per connection instead of a timer per request (hyper's
/// header_read_timeout) bounds idle and stalled connections at a fraction of the cost.
async fn serve_connection<I>(
    io: I,
    peer: Peer,
    handler: Arc<Handler>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Made once per connection; each request clones a reference to it.
    let info = Arc::new(ConnInfo::new(peer));
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let (handler, info) = (handler.clone(), info.clone());
        async move { Ok::<_, Infallible>(handler.call(&info, req).await) }
    });
    let activity = Arc::new(AtomicU64::new(0));
    let io = Counted {
        inner: io,
        activity: activity.clone(),
    };
    let conn = http1::Builder::new()
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
    tokio::select! {
        res = conn.as_mut() => log_conn_end(res, peer),
        _ = idle => tracing::debug!(addr = %peer.addr, "closing idle connection"),
        _ = async move { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            log_conn_end(conn.await, peer);
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
