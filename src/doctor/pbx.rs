//! The 3CX lines: the web server answers (and its certificate is trusted), the API client
//! gets a token and may read users, the version and licence, the session mode's credential,
//! and with `--as` a real impersonation for one extension.

use crate::config::{Config, ImpersonationCredential, SessionMode};
use crate::pbx::{PbxClient, PbxError, Reach};

use super::{Area, Check, Status};

const AREA: Area = Area::Pbx;

pub(super) async fn check(
    config: &Config,
    pbx: &PbxClient,
    as_extension: Option<&str>,
    session_check: bool,
) -> Vec<Check> {
    let mut checks = reach(config, pbx).await;
    if checks.iter().any(|c| c.status == Status::Fail) {
        let why = "3CX cannot be reached (see above)";
        checks.push(Check::skip(
            AREA,
            "pbx.api",
            "API client may read users",
            why,
        ));
        return checks;
    }
    let api = api(pbx).await;
    let api_ok = api.status == Status::Pass;
    checks.push(api);
    if api_ok {
        checks.push(version(pbx).await);
    }
    if session_check {
        checks.push(session(config, pbx, as_extension.is_some()).await);
    }
    if let Some(ext) = as_extension {
        checks.push(probe(config, pbx, ext).await);
    }
    checks
}

/// `pbx.reachable` and, for https, `pbx.tls`.
async fn reach(config: &Config, pbx: &PbxClient) -> Vec<Check> {
    const TITLE: &str = "3CX web server answers";
    const TLS: &str = "3CX certificate trusted";
    let url = config.pbx.url.as_str();
    let https = config.pbx.url.scheme() == "https";
    match pbx.reach().await {
        Reach::Answered(status) => {
            let mut v = vec![Check::pass(
                AREA,
                "pbx.reachable",
                TITLE,
                format!("{url} answered {status}"),
            )];
            if https {
                v.push(Check::pass(
                    AREA,
                    "pbx.tls",
                    TLS,
                    "the certificate is valid for the name",
                ));
            }
            v
        }
        Reach::Tls(e) => {
            vec![
            Check::pass(AREA, "pbx.reachable", TITLE, format!("{url} accepts connections")),
            Check::fail(AREA, "pbx.tls", TLS, e).fix(
                "set [pbx] ca_file to the CA that issued 3CX's certificate, or tls_server_name to \
                 the name it is issued for",
            ),
        ]
        }
        Reach::Refused(e) | Reach::Timeout(e) => vec![
            Check::fail(AREA, "pbx.reachable", TITLE, e)
                .fix("check [pbx] url (host and port of the 3CX web server) and that 3CX runs"),
        ],
    }
}

/// `pbx.api`: a token for the API client, and one user read with it.
async fn api(pbx: &PbxClient) -> Check {
    const TITLE: &str = "API client may read users";
    match pbx.read_one_user().await {
        Ok(_) => Check::pass(AREA, "pbx.api", TITLE, "the API client got a token and read a user"),
        Err(e @ PbxError::Credentials(_)) => Check::fail(AREA, "pbx.api", TITLE, e.to_string()).fix(
            "check [pbx] client_id and client_secret against 3CX Admin Console → Integrations → API",
        ),
        Err(e @ PbxError::Api { status: 401 | 403, .. }) => Check::fail(AREA, "pbx.api", TITLE, e.to_string())
            .fix("give the API client the System Owner role with access to all extensions (3CX Admin Console → Integrations → API)"),
        Err(e) => Check::fail(AREA, "pbx.api", TITLE, e.to_string()),
    }
}

