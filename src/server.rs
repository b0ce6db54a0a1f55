//! The gateway process: the router (pbxgate's own routes, then the session-checked proxy),
//! the request-observing middleware, and an HTTP/1.1 accept loop with optional TLS and
//! graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::auth::{self, Auth, OidcError};
use crate::clock::Clock;
use crate::config::Config;
use crate::directory::Directory;
use crate::graph::GraphClient;
use crate::metrics::{Metrics, RouteClass};
use crate::pbx::{PbxClient, PbxError};
use crate::proxy::{self, ClientInfo, Forward, Upstream, UpstreamBody};
use crate::session::{Rejection, Sessions};
use crate::store::{Store, StoreError};
use crate::sync::contacts::ContactsWorker;
use crate::sync::presence::PresenceWorker;
use crate::sync::users::UsersWorker;
use crate::sync::{Mode, Runner, Worker};
use crate::tls::{self, TlsError};
use crate::web::{self, Page};

/// Everything a request handler may need; shared by all connections.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub sessions: Arc<Sessions>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub auth: Auth,
    pub directory: Directory,
    pub pbx: Arc<PbxClient>,
    pub graph: Arc<GraphClient>,
    pub contacts: Arc<ContactsWorker>,
    pub users: Arc<UsersWorker>,
    pub presence: Arc<PresenceWorker>,
    pub runner: Runner,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Pbx(#[from] PbxError),
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The TCP peer of a connection and whether it came over TLS; set by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// The request id (accepted from `X-Request-Id` or generated); the correlation id on pages.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl App {
    /// Opens the store and builds the clients and workers; what `serve` and `sync` share.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Upstream::new(&config.pbx, metrics.clone())?;
        let store = Store::open(&config.store.url).await?;
        let sessions = Arc::new(Sessions::new(store.clone(), clock.clone(), &config));
        let auth = Auth::new(&config, clock.clone(), sessions.cookie_name())?;
        let pbx = Arc::new(PbxClient::new(&config.pbx, clock.clone())?);
        let directory =
            Directory::new(&config.directory, store.clone(), pbx.clone(), clock.clone());
        let graph = Arc::new(GraphClient::new(
            &config.entra.graph_url,
            auth.provider.clone(),
            clock.clone(),
        )?);
        let contacts = Arc::new(ContactsWorker::new(
            &config,
            graph.clone(),
            pbx.clone(),
            store.clone(),
            clock.clone(),
        ));
        let users = Arc::new(UsersWorker::new(
            &config,
            graph.clone(),
            pbx.clone(),
            store.clone(),
            sessions.clone(),
            clock.clone(),
        ));
        let presence = Arc::new(PresenceWorker::new(
            &config,
            graph.clone(),
            pbx.clone(),
            store.clone(),
            clock.clone(),
        ));
        let runner = Runner::new(store.clone(), clock.clone(), metrics.clone());
        Ok(Arc::new(App {
            config,
            store,
            sessions,
            upstream,
            metrics,
            clock,
            auth,
            directory,
            pbx,
            graph,
            contacts,
            users,
            presence,
            runner,
        }))
    }
}

