//! `pbxgate demo`: the simulators on loopback plus a generated config, certificates and an
//! embedded SQLite store under `data/demo/`, so a newcomer sees pbxgate work in one command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_rustls::TlsAcceptor;

use std::sync::Arc;

use pbxgate_sandbox::graph::GraphSim;
use pbxgate_sandbox::pki::TestPki;
use pbxgate_sandbox::{
    DEMO_SERVICE_EXTENSION, DEMO_SHARED_MAILBOX, DEMO_TENANT, Registration, Sandbox,
};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, ImpersonationCredential};
use crate::tls::{self, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot make the demo certificates")]
    Certificate(#[from] pbxgate_sandbox::pki::Error),
    #[error(transparent)]
    Random(#[from] crate::ids::RandomError),
    #[error("the generated demo config is invalid: {0}")]
    Config(#[from] ConfigError),
}

/// The running simulators and the config that points pbxgate at them.
pub struct Demo {
    pub config: Config,
    pub config_path: PathBuf,
    pub sandbox: Sandbox,
    pub provisioning_secret: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn random_hex<const N: usize>() -> Result<String, DemoError> {
    Ok(crate::ids::hex(&crate::ids::random::<N>()?))
}

/// Writes a file only its owner can read (the demo config holds client secrets), whatever
/// the umask, also over an earlier, more open copy: the mode is set before the content.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// Meetings around now, so that the demo shows statuses change: Alice has a meeting from
/// minute 2 to minute 12 (Do Not Disturb, then back), Bob is out of office all day (Away).
fn demo_meetings(graph: &GraphSim) {
    let now = SystemClock.now();
    graph.add_event("alice.adams@contoso.com", now + 120, now + 720, "busy");
    graph.add_event("bob.baker@contoso.com", now - 3600, now + 8 * 3600, "oof");
}

/// Starts the simulators and writes `dir/pbxgate.toml` for a gateway on `listen`.
pub async fn start(listen: SocketAddr, dir: &Path) -> Result<Demo, DemoError> {
    // The simulators start empty each time, so the store does too: a directory or sessions
    // from an earlier demo would point at extensions this run's 3CX does not have.
    for stale in ["pbxgate.db", "pbxgate.db-wal", "pbxgate.db-shm"] {
        let path = dir.join(stale);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir).map_err(io_err(&tls_dir))?;
    // A fresh private CA each run: nothing secret is ever committed or reused.
    let pki = TestPki::generate("pbxgate demo CA")?;
    let ca_path = tls_dir.join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).map_err(io_err(&ca_path))?;
    let (gw_cert, gw_key) = pki
        .leaf(&["localhost", "127.0.0.1"])?
        .write(&tls_dir, "gateway")
        .map_err(io_err(&tls_dir))?;
    let (pbx_cert, pbx_key) = pki
        .leaf(&["127.0.0.1", "localhost"])?
        .write(&tls_dir, "pbx")
        .map_err(io_err(&tls_dir))?;

    let public_host = if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        "localhost".to_string()
    } else {
        listen.ip().to_string()
    };
    let public_url = format!("https://{public_host}:{}", listen.port());
    let entra_secret = random_hex::<16>()?;
    let xapi_secret = random_hex::<16>()?;
    let service_password = random_hex::<16>()?;
    let provisioning_secret = random_hex::<8>()?;
    let registration = Registration {
        client_id: "pbxgate-demo".into(),
        client_secret: Some(entra_secret.clone()),
        certificate: None,
        public_url: public_url.clone(),
    };
    let acceptor = TlsAcceptor::from(tls::server_config(&pbx_cert, &pbx_key)?);
    let sandbox = Sandbox::start(
        &registration,
        ("pbxgate-demo", &xapi_secret),
        &provisioning_secret,
        Some(acceptor),
        Arc::new(SystemClock),
    )
    .await
    .map_err(io_err(Path::new("127.0.0.1")))?;

    demo_meetings(&sandbox.graph);
    // The System Owner extension pbxgate impersonates users through, with its web password.
    sandbox.pbx.edit_extension(DEMO_SERVICE_EXTENSION, |e| {
        e.access_password = Some(service_password.clone())
    });
    let text = format!(
        r#"# Generated by `pbxgate demo`; rewritten on every demo start.
[server]
listen = "{listen}"
public_url = "{public_url}"
tls_cert = {gw_cert:?}
tls_key = {gw_key:?}

[entra]
tenant_id = "{tenant}"
client_id = "pbxgate-demo"
client_secret = "{entra_secret}"
authority = "{authority}"
graph_url = "{graph_url}"
# Members of this group (Alice) may open the admin console at /admin.
admin_groups = ["{admin_group}"]

[pbx]
url = "{pbx_url}"
client_id = "pbxgate-demo"
client_secret = "{xapi_secret}"
ca_file = {ca_path:?}
# Impersonation through the service extension (System Owner), as on a real 3CX.
service_extension = "{service_extension}"
service_password = "{service_password}"

[store]
url = "sqlite://{db}"

[sync.contacts]
enabled = true
interval = "1m"
shared_mailboxes = ["{shared}"]
personal = true

[sync.users]
enabled = true
interval = "1m"
extension_start = "200"

[sync.presence]
enabled = true
interval = "1m"
"#,
        gw_cert = gw_cert.display().to_string(),
        gw_key = gw_key.display().to_string(),
        tenant = DEMO_TENANT,
        admin_group = pbxgate_sandbox::DEMO_ADMIN_GROUP,
        service_extension = DEMO_SERVICE_EXTENSION,
        shared = DEMO_SHARED_MAILBOX,
        authority = sandbox.entra_server.url(),
        graph_url = sandbox.graph_server.url(),
        pbx_url = sandbox.pbx_server.url(),
        ca_path = ca_path.display().to_string(),
        db = dir.join("pbxgate.db").display(),
    );
    let config_path = dir.join("pbxgate.toml");
    write_private(&config_path, &text).map_err(io_err(&config_path))?;
    let config = Config::load(&config_path)?;
    // PBXGATE__PBX__IMPERSONATION_CREDENTIAL=api-client tries the unverified variant; the
    // simulated 3CX refuses it unless told otherwise, as a real one may.
    if config.pbx.impersonation_credential == ImpersonationCredential::ApiClient {
        sandbox.pbx.allow_api_client_impersonation(true);
    }
    Ok(Demo {
        config,
        config_path,
        sandbox,
        provisioning_secret,
    })
}

impl Demo {
    /// What `pbxgate demo` prints: where to go, who to sign in as, what to try.
    pub fn banner(&self, dir: &Path) -> String {
        let url = &self.config.server.public_url;
        let users: String = pbxgate_sandbox::demo_users()
            .iter()
            .map(|u| format!("            {} ({})\n", u.upn, u.name))
            .collect();
        let ca = dir.join("tls/ca.pem");
        // The path this very binary was started from, so the printed command works as is.
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| {
                let cwd = std::env::current_dir().ok()?;
                Some(p.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(p))
            })
            .unwrap_or_else(|| PathBuf::from("pbxgate"));
        let pad = " ".repeat(12);
        let lines = [
            String::new(),
            "  pbxgate demo is running.".into(),
            String::new(),
            format!("  Open      {url}  and pick a demo user on the simulated Microsoft page:"),
            users.trim_end().to_string(),
            format!("{pad}Carol has no extension yet: she gets one when she signs in (or from"),
            format!("{pad}the user sync, 30 s after start). Gina is a guest; guests get none,"),
            format!("{pad}so she sees the page that says so."),
            format!("{pad}Alice is in the admin group: she may open the admin console at"),
            format!("{pad}{url}admin (the others get \"Admins only\")."),
            format!("{pad}Calendar: Alice has a meeting from minute 2 to 12 (her status turns"),
            format!("{pad}Do Not Disturb, then back); Bob is out of office today (Away)."),
            format!(
                "  TLS       certificates from a throw-away demo CA: {}",
                ca.display()
            ),
            format!("  Health    curl --cacert {} {url}readyz", ca.display()),
            format!(
                "  Phones    curl --cacert {} {url}provisioning/{}/0015650a1b2c.cfg",
                ca.display(),
                self.provisioning_secret
            ),
            format!(
                "  Sync      {} sync users --once --dry-run --config {}",
                exe.display(),
                self.config_path.display()
            ),
            format!("  Config    {}", self.config_path.display()),
            format!(
                "  Simulated Entra ID at {}, Graph at {}, 3CX at {}",
                self.sandbox.entra_server.url(),
                self.sandbox.graph_server.url(),
                self.sandbox.pbx_server.url()
            ),
            String::new(),
            "  Press Ctrl-C to stop.".into(),
        ];
        lines.join("\n")
    }
}