/// `pbx.version`: version and licence from `SystemStatus`, when readable.
async fn version(pbx: &PbxClient) -> Check {
    const TITLE: &str = "3CX version and licence";
    let s = match pbx.system_status().await {
        Ok(s) => s,
        Err(e) => return Check::skip(AREA, "pbx.version", TITLE, format!("not readable: {e}")),
    };
    let mut detail = format!(
        "3CX {}, licence {}",
        s.version.as_deref().unwrap_or("(version unknown)"),
        s.product_code.as_deref().unwrap_or("(edition unknown)")
    );
    if let Some(m) = &s.maintenance_expires_at {
        detail.push_str(&format!(", maintenance until {}", m.get(..10).unwrap_or(m)));
    }
    match s.license_active {
        Some(false) => Check::warn(
            AREA,
            "pbx.version",
            TITLE,
            format!("{detail}: the licence is not active"),
        )
        .fix("activate the 3CX licence; the Configuration API needs an Enterprise licence"),
        _ => Check::pass(AREA, "pbx.version", TITLE, detail),
    }
}

/// `pbx.session`: what opens the users' 3CX sessions works.
async fn session(config: &Config, pbx: &PbxClient, probing: bool) -> Check {
    const TITLE: &str = "3CX session credential";
    let p = &config.pbx;
    match (p.session_mode, p.impersonation_credential) {
        (SessionMode::Impersonation, ImpersonationCredential::ServiceExtension) => {
            match pbx.check_service_sign_in().await {
                Ok(Some(ext)) => Check::pass(
                    AREA,
                    "pbx.session",
                    TITLE,
                    format!("the service extension {ext} signed in"),
                ),
                Ok(None) => Check::fail(
                    AREA,
                    "pbx.session",
                    TITLE,
                    "no service extension is configured",
                )
                .fix("set [pbx] service_extension and service_password"),
                Err(e) => Check::fail(AREA, "pbx.session", TITLE, e.to_string())
                    .fix("see README, \"The service extension\""),
            }
        }
        (SessionMode::Impersonation, ImpersonationCredential::ApiClient) => Check::skip(
            AREA,
            "pbx.session",
            TITLE,
            if probing {
                "impersonation by the API client (unverified variant): see pbx.probe"
            } else {
                "impersonation by the API client (unverified variant) is tried only with `pbxgate doctor --as EXTENSION`"
            },
        ),
        (SessionMode::ManagedPassword, _) => match &p.password_key {
            Some(_) => Check::pass(
                AREA,
                "pbx.session",
                TITLE,
                "managed passwords: the password key is set and the API client may write users",
            ),
            None => Check::fail(
                AREA,
                "pbx.session",
                TITLE,
                "managed passwords need [pbx] password_key",
            )
            .fix("set [pbx] password_key (see README)"),
        },
    }
}

/// `pbx.probe` (`--as EXT`): a real impersonation for `ext`, checked with `MyUser`; the
/// token is forgotten afterwards (3CX lets it run out; nothing else is created). In
/// managed-password mode the extension is looked up only: a sign-in would set its password.
async fn probe(config: &Config, pbx: &PbxClient, ext: &str) -> Check {
    let title = format!("Sign-in as extension {ext}");
    if config.pbx.session_mode == SessionMode::ManagedPassword {
        return match pbx.user_by_number(ext).await {
            Ok(Some(u)) if u.enabled != Some(false) => Check::pass(
                AREA,
                "pbx.probe",
                &title,
                "the extension exists and is enabled (managed passwords: no sign-in is tried, it would change the password)",
            ),
            Ok(Some(_)) => Check::fail(
                AREA,
                "pbx.probe",
                &title,
                format!("extension {ext} is disabled in 3CX"),
            ),
            Ok(None) => Check::fail(
                AREA,
                "pbx.probe",
                &title,
                format!("3CX has no extension {ext}"),
            ),
            Err(e) => Check::fail(AREA, "pbx.probe", &title, e.to_string()),
        };
    }
    let result = pbx.whoami(ext).await;
    pbx.forget_impersonation(ext);
    match result {
        Ok(n) if n == ext => Check::pass(
            AREA,
            "pbx.probe",
            &title,
            format!("impersonated extension {ext}; 3CX confirmed it"),
        ),
        Ok(n) => Check::fail(
            AREA,
            "pbx.probe",
            &title,
            format!("3CX answered as extension {n}, not {ext}"),
        ),
        Err(e) => Check::fail(AREA, "pbx.probe", &title, e.to_string()),
    }
}