/// A bound, ready-to-run gateway.
pub struct Gateway {
    pub app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Gateway {
    /// Builds the app (store, clients, workers) and binds the listener.
    pub async fn bind(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
            _ => None,
        };
        let addr = config.server.listen;
        let app = App::build(config, clock).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self { app, listener, tls })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.app.config.server.listen)
    }

    /// Serves until `shutdown` resolves, then lets open requests finish (up to 10 s).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let app = self.app.clone();
        let purge = tokio::spawn(purge_sessions(app.clone()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let sync = &app.config.sync;
        let daily = |at: &str, tz: &str| crate::sync::Daily::new(at, tz).ok();
        let contacts = sync.contacts.enabled.then(|| {
            let d = daily(&sync.contacts.full_sync_at, &sync.contacts.time_zone);
            let every = sync.contacts.interval.get();
            tokio::spawn(schedule_daily(
                app.clone(),
                app.contacts.clone(),
                every,
                d,
                stop_rx.clone(),
            ))
        });
        let users = sync.users.enabled.then(|| {
            let d = daily(&sync.users.full_sync_at, &sync.users.time_zone);
            let every = sync.users.interval.get();
            tokio::spawn(schedule_daily(
                app.clone(),
                app.users.clone(),
                every,
                d,
                stop_rx.clone(),
            ))
        });
        let presence = app
            .config
            .sync
            .presence
            .enabled
            .then(|| tokio::spawn(schedule_presence(app.clone(), stop_rx)));
        tracing::info!(
            addr = %self.local_addr(),
            tls = self.tls.is_some(),
            upstream = %app.config.pbx.url,
            "listening"
        );
        let idle = app.config.server.idle_timeout.get();
        let serving = serve_per_core(app.clone(), self.listener, self.tls, idle, shutdown).await;
        purge.abort();
        // A sync run in progress finishes its current item and records itself interrupted.
        let _ = stop_tx.send(true);
        for worker in [contacts, users, presence].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
        }
        app.store.close().await;
        serving.finish().await;
    }
}

/// Serves the gateway thread-per-core until `shutdown`: one current-thread runtime per
/// core, each accepting from the same listening socket and proxying through its own
/// upstream pool, so that a request never hops between threads (as nginx's processes).
/// On tokio's multi-thread runtime, a bare hyper forwarder reached 0.7-0.87x nginx's
/// requests per second here; thread-per-core, 0.95-0.98x (examples/bare_proxy.rs,
/// `BARE_PER_CORE=1`).
async fn serve_per_core(
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
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the listener to the serving threads");
            return Serving {
                release: release_tx,
                threads: Vec::new(),
            };
        }
    };
    let mut threads = Vec::new();
    for i in 0..cores {
        let (app, tls, mut stop) = (app.clone(), tls.clone(), stop_rx.clone());
        let (mut release, drained) = (release_rx.clone(), drained_tx.clone());
        let listener = match listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot share the listener");
                break;
            }
        };
        let thread = std::thread::Builder::new()
            .name(format!("pbxgate-serve-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return tracing::error!(error = %e, "cannot start a runtime"),
                };
                rt.block_on(async move {
                    let (listener, upstream) = match (
                        TcpListener::from_std(listener),
                        Upstream::new(&app.config.pbx, app.metrics.clone()),
                    ) {
                        (Ok(l), Ok(u)) => (l, u),
                        _ => return tracing::error!("cannot start a serving thread"),
                    };
                    let dispatch = Dispatch::Gateway {
                        own: router(app.clone()),
                        app,
                        upstream: Box::new(upstream),
                    };
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    accept_loop(listener, tls, Arc::new(dispatch), idle, stopped).await;
                    let _ = drained.send(()).await;
                    // Store, Graph and 3CX connections opened on this runtime live as long
                    // as it does: keep it until the workers and the store are done.
                    let _ = release.wait_for(|r| *r).await;
                });
            });
        match thread {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(error = %e, "cannot start a serving thread"),
        }
    }
    drop(listener);
    shutdown.await;
    let _ = stop_tx.send(true);
    // Each thread drains its connections (up to 10 s), then waits for `Serving::finish`.
    drop(drained_tx);
    for _ in 0..threads.len() {
        if drained_rx.recv().await.is_none() {
            break;
        }
    }
    Serving {
        release: release_tx,
        threads,
    }
}

