//! Prometheus metrics: requests by route class and status, latency, upstream errors, open
//! WebSockets. Labels are bounded (a handful of classes and status codes), never paths or users.

use std::fmt::Write;
use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What kind of route answered a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[repr(usize)]
pub enum RouteClass {
    /// `/healthz`, `/readyz`, `/metrics`.
    Ops,
    /// `/auth/*`.
    Auth,
    /// Proxied without a session (`[pbx] passthrough`).
    Passthrough,
    /// Proxied behind a valid session.
    Session,
    /// Refused for want of a session (redirect or 401).
    Unauthenticated,
    /// Refused before routing (malformed path).
    Rejected,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    class: RouteClass,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: RouteClass,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Protocol,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ops => "ops",
            Self::Auth => "auth",
            Self::Passthrough => "passthrough",
            Self::Session => "session",
            Self::Unauthenticated => "unauthenticated",
            Self::Rejected => "rejected",
        }
    }
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
        }
    }
}

impl EncodeLabelValue for RouteClass {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        e.write_str(self.as_str())
    }
}

impl EncodeLabelValue for UpstreamErrorKind {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        e.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    worker: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    worker: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    kind: UpstreamErrorKind,
}

type HistogramFamily = Family<ClassLabels, Histogram, fn() -> Histogram>;

/// The request series of one route class, resolved on first use so that the hot path
/// skips the family's hash and lock (and /metrics shows only series that were used).
#[derive(Default)]
struct ClassHandles {
    latency: OnceLock<Histogram>,
    /// By status, for the statuses answers usually have.
    requests: [OnceLock<Counter>; COMMON_STATUSES.len()],
}

