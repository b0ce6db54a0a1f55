//! `pbxgate doctor`: a live check of every credential and permission the enabled features
//! need, against the real Entra ID, Graph, 3CX and store. The gateway keeps the last report
//! (refreshed in the background) for `/readyz` and the admin console.
//!
//! Each check builds only what it needs, so that doctor works where `App::build` would fail
//! (store down, 3CX's certificate untrusted, a wrong secret): a failure is a ✘ line, and the
//! lines that depend on it are skipped.

mod entra;
mod expiry;
mod graph;
mod pbx;
mod print;
mod report;
mod roles;
mod store;

use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use print::mark;
pub use report::{Area, Check, Report, Status};
pub use roles::Feature;

use crate::clock::{Clock, UnixTime};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pbx::PbxClient;
use crate::store::Store;

/// How often `serve` runs the checks in the background.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// How long after start the first background run waits: the gateway serves first, and a
/// short-lived process (a test, a restart loop) does not sign in to 3CX for nothing.
pub const FIRST_REFRESH: Duration = Duration::from_secs(60);
/// The background runs sign the service extension in anew at most this often (seconds):
/// every sign-in is a new session in 3CX's log.
const SESSION_CHECK_EVERY: UnixTime = 3600;

/// What the checks use. Pieces the gateway already built are reused: its store pool, and its
/// 3CX client, whose API token is shared (a second token would end the first, see
/// `pbx::api_token`).
pub struct Deps {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    /// `None`: doctor connects to `[store] url` itself (without migrating it).
    pub store: Option<Store>,
    /// `None`: doctor builds a 3CX client on the store (or, store down, on a throw-away one).
    pub pbx: Option<Arc<PbxClient>>,
    /// Where the background runs report `pbxgate_credential_check`.
    pub metrics: Option<Arc<Metrics>>,
}

/// The last report and how to make a new one.
#[derive(Default)]
pub struct Doctor {
    latest: RwLock<Option<Arc<Report>>>,
    deps: Option<Deps>,
    /// The last service sign-in line and when it was made (see [`SESSION_CHECK_EVERY`]).
    session: tokio::sync::Mutex<Option<(UnixTime, Check)>>,
}

impl Doctor {
    pub fn new(deps: Deps) -> Self {
        Self {
            deps: Some(deps),
            ..Self::default()
        }
    }

    /// The last report, if a check has run.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    /// Runs every check now and keeps the result (the service sign-in at most hourly).
    pub async fn refresh(&self) -> Arc<Report> {
        let report = Arc::new(match &self.deps {
            Some(d) => self.checked(d).await,
            None => Report {
                checked_at: 0,
                checks: Vec::new(),
            },
        });
        if let Some(m) = self.deps.as_ref().and_then(|d| d.metrics.as_ref()) {
            for c in report.checks.iter().filter(|c| c.status != Status::Skip) {
                m.credential_check(c.id, c.status != Status::Fail);
            }
        }
        if let Ok(mut l) = self.latest.write() {
            *l = Some(report.clone());
        }
        report
    }

