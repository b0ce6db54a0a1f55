//! The layer around every request: request id, timing, metrics and the access log line.
//! pbxgate's own paths go through the router; everything else to the gate, on hyper's
//! types directly (measured: no router or boxed bodies on that path halves its cost).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use tracing::Instrument;

use super::routes::OwnPaths;
use crate::app::App;
use crate::gate::{self, Conn, ResBody};
use crate::metrics::RouteClass;
use crate::proxy::{self, Peer, Upstream};
use crate::session::Recent;
use crate::web::RequestId;

/// How one serving thread answers requests: its router, its upstream pool.
pub struct Handler {
    pub app: Arc<App>,
    pub own: Router,
    pub own_paths: OwnPaths,
    pub upstream: Box<Upstream>,
    /// `Strict-Transport-Security` when configured; sent on TLS connections only.
    pub hsts: Option<HeaderValue>,
}

/// What the requests of one client connection share.
pub struct ConnInfo {
    pub peer: Peer,
    /// The peer's address as a header value.
    pub peer_value: HeaderValue,
    /// The connection's last accepted session.
    pub recent: Recent,
    /// Its listener serves passthrough paths only.
    pub passthrough_only: bool,
}

impl ConnInfo {
    pub fn new(peer: Peer, passthrough_only: bool) -> Self {
        Self {
            peer,
            peer_value: proxy::ip_header_value(peer.addr.ip()),
            recent: Default::default(),
            passthrough_only,
        }
    }
}

impl Handler {
    /// Request id, timing, metrics and the access log line, around every request.
    /// (Not an `async fn`, for the reason given at `proxy::pool::Pool::send`.)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    #[expect(
        clippy::disallowed_methods,
        reason = "request timing for the metrics and the access log"
    )]
    pub fn call<'a>(
        &'a self,
        info: &'a ConnInfo,
        mut req: Request<Incoming>,
    ) -> impl Future<Output = Response<ResBody>> + 'a {
        async move {
            let start = std::time::Instant::now();
            let id_value = request_id(req.headers());
            let id = id_value.to_str().unwrap_or("-");
            // What the access log line needs, kept only when it is written.
            let logged = tracing::enabled!(target: "pbxgate::access", tracing::Level::INFO)
                .then(|| (req.method().clone(), req.uri().clone()));
            let own_route = self.own_paths.contains(req.uri().path());
            let span = tracing::info_span!("request", request_id = %id);
            let (class, mut res) = async {
                if info.passthrough_only && (own_route || !self.is_passthrough(req.uri().path())) {
                    return (RouteClass::Rejected, not_here(id));
                }
                if own_route {
                    let ext = req.extensions_mut();
                    ext.insert(info.peer);
                    ext.insert(RequestId(id.to_string()));
                    // Boxed: the rare path's future would otherwise enlarge every request's.
                    let res = Box::pin(tower::ServiceExt::oneshot(self.own.clone(), req))
                        .await
                        .unwrap_or_else(|never| match never {});
                    (gate::class_of(&res), res.map(Either::Right))
                } else {
                    let (parts, body) = req.into_parts();
                    let conn = Conn {
                        peer: info.peer,
                        peer_value: &info.peer_value,
                        recent: &info.recent,
                        id: &id_value,
                    };
                    gate::proxy_request(&self.app, &self.upstream, conn, parts, Either::Left(body))
                        .await
                }
            }
            .instrument(span.clone())
            .await;
            let elapsed = start.elapsed();
            let status = res.status().as_u16();
            self.app
                .metrics
                .observe_request(class, status, elapsed.as_secs_f64());
            let headers = res.headers_mut();
            headers.insert(proxy::X_REQUEST_ID, id_value.clone());
            if let Some(hsts) = self.hsts.as_ref().filter(|_| info.peer.tls) {
                headers.insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
            if let Some((method, uri)) = logged {
                let _enter = span.enter();
                tracing::info!(
                    target: "pbxgate::access",
                    %method,
                    path = %log_path(class, uri.path(), &self.app.config.pbx.passthrough),
                    status,
                    class = class.as_str(),
                    ms = elapsed.as_secs_f64() * 1000.0,
                );
            }
            res
        }
    }
}

impl Handler {
    /// A `[pbx] passthrough` path.
    fn is_passthrough(&self, path: &str) -> bool {
        proxy::passthrough_prefix(path, &self.app.config.pbx.passthrough).is_some()
    }
}

/// The answer on a passthrough-only listener to anything but a passthrough path: no
/// sign-in, no 3CX page, no session cookie over plain HTTP.
fn not_here(id: &str) -> Response<ResBody> {
    crate::web::page(
        Some(id),
        RouteClass::Rejected,
        http::StatusCode::NOT_FOUND,
        "Not found",
        "This address serves phone provisioning only.",
    )
    .map(Either::Right)
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

#[cfg(test)]
mod tests {
    use super::*;

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