/// Serving threads that have stopped serving but keep their runtimes (and the connections
/// opened on them) until the app is done.
struct Serving {
    release: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Serving {
    async fn finish(self) {
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

/// The body of an answer: 3CX's, passed on as hyper reads it (streamed, not boxed), or one
/// that pbxgate made itself.
pub type ResBody = Either<proxy::PooledBody, Body>;

/// pbxgate's own routes first; every other path belongs to 3CX. The gateway hands only
/// paths under [`is_own`] to this router and proxies the rest directly (`proxy_request`);
/// a route added here needs its path covered by `is_own`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", get(auth::logout).post(auth::logout))
        .route("/auth/signed-out", get(auth::signed_out))
        .route("/auth/frontchannel-logout", get(auth::frontchannel_logout))
        .route("/auth", any(auth_not_found))
        .route("/auth/{*rest}", any(auth_not_found))
        .fallback(gateway)
        .with_state(app)
}

/// Whether `path` may be one of pbxgate's own routes (see [`router`]): those go through
/// the router, everything else straight to the proxy. `/admin` is reserved for the status
/// page; until it exists the router's fallback proxies it as before.
fn is_own(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/auth" | "/admin"
    ) || path.starts_with("/auth/")
        || path.starts_with("/admin/")
}

/// A short page with the request's correlation id, counted under `class`.
pub fn page(
    id: Option<&str>,
    class: RouteClass,
    status: StatusCode,
    title: &'static str,
    message: &str,
) -> Response {
    classed(
        class,
        Page::new(status, title, message).with_correlation_id(id),
    )
}

pub fn classed(class: RouteClass, res: impl IntoResponse) -> Response {
    let mut res = res.into_response();
    res.extensions_mut().insert(class);
    res
}

/// How a connection's requests are answered.
enum Dispatch {
    /// Every request through one router (the sandbox's simulators).
    Router(Router),
    /// The gateway: pbxgate's own routes through `own`, everything else proxied directly
    /// on hyper's types (no router, no boxed bodies) through `upstream` (this thread's
    /// pool); each request observed.
    Gateway {
        app: Arc<App>,
        own: Router,
        upstream: Box<Upstream>,
    },
}

/// What the requests of one client connection share.
struct ConnInfo {
    peer: Peer,
    /// The peer's address as a header value.
    peer_value: HeaderValue,
    /// The connection's last accepted session.
    recent: crate::session::Recent,
}

impl Dispatch {
    async fn call(&self, conn: &ConnInfo, mut req: http::Request<Incoming>) -> Response<ResBody> {
        match self {
            Self::Router(router) => {
                req.extensions_mut().insert(conn.peer);
                let res = tower::ServiceExt::oneshot(router.clone(), req)
                    .await
                    .unwrap_or_else(|never| match never {});
                res.map(Either::Right)
            }
            Self::Gateway { app, own, upstream } => observe(app, own, upstream, conn, req).await,
        }
    }
}

/// Request id, timing, metrics and the access log line, around every gateway request.
/// (Not an `async fn`, for the reason given at `proxy::pool::Pool::send`.)
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn observe<'a>(
    app: &'a Arc<App>,
    own: &'a Router,
    upstream: &'a Upstream,
    info: &'a ConnInfo,
    mut req: http::Request<Incoming>,
) -> impl Future<Output = Response<ResBody>> + 'a {
    async move {
        let start = Instant::now();
        let id_value = request_id(req.headers());
        let id = id_value.to_str().unwrap_or("-");
        // What the access log line needs, kept only when it is written.
        let logged = tracing::enabled!(target: "pbxgate::access", tracing::Level::INFO)
            .then(|| (req.method().clone(), req.uri().clone()));
        let own_route = is_own(req.uri().path());
        let span = tracing::info_span!("request", request_id = %id);
        let (class, mut res) = async {
            if own_route {
                let ext = req.extensions_mut();
                ext.insert(info.peer);
                ext.insert(RequestId(id.to_string()));
                // Boxed: the rare path's future would otherwise enlarge every request's.
                let res = Box::pin(tower::ServiceExt::oneshot(own.clone(), req))
                    .await
                    .unwrap_or_else(|never| match never {});
                (class_of(&res), res.map(Either::Right))
            } else {
                let (parts, body) = req.into_parts();
                let conn = Conn {
                    peer: info.peer,
                    peer_value: &info.peer_value,
                    recent: Some(&info.recent),
                    id: &id_value,
                };
                proxy_request(app, upstream, conn, parts, Either::Left(body)).await
            }
        }
        .instrument(span.clone())
        .await;
        let elapsed = start.elapsed();
        let status = res.status().as_u16();
        app.metrics
            .observe_request(class, status, elapsed.as_secs_f64());
        res.headers_mut()
            .insert(proxy::X_REQUEST_ID, id_value.clone());
        if let Some((method, uri)) = logged {
            let _enter = span.enter();
            tracing::info!(
                target: "pbxgate::access",
                %method,
                path = %log_path(class, uri.path(), &app.config.pbx.passthrough),
                status,
                class = class.as_str(),
                ms = elapsed.as_secs_f64() * 1000.0,
            );
        }
        res
    }
}

