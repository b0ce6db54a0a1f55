//! The operator's routes: `/healthz` (liveness), `/readyz` (readiness with per-dependency
//! detail, plus the last credential check, which does not decide readiness) and `/metrics`
//! (Prometheus text, from `[server] metrics_allow` only).

use std::future::Future;
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

/// The routes; each call makes its own readiness cache, shared by the router's clones.
pub fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    let readiness = Arc::new(Readiness::default());
    vec![
        ("/healthz", get(healthz)),
        (
            "/readyz",
            get(move |State(app): State<Arc<App>>| async move { readyz(app, &readiness).await }),
        ),
        ("/metrics", get(metrics)),
    ]
}

/// How long a dependency's check answers for every `/readyz` call: anyone who can reach
/// `/readyz` could otherwise make pbxgate send 3CX (and the store) a request per call.
const FRESH: Duration = Duration::from_secs(1);

/// The last check of each dependency. One check at a time per dependency: concurrent calls
/// wait for it and share its result.
#[derive(Default)]
struct Readiness {
    store: tokio::sync::Mutex<Option<Checked>>,
    pbx: tokio::sync::Mutex<Option<Checked>>,
}

struct Checked {
    /// tokio's clock, not the app's: this paces probes and decides nothing about data (a
    /// test's clock standing still would otherwise keep the first answer forever).
    at: tokio::time::Instant,
    result: serde_json::Value,
}

impl Readiness {
    /// The dependency's result from the last [`FRESH`] interval, or a new check's.
    async fn check(
        slot: &tokio::sync::Mutex<Option<Checked>>,
        probe: impl Future<Output = serde_json::Value>,
    ) -> serde_json::Value {
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref()
            && c.at.elapsed() < FRESH
        {
            return c.result.clone();
        }
        let result = probe.await;
        *slot = Some(Checked {
            at: tokio::time::Instant::now(),
            result: result.clone(),
        });
        result
    }
}

async fn healthz() -> Response {
    web::classed(RouteClass::Ops, "ok\n")
}

/// Ready when the store answers a query and 3CX answers HTTP, each within two seconds
/// (each result reused for [`FRESH`]).
#[expect(
    clippy::disallowed_methods,
    reason = "the probe's own duration is request timing, not a decision"
)]
async fn readyz(app: Arc<App>, readiness: &Readiness) -> Response {
    let started = std::time::Instant::now();
    let (store, pbx) = tokio::join!(
        Readiness::check(&readiness.store, check_store(&app)),
        Readiness::check(&readiness.pbx, check_pbx(&app)),
    );
    let ready = store["ok"] == true && pbx["ok"] == true;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": { "store": store, "pbx": pbx, "credentials": credentials(&app) },
        "ms": started.elapsed().as_millis() as u64,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    web::classed(RouteClass::Ops, (status, axum::Json(body)))
}

const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// The last background `doctor` run (never a new one: it takes seconds and signs in to 3CX).
/// It does not decide readiness: phones and API clients use passthrough routes that need no
/// Entra ID or Graph, so a missing Graph permission must not take every replica out of the
/// load balancer. `ok: false` here (and `pbxgate_credential_check`) is for alerting.
fn credentials(app: &App) -> serde_json::Value {
    match app.doctor.latest() {
        Some(r) => serde_json::json!({
            "ok": r.ok(),
            "failing": r.failing(),
            "checked_at": r.checked_at,
        }),
        None => {
            serde_json::json!({ "ok": null, "pending": "the first check runs a minute after start" })
        }
    }
}

async fn check_store(app: &App) -> serde_json::Value {
    match tokio::time::timeout(PROBE_LIMIT, app.store.ping()).await {
        Ok(Ok(())) => {
            serde_json::json!({ "ok": true, "backend": format!("{:?}", app.store.backend()).to_lowercase() })
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store is down");
            serde_json::json!({ "ok": false, "error": "query failed" })
        }
        Err(_) => serde_json::json!({ "ok": false, "error": "timeout" }),
    }
}

async fn check_pbx(app: &App) -> serde_json::Value {
    match app.upstream.probe(PROBE_LIMIT).await {
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
    }
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
