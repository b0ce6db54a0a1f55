//! The composition root: [`App::build`] turns a validated config into the store, the
//! clients of the outside parties, the sign-in state and the sync workers, once. `serve`,
//! `sync --once` and the tests all start here.
//!
//! Layer: above every domain module (it wires them) and below the front doors (`gate`,
//! `http`), which take what they need from [`App`].

use std::sync::Arc;

use crate::auth::{self, SignIn};
use crate::clock::Clock;
use crate::config::Config;
use crate::directory::{Directory, ManagedPasswords, PasswordError, Revoker, WebPasswords};
use crate::doctor::{self, Doctor};
use crate::graph::{GraphClient, GraphError};
use crate::metrics::Metrics;
use crate::oidc::{OidcError, Provider};
use crate::pbx::{PbxClient, PbxError};
use crate::proxy::Upstream;
use crate::session::Sessions;
use crate::store::{Store, StoreError};
use crate::sync::schedule::Workers;
use crate::tls::TlsError;

/// Everything the gateway's requests and workers share.
pub struct App {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub sessions: Arc<Sessions>,
    pub pbx: Arc<PbxClient>,
    /// For the router's requests and readiness probes; each serving thread has its own.
    pub upstream: Upstream,
    pub sign_in: Arc<SignIn>,
    pub workers: Arc<Workers>,
    /// Ends a user's sessions and 3CX access (sign-out, recheck, sync, admin).
    pub revoker: Arc<Revoker>,
    /// The last live check of every credential (`/readyz`, `/admin`).
    pub doctor: Arc<Doctor>,
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
    Graph(#[from] GraphError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl App {
    /// Opens the store and builds the clients and workers.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Upstream::new(&config, metrics.clone())?;
        let store = Store::open(&config.store.url).await?;
        let sessions = Arc::new(Sessions::new(store.clone(), clock.clone(), &config));
        let provider = Arc::new(Provider::new(&config.entra, clock.clone())?);
        let pbx = Arc::new(PbxClient::new(&config.pbx, store.clone(), clock.clone())?);
        let directory =
            Directory::new(&config.directory, store.clone(), pbx.clone(), clock.clone());
        let graph = Arc::new(GraphClient::new(
            &config.entra.graph_url,
            provider.clone(),
            clock.clone(),
        )?);
        let passwords = Arc::new(ManagedPasswords::new(
            config.pbx.password_key.as_ref(),
            pbx.clone(),
            store.clone(),
            clock.clone(),
        )?);
        let web_passwords =
            WebPasswords::new(&config.pbx, pbx.clone(), store.clone(), clock.clone());
        let revoker = Arc::new(Revoker::new(
            sessions.clone(),
            pbx.clone(),
            passwords.clone(),
            store.clone(),
            metrics.clone(),
            config.pbx.session_mode,
            &config.entra.tenant_id,
        ));
        let workers = Arc::new(Workers::new(
            &config,
            graph.clone(),
            pbx.clone(),
            store.clone(),
            revoker.clone(),
            clock.clone(),
            metrics.clone(),
        ));
        let sign_in = Arc::new(SignIn::new(
            &config,
            auth::Deps {
                provider,
                store: store.clone(),
                sessions: sessions.clone(),
                directory,
                pbx: pbx.clone(),
                graph,
                users: Some(workers.users.clone()),
                passwords,
                web_passwords,
                revoker: revoker.clone(),
                clock: clock.clone(),
            },
        ));
        let doctor = Arc::new(Doctor::new(doctor::Deps {
            config: config.clone(),
            clock: clock.clone(),
            store: Some(store.clone()),
            pbx: Some(pbx.clone()),
            metrics: Some(metrics.clone()),
        }));
        Ok(Arc::new(App {
            config,
            clock,
            metrics,
            store,
            sessions,
            pbx,
            upstream,
            sign_in,
            workers,
            revoker,
            doctor,
        }))
    }
}