/// The route class a handler put on its answer.
fn class_of(res: &Response) -> RouteClass {
    res.extensions()
        .get::<RouteClass>()
        .copied()
        .unwrap_or(RouteClass::Ops)
}

/// Paths without their query (which may carry credentials, e.g. `/ws/webclient?pass=`), and
/// passthrough paths cut to their prefix (provisioning folder names are secrets).
fn log_path(class: RouteClass, path: &str, passthrough: &[String]) -> String {
    match proxy::passthrough_prefix(path, passthrough) {
        Some(prefix) if class == RouteClass::Passthrough => format!("{prefix}…"),
        _ => path.chars().take(256).collect(),
    }
}

/// Accepts a caller's `X-Request-Id` when it is short and plain; otherwise makes one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let given = headers.get(proxy::X_REQUEST_ID).filter(|v| {
        (1..=64).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if let Some(id) = given {
        return id.clone();
    }
    HeaderValue::from_bytes(&crate::ids::request_id_bytes())
        .expect("a request id is a valid header value")
}

pub fn correlation(parts: &Parts) -> Option<String> {
    parts.extensions.get::<RequestId>().map(|r| r.0.clone())
}

async fn healthz() -> Response {
    classed(RouteClass::Ops, "ok\n")
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    const LIMIT: Duration = Duration::from_secs(2);
    let started = Instant::now();
    let (store, pbx) = tokio::join!(
        tokio::time::timeout(LIMIT, app.store.ping()),
        app.upstream.probe(LIMIT)
    );
    let store = match store {
        Ok(Ok(())) => {
            serde_json::json!({ "ok": true, "backend": format!("{:?}", app.store.backend()).to_lowercase() })
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store is down");
            serde_json::json!({ "ok": false, "error": "query failed" })
        }
        Err(_) => serde_json::json!({ "ok": false, "error": "timeout" }),
    };
    let pbx = match pbx {
        Ok(status) => serde_json::json!({ "ok": true, "status": status }),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: 3CX is down");
            let kind = match e {
                proxy::ProxyError::Connect(_) => "connect failed",
                proxy::ProxyError::Timeout(_) => "timeout",
                proxy::ProxyError::Protocol(_) => "bad answer",
            };
            serde_json::json!({ "ok": false, "error": kind })
        }
    };
    let ready = store["ok"] == true && pbx["ok"] == true;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": { "store": store, "pbx": pbx },
        "ms": started.elapsed().as_millis() as u64,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    classed(RouteClass::Ops, (status, axum::Json(body)))
}

async fn metrics(State(app): State<Arc<App>>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let client = client_info(&app, &req);
    if !app
        .config
        .server
        .metrics_allow
        .iter()
        .any(|n| n.contains(&client.ip))
    {
        return page(
            correlation(&req).as_deref(),
            RouteClass::Ops,
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Metrics are not available from this address.",
        );
    }
    let mut res = app.metrics.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    classed(RouteClass::Ops, res)
}

/// `/auth/*` is reserved for pbxgate: never proxied, so it can never loop back to itself.
async fn auth_not_found(req: Request) -> Response {
    let (req, _) = req.into_parts();
    page(
        correlation(&req).as_deref(),
        RouteClass::Auth,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such sign-in page.",
    )
}

/// The connection's peer, as the accept loop recorded it on the request.
fn peer_of(req: &Parts) -> Peer {
    req.extensions.get::<Peer>().copied().unwrap_or(Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: false,
    })
}

