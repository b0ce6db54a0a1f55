//! `pbxgate setup`: registers pbxgate in the customer's Entra ID from the admin's machine
//! (issue 18 §3; `shared/notes/entra-setup.md`). An administrator signs in by device code;
//! then, through Microsoft Graph, the app registration is created or brought up to date, a
//! locally made certificate is uploaded (no client secret), the service principal is made,
//! the sign-in scopes are consented for all users and the Graph application permissions of the
//! enabled features are granted; the `[entra]` keys are written into the config file.
//! Every step reads first, so a second run changes nothing.
//!
//! `setup --print` is the equal path for tenants that block device code: the registration to
//! create and the admin-consent URL, changing nothing.

mod certificate;
mod config_file;
mod devicecode;
mod graph_admin;
mod manifest;
mod permissions;
mod provision;

use std::path::{Path, PathBuf};

pub use config_file::{load, set_entra_keys};
pub use devicecode::{DEFAULT_PUBLIC_CLIENT, Step, next_step};
pub use manifest::{manifest, unique_name};
pub use permissions::{GRAPH_APP_ID, required_roles};

use crate::clock::Clock;
use crate::config::Config;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("config: {0}")]
    Config(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("cannot reach Entra ID: {0}")]
    Unreachable(String),
    #[error("the sign-in was declined; run `pbxgate setup` again to retry")]
    Declined,
    #[error("the code expired before anyone signed in with it; run `pbxgate setup` again")]
    Expired,
    #[error("Entra ID refused the sign-in: {error}: {description} ({hint})")]
    SignIn {
        error: String,
        description: String,
        hint: &'static str,
    },
    #[error("Microsoft Graph, {what}: {status} {code}: {message}")]
    Graph {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "granting Microsoft Graph application permissions needs the Entra role Privileged Role \
         Administrator or Global Administrator, which the signed-in admin lacks (Application \
         Administrator and Cloud Application Administrator may not grant them)"
    )]
    NeedsPrivilegedRole,
}

/// The admin-consent URL (v1 endpoint, notes §4.1): an administrator who may grant the
/// registration's permissions opens it; Entra then sends the browser to the callback.
pub fn consent_url(c: &Config) -> String {
    let authority = c.entra.authority.as_str().trim_end_matches('/');
    let redirect = format!(
        "{}/auth/callback",
        c.server.public_url.as_str().trim_end_matches('/')
    );
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "{authority}/{}/adminconsent?client_id={}&redirect_uri={}",
        enc(&c.entra.tenant_id),
        enc(&c.entra.client_id),
        enc(&redirect)
    )
}

/// What `setup --print` shows: the registration as Graph JSON, the permissions by name and
/// GUID, and the admin-consent URL.
pub fn print(c: &Config, client_known: bool) -> String {
    let json = serde_json::to_string_pretty(&manifest(c)).unwrap_or_default();
    let roles: String = required_roles(c)
        .iter()
        .map(|(v, id)| format!("  - {v} ({id}), application permission\n"))
        .collect();
    let consent = if client_known {
        consent_url(c)
    } else {
        let mut c = c.clone();
        c.entra.client_id = "<application (client) id>".into();
        consent_url(&c).replace(
            "%3Capplication+%28client%29+id%3E",
            "<application-client-id>",
        )
    };
    format!(
        "# The app registration pbxgate needs (Microsoft Graph `application` JSON, for\n\
         # `PATCH /applications(uniqueName='{name}')`; the portal's manifest editor uses other names).\n\
         {json}\n\n\
         # Microsoft Graph permissions (configure them by id):\n\
         {roles}  - openid, profile, email (delegated, consented for all users)\n\n\
         # In the portal: App registrations > New registration (single tenant), web redirect URIs\n\
         # and front-channel logout URL as above, Certificates & secrets > upload a certificate\n\
         # (its key goes to [entra] client_certificate / client_private_key), API permissions as above.\n\
         # Then an administrator with Privileged Role Administrator or Global Administrator opens:\n\
         {consent}\n",
        name = unique_name(c),
    )
}

/// How `setup` signs the admin in.
pub struct Options {
    pub config_path: PathBuf,
    /// The public client of the device code sign-in.
    pub public_client: String,
}