const CLASSES: usize = 6;
// `Rejected` is the last class: a new one must be counted in `CLASSES`.
const _: () = assert!(RouteClass::Rejected as usize + 1 == CLASSES);
const COMMON_STATUSES: [u16; 12] = [200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 502, 503];

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    handles: [ClassHandles; CLASSES],
    upstream_errors: Family<UpstreamLabels, Counter>,
    websockets_open: Gauge,
    sync_runs: Family<RunLabels, Counter>,
    sync_actions: Family<ActionLabels, Counter>,
    sessions_revoked: Family<ReasonLabels, Counter>,
    session_rechecks: Family<OutcomeLabels, Counter>,
    session_recheck_users: Counter,
    // --- client connections (issue 15: connection limits) ---
    connections_open: Gauge,
    connections_refused: Family<ReasonLabels, Counter>,
    // --- TLS certificates (issue 16: certificate reload) ---
    tls_certificate_expiry: Family<CertLabels, Gauge>,
    // --- credential checks (issue 18: doctor) ---
    credential_checks: Family<CheckLabels, Gauge>,
    // --- serving runtimes (issue 17: both cores busy) ---
    serving_connections: Family<RuntimeLabels, Counter>,
    serving_requests: Family<RuntimeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    /// The doctor check's stable id, e.g. `graph.roles`.
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    /// The certificate file, as configured.
    path: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~4 s: proxy overhead lives at the bottom, slow 3CX answers at the top.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pbxgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = HistogramFamily::new_with_constructor(latency_histogram);
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        let websockets_open = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route class and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to response headers, by route class",
            latency.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests 3CX could not answer, by failure kind",
            upstream_errors.clone(),
        );
        registry.register(
            "websockets_open",
            "WebSocket connections currently relayed to 3CX",
            websockets_open.clone(),
        );
        let sync_runs = Family::<RunLabels, Counter>::default();
        let sync_actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "sync_runs",
            "Sync runs, by worker and outcome",
            sync_runs.clone(),
        );
        registry.register(
            "sync_actions",
            "Changes applied by the sync workers, by worker and action",
            sync_actions.clone(),
        );
        let sessions_revoked = Family::<ReasonLabels, Counter>::default();
        let session_rechecks = Family::<OutcomeLabels, Counter>::default();
        let session_recheck_users = Counter::default();
        registry.register(
            "sessions_revoked",
            "Sessions ended together with their 3CX access, by reason",
            sessions_revoked.clone(),
        );
        registry.register(
            "session_rechecks",
            "Rechecks of live sessions against Entra, by outcome (ok, failed)",
            session_rechecks.clone(),
        );
        registry.register(
            "session_recheck_users",
            "Users read from Entra by the session recheck",
            session_recheck_users.clone(),
        );
        // --- client connections (issue 15: connection limits) ---
        let connections_open = Gauge::default();
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_open",
            "Client connections currently open",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections closed at accept, by the limit they hit (max_connections, max_connections_per_client)",
            connections_refused.clone(),
        );
        // --- build info (issue 16: configuration) ---
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: VERSION.into(),
                commit: BUILD_COMMIT.into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: its version and git commit (always 1)",
            build_info,
        );
        // --- TLS certificates (issue 16: certificate reload) ---
        let tls_certificate_expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the served TLS certificate expires (notAfter, Unix seconds), by certificate file",
            tls_certificate_expiry.clone(),
        );
        // --- credential checks (issue 18: doctor) ---
        let credential_checks = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "credential_check",
            "The last background doctor run, by check id: 1 passed or warned, 0 failed",
            credential_checks.clone(),
        );
        // --- serving runtimes (issue 17: both cores busy) ---
        let serving_connections = Family::<RuntimeLabels, Counter>::default();
        let serving_requests = Family::<RuntimeLabels, Counter>::default();
        registry.register(
            "serving_connections",
            "Client connections served, by serving runtime (one per core)",
            serving_connections.clone(),
        );
        registry.register(
            "serving_requests",
            "Requests served, by serving runtime (one per core)",
            serving_requests.clone(),
        );
        Self {
            credential_checks,
            serving_connections,
            serving_requests,
            tls_certificate_expiry,
            connections_open,
            connections_refused,
            registry,
            sessions_revoked,
            session_rechecks,
            session_recheck_users,
            requests,
            latency,
            handles: Default::default(),
            upstream_errors,
            websockets_open,
            sync_runs,
            sync_actions,
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, class: RouteClass, status: u16, seconds: f64) {
        let handles = &self.handles[class as usize];
        let labels = || RequestLabels { class, status };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => handles.requests[i]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
        handles
            .latency
            .get_or_init(|| self.latency.get_or_create(&ClassLabels { class }).clone())
            .observe(seconds);
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels { kind })
            .inc();
    }

    /// Records a finished sync run.
    pub fn sync_run(
        &self,
        worker: &str,
        status: &str,
        applied: &std::collections::BTreeMap<&'static str, u64>,
    ) {
        self.sync_runs
            .get_or_create(&RunLabels {
                worker: worker.into(),
                status: status.into(),
            })
            .inc();
        for (action, n) in applied {
            self.sync_actions
                .get_or_create(&ActionLabels {
                    worker: worker.into(),
                    action: (*action).into(),
                })
                .inc_by(*n);
        }
    }

    /// Counts `n` sessions ended for `reason` (logout, disabled, sessions_revoked, …).
    pub fn sessions_revoked(&self, reason: &str, n: u64) {
        self.sessions_revoked
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc_by(n);
    }

    /// Records one session recheck: whether Entra answered, and how many users it read.
    pub fn session_recheck(&self, ok: bool, users: u64) {
        let outcome = if ok { "ok" } else { "failed" };
        self.session_rechecks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.session_recheck_users.inc_by(users);
    }

    /// Counts a relayed WebSocket until the returned guard drops.
    pub fn websocket_opened(&self) -> WebSocketGuard {
        self.websockets_open.inc();
        WebSocketGuard(self.websockets_open.clone())
    }

    // --- client connections (issue 15: connection limits) ---
    /// Sets the number of open client connections.
    pub fn connections_open(&self, n: usize) {
        self.connections_open.set(n as i64);
    }

    /// Counts a client connection closed at accept because of the limit `reason`.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    // --- TLS certificates (issue 16: certificate reload) ---
    /// Sets the expiry (Unix seconds) of the certificate served from `path`.
    pub fn tls_certificate_expiry(&self, path: &str, not_after: i64) {
        self.tls_certificate_expiry
            .get_or_create(&CertLabels { path: path.into() })
            .set(not_after);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

pub struct WebSocketGuard(Gauge);

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// --- build info (issue 16: configuration) ---
/// This build's version, for `pbxgate --version` and `pbxgate_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this build was made from (build.rs), or "unknown".
pub const BUILD_COMMIT: &str = env!("PBXGATE_BUILD_COMMIT");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

// --- credential checks (issue 18: doctor) ---
impl Metrics {
    /// Records one doctor check: 1 when it passed or warned, 0 when it failed (skipped
    /// checks are left out).
    pub fn credential_check(&self, id: &str, ok: bool) {
        self.credential_checks
            .get_or_create(&CheckLabels { id: id.into() })
            .set(i64::from(ok));
    }
}

// --- serving runtimes (issue 17: both cores busy) ---
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    /// The serving runtime's index (`pbxgate-serve-N`).
    runtime: String,
}

/// One serving runtime's counters, resolved once when it starts: counting a request is
/// then one atomic add on a counter only that runtime's thread writes (no label lookup).
#[derive(Clone)]
pub struct RuntimeCounters {
    pub connections: Counter,
    pub requests: Counter,
}

impl Metrics {
    /// The counters of serving runtime `index`.
    pub fn serving_runtime(&self, index: usize) -> RuntimeCounters {
        let labels = RuntimeLabels {
            runtime: index.to_string(),
        };
        RuntimeCounters {
            connections: self.serving_connections.get_or_create(&labels).clone(),
            requests: self.serving_requests.get_or_create(&labels).clone(),
        }
    }
}