pub fn client_info(app: &App, req: &Parts) -> ClientInfo {
    let peer = peer_of(req);
    ClientInfo::resolve(
        peer.addr,
        peer.tls,
        &req.headers,
        &app.config.server.trusted_proxies,
    )
}

/// The router's fallback: a path under [`is_own`] that no route of pbxgate's matched.
async fn gateway(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let peer = peer_of(&parts);
    let id = correlation(&parts)
        .and_then(|id| HeaderValue::from_str(&id).ok())
        .unwrap_or_else(|| request_id(&HeaderMap::new()));
    let conn = Conn {
        peer,
        peer_value: &proxy::ip_header_value(peer.addr.ip()),
        recent: None,
        id: &id,
    };
    let (class, res) = proxy_request(&app, &app.upstream, conn, parts, Either::Right(body)).await;
    classed(class, res.map(Body::new))
}

/// What a proxied request needs to know of its connection and of the observing layer.
#[derive(Clone, Copy)]
struct Conn<'a> {
    peer: Peer,
    /// The peer's address as a header value, made once per connection.
    peer_value: &'a HeaderValue,
    /// The connection's last accepted session, where the request came on a connection.
    recent: Option<&'a crate::session::Recent>,
    /// The request id.
    id: &'a HeaderValue,
}

/// Everything that is not pbxgate's own: passthrough, or a valid session, then 3CX.
///
/// Not an `async fn`, for the reason given at `proxy::pool::Pool::send`.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn proxy_request<'a>(
    app: &'a App,
    upstream: &'a Upstream,
    conn: Conn<'a>,
    mut parts: Parts,
    mut body: UpstreamBody,
) -> impl Future<Output = (RouteClass, Response<ResBody>)> + 'a {
    async move {
        let rid = conn.id.to_str().unwrap_or("-");
        let made = |res: Response| (class_of(&res), res.map(Either::Right));
        if !proxy::path_is_safe(parts.uri.path()) {
            return made(page(
                Some(rid),
                RouteClass::Rejected,
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The address contains path segments pbxgate does not forward.",
            ));
        }
        if is_token_candidate(app, &parts) {
            // Boxed: the rare path's future would otherwise enlarge every request's.
            match Box::pin(webclient_token(app, conn.peer, rid, parts, body)).await {
                Ok(answered) => return made(answered),
                Err(request) => (parts, body) = request,
            }
        }
        let path = parts.uri.path();
        let class = if proxy::passthrough_prefix(path, &app.config.pbx.passthrough).is_some() {
            RouteClass::Passthrough
        } else {
            match check_session(app, &parts, rid, conn.recent).await {
                Ok(()) => RouteClass::Session,
                Err(res) => return made(res),
            }
        };
        let client = ClientInfo::resolve_for(
            conn.peer.addr,
            conn.peer_value,
            conn.peer.tls,
            &parts.headers,
            &app.config.server.trusted_proxies,
        );
        let fwd = Forward {
            client: &client,
            request_id: conn.id,
            cookie_name: app.sessions.cookie_name(),
        };
        match upstream
            .forward(http::Request::from_parts(parts, body), fwd)
            .await
        {
            Ok(res) => (class, res.map(Either::Left)),
            Err(e) => {
                tracing::error!(error = %e, "3CX request failed");
                made(page(
                    Some(rid),
                    class,
                    StatusCode::BAD_GATEWAY,
                    "The phone system is not reachable",
                    "pbxgate could not reach the 3CX phone system. Please try again in a minute.",
                ))
            }
        }
    }
}

/// The webclient's `POST /connect/token` from a browser with a pbxgate session, in
/// impersonation mode: pbxgate may answer it itself.
fn is_token_candidate(app: &App, parts: &Parts) -> bool {
    parts.method == http::Method::POST
        && parts.uri.path() == "/connect/token"
        && app.sessions.id_from_headers(&parts.headers).is_some()
        && app.config.pbx.session_mode == crate::config::SessionMode::Impersonation
}