/// Runs the whole setup, printing progress to `out`; returns the lines of what changed
/// (empty: nothing did).
pub async fn run(
    opts: &Options,
    clock: &dyn Clock,
    out: &mut dyn std::io::Write,
) -> Result<Vec<String>, SetupError> {
    let (config, _) = load(&opts.config_path)?;
    crate::tls::provider();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pbxgate-setup/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SetupError::Unreachable(e.to_string()))?;
    let authority = config.entra.authority.as_str().trim_end_matches('/');
    let login = format!("{authority}/{}", config.entra.tenant_id);
    let code = devicecode::start(&http, &login, &opts.public_client).await?;
    let say = |out: &mut dyn std::io::Write, s: &str| {
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    };
    let prompt = code.message.clone().unwrap_or_else(|| {
        format!(
            "Open {} and enter the code {}.",
            code.verification_uri, code.user_code
        )
    });
    say(
        out,
        &format!(
            "{prompt}\nSign in as an Entra administrator (Privileged Role Administrator or Global Administrator grants everything)."
        ),
    );
    let token = devicecode::poll(&http, &login, &opts.public_client, &code).await?;
    say(
        out,
        &format!(
            "Signed in as {}.",
            token.username.as_deref().unwrap_or("the administrator")
        ),
    );
    let tenant = token
        .tenant_id
        .clone()
        .unwrap_or_else(|| config.entra.tenant_id.clone());
    let mut g = graph_admin::AdminGraph::new(http, &config.entra.graph_url, token.access_token);
    let mut log = Vec::new();
    let cert = certificate::AppCertificate::obtain(&config, &opts.config_path, clock.now())?;
    if cert.created {
        log.push(format!(
            "made a certificate ({}) and its private key ({}, mode 0600)",
            cert.cert_path.display(),
            cert.key_path.display()
        ));
    }
    let app_id = provision::application(&mut g, &config, &cert, &mut log).await?;
    let sp = provision::service_principal(&mut g, &app_id, &mut log).await?;
    let mut written = config.clone();
    written.entra.tenant_id = tenant.clone();
    written.entra.client_id = app_id.clone();
    write_config(&opts.config_path, &config, &written, &cert, &mut log)?;
    let sp_id = sp["id"].as_str().unwrap_or_default().to_string();
    let graph_sp = provision::graph(&mut g).await?;
    let graph_id = graph_sp["id"].as_str().unwrap_or_default().to_string();
    provision::sign_in_grant(&mut g, &sp_id, &graph_id, &mut log).await?;
    let roles = required_roles(&config);
    let granted = provision::app_roles(&mut g, &sp_id, &graph_sp, &roles, &mut log).await;
    for line in &log {
        say(out, &format!("+ {line}"));
    }
    if let Err(e) = granted {
        if e == SetupError::NeedsPrivilegedRole {
            say(
                out,
                &format!(
                    "\nThe app registration, its certificate and the sign-in consent are in place and {} is written,\n\
                 but the application permissions are not granted. Someone with Privileged Role Administrator\n\
                 or Global Administrator can run `pbxgate setup` again, or open this admin-consent URL\n\
                 (also shown by `pbxgate setup --print`):\n{}",
                    opts.config_path.display(),
                    consent_url(&written)
                ),
            );
        }
        return Err(e);
    }
    if log.is_empty() {
        say(
            out,
            "Nothing changed: the app registration, its certificate, the consent and the permissions already match this config.",
        );
    } else {
        say(
            out,
            &format!(
                "Done: app {app_id} in tenant {tenant}, certificate {}.",
                cert.thumbprint()
            ),
        );
    }
    Ok(log)
}

/// Writes the `[entra]` keys that differ from the file's; nothing when all match.
fn write_config(
    path: &Path,
    before: &Config,
    after: &Config,
    cert: &certificate::AppCertificate,
    log: &mut Vec<String>,
) -> Result<(), SetupError> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (cert_path, key_path) = (abs(&cert.cert_path), abs(&cert.key_path));
    let same_path =
        |p: &Option<PathBuf>, want: &Path| p.as_deref().map(abs).as_deref() == Some(want);
    let mut keys = Vec::new();
    if before.entra.tenant_id != after.entra.tenant_id {
        keys.push(("tenant_id", after.entra.tenant_id.clone()));
    }
    if before.entra.client_id != after.entra.client_id {
        keys.push(("client_id", after.entra.client_id.clone()));
    }
    if !same_path(&before.entra.client_certificate, &cert_path) {
        keys.push(("client_certificate", cert_path.display().to_string()));
    }
    if !same_path(&before.entra.client_private_key, &key_path) {
        keys.push(("client_private_key", key_path.display().to_string()));
    }
    if keys.is_empty() {
        return Ok(());
    }
    config_file::write(path, &keys)?;
    let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    log.push(format!(
        "wrote [entra] {} into {}",
        names.join(", "),
        path.display()
    ));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn config() -> Config {
        let text = r#"
[server]
public_url = "https://pbx.example.com"
[entra]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "app"
client_secret = "s"
[pbx]
url = "https://pbx.internal:5001"
client_id = "pbxgate"
client_secret = "x"
service_extension = "999"
service_password = "p"
"#;
        Config::parse(text, "test.toml", []).unwrap()
    }

    #[test]
    fn consent_url_names_tenant_client_and_the_encoded_callback() {
        assert_eq!(
            consent_url(&config()),
            "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/adminconsent\
             ?client_id=app&redirect_uri=https%3A%2F%2Fpbx.example.com%2Fauth%2Fcallback"
        );
    }

    #[test]
    fn print_without_an_app_yet_shows_where_the_client_id_goes() {
        let out = print(&config(), false);
        assert!(
            out.contains("/adminconsent?client_id=<application-client-id>&redirect_uri="),
            "{out}"
        );
        assert!(
            out.contains("df021288-bdef-4463-88db-98f22de89214"),
            "{out}"
        );
    }
}
