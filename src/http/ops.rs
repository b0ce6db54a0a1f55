//! The operator's routes: `/healthz` (liveness), `/readyz` (readiness with per-dependency
//! detail) and `/metrics` (Prometheus text, from `[server] metrics_allow` only).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use http::StatusCode;
use http::header::{self, HeaderValue};

use crate::app::App;
use crate::metrics::RouteClass;
use crate::proxy::{ClientInfo, ProxyError};
use crate::web;

pub fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    vec![
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
    ]
}

async fn healthz() -> Response {
    web::classed(RouteClass::Ops, "ok\n")
}

/// Ready when the store answers a query and 3CX answers HTTP, each within two seconds.
#[expect(
    clippy::disallowed_methods,
    reason = "the probe's own duration is request timing, not a decision"
)]
async fn readyz(State(app): State<Arc<App>>) -> Response {
    const LIMIT: Duration = Duration::from_secs(2);
    let started = std::time::Instant::now();
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
                ProxyError::Connect(_) => "connect failed",
                ProxyError::Timeout(_) => "timeout",
                ProxyError::Protocol(_) => "bad answer",
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
    web::classed(RouteClass::Ops, (status, axum::Json(body)))
}

async fn metrics(State(app): State<Arc<App>>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let client = ClientInfo::of(&req, &app.config.server.trusted_proxies);
    let allowed = &app.config.server.metrics_allow;
    if !client.is_within(allowed) {
        return web::page(
            web::correlation(&req).as_deref(),
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
    web::classed(RouteClass::Ops, res)
}
