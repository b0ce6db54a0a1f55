//! Keep-alive HTTP/1.1 connections to one 3CX origin.
//!
//! Why not hyper-util's pooled client: for every request it hashes a pool key, takes a
//! shared lock and spawns a task that waits for the connection to become idle again —
//! about 8k instructions per proxied request (`bench/callgrind.sh`). Here a connection goes
//! back on the idle list when its response body has been read to the end, and the next
//! request takes the most recently used one (the least likely to have been closed by 3CX).
//! Each serving thread has its own pool, so its lock is never contended.
//!
//! Each connection runs as a task of its own. (Driving it from the request's task instead,
//! as one nginx worker does both sides, measured more instructions per request, not fewer:
//! the connection was polled for every wake-up of the request.)

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service;

use super::{ProxyError, UpstreamBody};
use crate::config::PbxConfig;
use crate::errors::error_chain;
use crate::tls::{self, TlsError};

/// Idle connections older than this are not used again: 3CX (nginx) closes keep-alive
/// connections after 75 s, and a request written as it does so fails.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per pool; more are closed once their answer is read.
const MAX_IDLE: usize = 256;

type Sender = SendRequest<UpstreamBody>;
type Idle = Mutex<Vec<(Sender, Instant)>>;

/// Connections to one origin: a connector for new ones and the idle ones.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Scheme and authority, for the connector.
    origin: Uri,
    /// `Host` for requests that do not bring their own.
    host: HeaderValue,
    /// Least recently used first.
    idle: Arc<Idle>,
}

impl Pool {
    /// Connections to `[pbx] url`. With `tls_server_name`, TLS (SNI and verification) and
    /// `Host` use that name while connections still go to `url`'s host and port.
    pub fn to_pbx(config: &PbxConfig) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.get()));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = match &config.tls_server_name {
            Some(name) => {
                let name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::ServerName(name.clone()))?;
                connector.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => connector,
        };
        let connector = connector.enable_http1().wrap_connector(http);
        let url = &config.url;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let bad = |what: &str| TlsError::Pem {
            path: "pbx.url".into(),
            message: format!("{what} is not valid"),
        };
        let authority: Authority = url[url::Position::BeforeHost..url::Position::AfterPort]
            .parse()
            .map_err(|_| bad("host"))?;
        // `Host` as a browser would send it: the port only when it is not the default.
        let host = HeaderValue::from_str(&config.host_header()).map_err(|_| bad("host"))?;
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|_| bad("url"))?;
        Ok(Self {
            connector,
            origin,
            host,
            idle: Arc::default(),
        })
    }

    /// Sends `req` (origin-form URI) on an idle connection, or on a new one when none is
    /// left. A request that an idle connection closed before writing it (3CX ended the
    /// keep-alive at that moment) is sent again on the next; one that was written is not.
    ///
    /// Not an `async fn`: that would keep `req` twice in the future (argument and local),
    /// and every request's future is moved, whole, a few times on its way to being polled.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<PooledBody>, ProxyError>> + '_ {
        async move {
            // 3CX's host, never the client's (which the proxy has removed).
            req.headers_mut().insert(header::HOST, self.host.clone());
            while let Some(mut sender) = self.take() {
                match sender.try_send_request(req).await {
                    Ok(res) => return Ok(self.pooled(res, sender)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(ProxyError::Protocol(error_chain(&e.into_error()))),
                    },
                }
            }
            // Boxed: the rare path's future would otherwise enlarge (and be copied with) every
            // request's.
            let mut sender = Box::pin(self.connect()).await?;
            match sender.send_request(req).await {
                Ok(res) => Ok(self.pooled(res, sender)),
                Err(e) => Err(ProxyError::Protocol(error_chain(&e))),
            }
        }
    }

    /// The most recently used connection that can take a request; expired and closed ones
    /// are dropped on the way.
    fn take(&self) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        while let Some((sender, _)) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, ProxyError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(|e| ProxyError::Connect(tls::upstream_error_chain(&*e)))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| ProxyError::Connect(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %error_chain(&e), "3CX connection ended");
            }
        });
        Ok(sender)
    }

    /// The answer, with its connection to be handed back once the body is read. A
    /// connection that switched protocols (WebSocket) belongs to the relay: never back.
    fn pooled(&self, res: Response<Incoming>, sender: Sender) -> Response<PooledBody> {
        let keep = (res.status() != http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| (sender, Arc::downgrade(&self.idle)));
        res.map(|body| PooledBody { body, keep })
    }
}

fn lock(idle: &Idle) -> std::sync::MutexGuard<'_, Vec<(Sender, Instant)>> {
    idle.lock().unwrap_or_else(|e| e.into_inner())
}

/// 3CX's response body; its connection goes back to the pool when the body ends (read to
/// the end, or had nothing to read). Dropped early, the connection is closed with it.
pub struct PooledBody {
    body: Incoming,
    keep: Option<(Sender, Weak<Idle>)>,
}

impl PooledBody {
    /// Hands the connection back. It is ready for the next request at once, unless 3CX
    /// answered before the request body was all sent (an early 413, say): then it goes
    /// back once the body is through, so that no request waits behind a slow upload.
    fn release(&mut self) {
        let Some((mut sender, idle)) = self.keep.take() else {
            return;
        };
        if sender.is_ready() {
            put_back(&idle, sender);
        } else if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    put_back(&idle, sender);
                }
            });
        }
    }
}

fn put_back(idle: &Weak<Idle>, sender: Sender) {
    if let Some(idle) = idle.upgrade() {
        let mut idle = lock(&idle);
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.keep = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