/// Answers a token candidate (see [`is_token_candidate`]) when pbxgate can; anything else
/// is handed back to be proxied, with the (small, bounded) body it had to read.
async fn webclient_token(
    app: &App,
    peer: Peer,
    rid: &str,
    mut parts: Parts,
    body: UpstreamBody,
) -> Result<Response, (Parts, UpstreamBody)> {
    const LIMIT: usize = 16 * 1024;
    parts.extensions.insert(peer);
    parts.extensions.insert(RequestId(rid.to_string()));
    let bytes = match axum::body::to_bytes(Body::new(body), LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return Ok(page(
                Some(rid),
                RouteClass::Rejected,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                "The token request is too large.",
            ));
        }
    };
    match auth::answer_webclient_token(app, &parts, &bytes).await {
        Some(res) => Ok(res),
        None => Err((parts, Either::Right(Body::from(bytes)))),
    }
}

/// Ok when the request carries a live session; otherwise the answer to send instead.
async fn check_session(
    app: &App,
    req: &Parts,
    rid: &str,
    recent: Option<&crate::session::Recent>,
) -> Result<(), Response> {
    let presented = app.sessions.id_from_headers(&req.headers);
    let verdict = match (presented, recent) {
        (Some(id), Some(recent)) => app.sessions.check_on(id, recent).await,
        (Some(id), None) => app.sessions.check(id).await,
        (None, _) => Ok(Err(Rejection::Unknown)),
    };
    let rejection = match verdict {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(why)) => why,
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            return Err(page(
                Some(rid),
                RouteClass::Unauthenticated,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable",
                "pbxgate cannot check your session right now. Please try again in a minute.",
            ));
        }
    };
    if presented.is_some() {
        tracing::info!(reason = ?rejection, "session refused");
    }
    let mut res = if proxy::is_navigation(&req.method, &req.headers) {
        let target = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let location = format!(
            "/auth/login?return_to={}",
            percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC)
        );
        Redirect::to(&location).into_response()
    } else {
        let mut res = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": "unauthenticated",
                "login": "/auth/login",
                "request_id": rid,
            })),
        )
            .into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Cookie realm=\"pbxgate\""),
        );
        res
    };
    web::security_headers(res.headers_mut());
    if presented.is_some()
        && let Ok(v) = HeaderValue::from_str(&app.sessions.clear_cookie())
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Err(classed(RouteClass::Unauthenticated, res))
}

const STARTUP_DELAY: Duration = Duration::from_secs(30);
/// A presence run that failed (Graph or 3CX down) is retried after this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(15);

/// A worker with a nightly full run (users, contacts): a delta run every `every`, a full one
/// at the first run after the daily time each day (and at the very first run). One replica
/// runs at a time; the others find the lease taken.
async fn schedule_daily<W: Worker>(
    app: Arc<App>,
    worker: Arc<W>,
    every: Duration,
    daily: Option<crate::sync::Daily>,
    mut stop: watch::Receiver<bool>,
) {
    let full_state = format!("{}.last_full", W::NAME);
    // The first run waits a little, so that a restart loop does not hammer Graph and 3CX.
    let first = tokio::time::Instant::now() + STARTUP_DELAY.min(every);
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let last_full: i64 = app
            .store
            .state(&full_state)
            .await
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mode = match &daily {
            Some(d) if last_full < d.last_due(app.clock.now()) => Mode::Full,
            _ => Mode::Delta,
        };
        match app.runner.run(worker.as_ref(), mode, false, &stop).await {
            Ok(_) => {}
            Err(crate::sync::SyncError::Busy(_)) => {
                tracing::debug!(worker = W::NAME, "runs elsewhere")
            }
            Err(e) => tracing::error!(worker = W::NAME, error = %e, "sync could not run"),
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The presence worker's schedule: a read every `interval`, and in between a run at each
/// meeting boundary the last read knows of, so statuses change on time. Run records older
/// than a week are dropped now and then (a tick a minute adds up).
async fn schedule_presence(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let interval = app.config.sync.presence.interval.get();
    let mut next = tokio::time::Instant::now() + STARTUP_DELAY.min(interval);
    let mut pruned_at = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        let now = app.clock.now();
        let ok = match app
            .runner
            .run(app.presence.as_ref(), Mode::Delta, false, &stop)
            .await
        {
            Ok(report) => report.status == crate::sync::RunStatus::Succeeded,
            Err(crate::sync::SyncError::Busy(_)) => {
                tracing::debug!("presence runs elsewhere");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "presence sync could not run");
                false
            }
        };
        if *stop.borrow() {
            return;
        }
        if now - pruned_at > 3600 {
            pruned_at = now;
            if let Err(e) = app.store.prune_runs("presence", now - 7 * 86_400).await {
                tracing::warn!(error = %e, "pruning presence run records failed");
            }
        }
        // After a failure the last read is stale and "due" at once: back off instead.
        let wait = match ok {
            true => until_due(app.presence.next_due(app.clock.now()), app.clock.now()),
            false => RETRY_AFTER_FAILURE,
        };
        next = tokio::time::Instant::now() + wait.min(interval);
    }
}