    /// [`Doctor::refresh`] after `first`, then every `every` (until the task is aborted).
    pub async fn refresh_every(self: Arc<Self>, first: Duration, every: Duration) {
        tokio::time::sleep(first).await;
        loop {
            let report = self.refresh().await;
            let failing = report.failing();
            if !failing.is_empty() {
                tracing::warn!(failing = ?failing, "credential check: run `pbxgate doctor` for what to fix");
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn checked(&self, deps: &Deps) -> Report {
        let now = deps.clock.now();
        let mut cached = self.session.lock().await;
        let due = cached
            .as_ref()
            .is_none_or(|(at, c)| now - at >= SESSION_CHECK_EVERY || c.status == Status::Fail);
        let mut report = run(deps, None, due).await;
        if due {
            *cached = report.get("pbx.session").map(|c| (now, c.clone()));
        } else if let Some((_, line)) = cached.as_ref() {
            let at = report
                .checks
                .iter()
                .rposition(|c| c.area == Area::Pbx)
                .map_or(report.checks.len(), |i| i + 1);
            report.checks.insert(at, line.clone());
        }
        report
    }
}

/// Runs every check once: `as_extension` adds a real sign-in probe for that extension;
/// `session_check` signs the service extension in.
pub async fn run(deps: &Deps, as_extension: Option<&str>, session_check: bool) -> Report {
    let config = &deps.config;
    let now = deps.clock.now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pbxgate-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    let (store_checks, store) = store::check(&config.store.url, deps.store.clone()).await;
    let scratch = Scratch::new();
    let client = match &deps.pbx {
        Some(p) => Ok(p.clone()),
        None => pbx_client(deps, store, &scratch).await,
    };
    let cloud = async {
        let e = entra::check(config, &deps.clock, &http).await;
        let g = graph::check(config, e.token.as_ref(), &http, now).await;
        (e.checks, g)
    };
    let phone = async {
        match &client {
            Ok(c) => pbx::check(config, c, as_extension, session_check).await,
            Err(line) => vec![line.clone()],
        }
    };
    let ((entra, graph), pbx) = tokio::join!(cloud, phone);
    drop(client);
    scratch.remove().await;
    let checks = [entra, graph, pbx, store_checks].concat();
    Report {
        checked_at: now,
        checks,
    }
}

/// A throw-away SQLite store for the 3CX client when the real one is down, removed after
/// the run.
struct Scratch {
    path: std::path::PathBuf,
    store: tokio::sync::Mutex<Option<Store>>,
}

impl Scratch {
    fn new() -> Self {
        let name = format!("pbxgate-doctor-{}.db", crate::ids::request_id());
        Self {
            path: std::env::temp_dir().join(name),
            store: tokio::sync::Mutex::new(None),
        }
    }

    async fn open(&self) -> Result<Store, crate::store::StoreError> {
        let store = Store::open(&format!("sqlite://{}", self.path.display())).await?;
        *self.store.lock().await = Some(store.clone());
        Ok(store)
    }

    async fn remove(self) {
        let Some(store) = self.store.lock().await.take() else {
            return;
        };
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A 3CX client on `store`, or on a throw-away store when it is down (its API token is then
/// its own: fetching it ends the gateway's, which fetches a new one).
async fn pbx_client(
    deps: &Deps,
    store: Option<Store>,
    scratch: &Scratch,
) -> Result<Arc<PbxClient>, Check> {
    let store = match store {
        Some(s) => s,
        None => scratch.open().await.map_err(|e| {
            Check::fail(
                Area::Pbx,
                "pbx.reachable",
                "3CX web server answers",
                e.to_string(),
            )
        })?,
    };
    PbxClient::new(&deps.config.pbx, store, deps.clock.clone())
        .map(Arc::new)
        .map_err(|e| {
            Check::fail(
                Area::Pbx,
                "pbx.tls",
                "3CX TLS settings usable",
                e.to_string(),
            )
            .fix("check [pbx] ca_file and tls_server_name")
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::config::Config;

    /// A valid config text with `entra_extra` added to `[entra]`.
    pub fn config_text(entra_extra: &str) -> String {
        format!(
            "[server]\npublic_url = \"https://pbx.example.com\"\n\
             [entra]\ntenant_id = \"11111111-2222-3333-4444-555555555555\"\n\
             client_id = \"app\"\nclient_secret = \"entra-s3cret\"\n{entra_extra}\
             [pbx]\nurl = \"https://pbx.internal:5001\"\nclient_id = \"pbxgate\"\n\
             client_secret = \"xapi-s3cret\"\nservice_extension = \"999\"\n\
             service_password = \"service-s3cret\"\n"
        )
    }

    pub fn config(entra_extra: &str) -> Config {
        Config::parse(&config_text(entra_extra), "test.toml", Vec::new()).expect("valid config")
    }
}