/// From `now` (whole seconds) to just after the start of second `due`: the clock reads whole
/// seconds, so waking 50 ms into that second is the earliest moment it says `due`.
fn until_due(due: i64, now: i64) -> Duration {
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| Duration::from_nanos(d.subsec_nanos().into()))
        .unwrap_or_default();
    Duration::from_secs(due.saturating_sub(now).max(0) as u64).saturating_sub(into_second)
        + Duration::from_millis(50)
}

async fn purge_sessions(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        match app.sessions.purge().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged ended sessions"),
            Err(e) => tracing::warn!(error = %e, "session purge failed"),
        }
    }
}

/// Accepts connections until `shutdown`, serving `router` over HTTP/1.1 (with upgrades), over
/// TLS when `tls` is set. Then stops accepting and gives open connections 10 s to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    idle: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let dispatch = Arc::new(Dispatch::Router(router));
    accept_loop(listener, tls, dispatch, idle, shutdown).await;
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    dispatch: Arc<Dispatch>,
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
        let dispatch = dispatch.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        conns.spawn(async move {
            let peer = Peer {
                addr,
                tls: tls.is_some(),
            };
            match tls {
                None => serve_connection(tcp, peer, dispatch, idle, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, dispatch, idle, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
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
    dispatch: Arc<Dispatch>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Made once per connection; each request clones a reference to it.
    let info = Arc::new(ConnInfo {
        peer,
        peer_value: proxy::ip_header_value(peer.addr.ip()),
        recent: Default::default(),
    });
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let (dispatch, info) = (dispatch.clone(), info.clone());
        async move { Ok::<_, Infallible>(dispatch.call(&info, req).await) }
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

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<I> {
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

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<I> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_own_route_is_dispatched_to_the_router_and_3cx_paths_are_not() {
        for own in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/auth/login",
            "/auth/callback",
            "/auth/logout",
            "/auth/signed-out",
            "/auth/frontchannel-logout",
            "/auth",
        ] {
            assert!(is_own(own), "{own}");
        }
        for theirs in [
            "/",
            "/webclient",
            "/connect/token",
            "/authx",
            "/xapi/v1/Users",
            "/ws/webclient",
        ] {
            assert!(!is_own(theirs), "{theirs}");
        }
    }

    #[test]
    fn request_ids_are_accepted_or_made() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("bad id <script>"));
        let made = request_id(&h);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(made.len(), 32);
        assert_ne!(made, request_id(&HeaderMap::new()));
    }

    #[test]
    fn log_paths_hide_secrets() {
        let pt = vec!["/provisioning/".to_string()];
        assert_eq!(
            log_path(RouteClass::Passthrough, "/provisioning/s3cr3t/a.xml", &pt),
            "/provisioning/…"
        );
        assert_eq!(
            log_path(RouteClass::Session, "/webclient/", &pt),
            "/webclient/"
        );
    }
}
