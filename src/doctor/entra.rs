//! The Entra ID lines: discovery, the app's credential (a client-credentials token), when
//! that credential expires, and the clock against Entra's.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::expiry::{self, day};
use super::{Area, Check, Status};
use crate::clock::{Clock, UnixTime};
use crate::config::Config;
use crate::oidc::{OidcError, Provider};

const AREA: Area = Area::Entra;

/// The Entra lines, and the app-only Graph token when the credential works.
pub(super) struct Outcome {
    pub checks: Vec<Check>,
    pub token: Option<SecretString>,
}

pub(super) async fn check(
    config: &Config,
    clock: &Arc<dyn Clock>,
    http: &reqwest::Client,
) -> Outcome {
    let mut checks = Vec::new();
    let date = discovery(config, http, &mut checks).await;
    checks.push(skew_line(date, clock.now()));
    let token = credential(config, clock, &mut checks).await;
    checks.push(expiry_line(config, clock.now(), http, token.as_ref()).await);
    Outcome { checks, token }
}

/// `entra.discovery`; returns Entra's `Date` header for the skew line.
async fn discovery(
    config: &Config,
    http: &reqwest::Client,
    checks: &mut Vec<Check>,
) -> Option<UnixTime> {
    const TITLE: &str = "Entra ID discovery document";
    let e = &config.entra;
    let authority = e.authority.as_str().trim_end_matches('/');
    let issuer = format!("{authority}/{}/v2.0", e.tenant_id);
    let url = format!("{issuer}/.well-known/openid-configuration");
    let fix = format!(
        "check entra.authority and entra.tenant_id, and that this host reaches {authority} \
         (firewall, outbound proxy)"
    );
    let res = match http.get(&url).send().await {
        Ok(r) => r,
        Err(err) => {
            checks.push(
                Check::fail(
                    AREA,
                    "entra.discovery",
                    TITLE,
                    format!("{url}: {}", crate::errors::error_chain(&err)),
                )
                .fix(fix),
            );
            return None;
        }
    };
    let date = res
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(expiry::http_date);
    #[derive(Deserialize)]
    struct Doc {
        issuer: String,
    }
    let status = res.status();
    let line = match res.json::<Doc>().await {
        Ok(d) if status.is_success() && d.issuer == issuer => {
            Check::pass(AREA, "entra.discovery", TITLE, format!("issuer {issuer}"))
        }
        Ok(d) if status.is_success() => Check::fail(
            AREA,
            "entra.discovery",
            TITLE,
            format!("issuer {:?}, expected {issuer:?}", d.issuer),
        )
        .fix("entra.tenant_id must be the tenant's id (a GUID), not `common` or `organizations`"),
        _ => Check::fail(
            AREA,
            "entra.discovery",
            TITLE,
            format!("{url} answered {status}"),
        )
        .fix(fix),
    };
    checks.push(line);
    date
}

fn skew_line(date: Option<UnixTime>, now: UnixTime) -> Check {
    const TITLE: &str = "Clock agrees with Entra ID";
    let Some(date) = date else {
        return Check::skip(
            AREA,
            "entra.clock",
            TITLE,
            "Entra's time is unknown (no answer with a Date header)",
        );
    };
    let skew = now - date;
    let detail = format!("this machine is {skew:+} s off Entra ID's time");
    match expiry::skew(skew) {
        Status::Pass => Check::pass(AREA, "entra.clock", TITLE, detail),
        status => Check {
            status,
            ..Check::warn(AREA, "entra.clock", TITLE, detail)
        }
        .fix(format!(
            "synchronise this machine's clock (NTP, e.g. systemd-timesyncd); beyond {} s \
             sign-ins fail",
            expiry::SKEW_FAIL
        )),
    }
}

/// `entra.credential`: a client-credentials token for Graph; returns it.
async fn credential(
    config: &Config,
    clock: &Arc<dyn Clock>,
    checks: &mut Vec<Check>,
) -> Option<SecretString> {
    const TITLE: &str = "App credential accepted by Entra ID";
    let e = &config.entra;
    let kind = if e.client_certificate.is_some() {
        "certificate"
    } else {
        "client secret"
    };
    let provider = match Provider::new(e, clock.clone()) {
        Ok(p) => p,
        Err(err) => {
            checks.push(
                Check::fail(AREA, "entra.credential", TITLE, err.to_string())
                    .fix("check entra.client_certificate and entra.client_private_key (PEM files readable by pbxgate)"),
            );
            return None;
        }
    };
    let scope = format!("{}/.default", e.graph_url.as_str().trim_end_matches('/'));
    match provider.client_credentials(&scope).await {
        Ok((token, _)) => {
            checks.push(Check::pass(
                AREA,
                "entra.credential",
                TITLE,
                format!("the {kind} of app {} got an app-only token", e.client_id),
            ));
            Some(token)
        }
        Err(err) => {
            let fix = match &err {
                OidcError::TokenEndpoint { .. } if kind == "certificate" => format!(
                    "upload the certificate entra.client_certificate to app {} (App registrations → \
                     Certificates & secrets), or check entra.client_id",
                    e.client_id
                ),
                OidcError::TokenEndpoint { .. } => format!(
                    "create a new client secret for app {} (App registrations → Certificates & \
                     secrets) and set entra.client_secret; check entra.client_id",
                    e.client_id
                ),
                _ => "check that this host reaches Entra ID's token endpoint".to_string(),
            };
            checks.push(Check::fail(AREA, "entra.credential", TITLE, err.to_string()).fix(fix));
            None
        }
    }
}

/// `entra.expiry`: the certificate's notAfter, else `client_secret_expires`, else the
/// matching secret's `endDateTime` from Graph when the app may read its own registration.
async fn expiry_line(
    config: &Config,
    now: UnixTime,
    http: &reqwest::Client,
    token: Option<&SecretString>,
) -> Check {
    const TITLE: &str = "Credential not expiring";
    let e = &config.entra;
    let (what, expires_at) = if let Some(cert) = &e.client_certificate {
        let info = crate::tls::load_certs(cert)
            .ok()
            .and_then(|c| c.into_iter().next())
            .and_then(|der| crate::tls::cert_info(&der).ok());
        match info {
            Some(i) => ("the certificate", i.not_after),
            None => {
                return Check::fail(
                    AREA,
                    "entra.expiry",
                    TITLE,
                    format!("cannot read {}", cert.display()),
                )
                .fix("entra.client_certificate must be a PEM certificate");
            }
        }
    } else if let Some(d) = e.client_secret_expires {
        ("the client secret (entra.client_secret_expires)", d.unix())
    } else {
        match secret_end_from_graph(config, http, token).await {
            Some(t) => ("the client secret (from Graph)", t),
            None => {
                return Check::skip(
                    AREA,
                    "entra.expiry",
                    TITLE,
                    "the client secret's expiry is unknown (Graph does not show this app its registration)",
                )
                .fix("set [entra] client_secret_expires to the date Entra showed for the secret, so that doctor warns 30 days ahead");
            }
        }
    };
    let (status, days) = expiry::expiry(expires_at, now);
    let detail = format!("{what} expires on {} ({days} days)", day(expires_at));
    let line = Check {
        status,
        ..Check::pass(AREA, "entra.expiry", TITLE, detail)
    };
    match status {
        Status::Pass => line,
        _ => line.fix(format!(
            "create a new {} for app {} before then and put it into the config",
            if e.client_certificate.is_some() {
                "certificate"
            } else {
                "client secret"
            },
            e.client_id
        )),
    }
}

/// `GET /applications(appId='…')?$select=passwordCredentials`: the end of the secret whose
/// `hint` (its first three characters) matches ours. Needs Application.Read.All, which
/// pbxgate does not ask for; `None` when unreadable.
async fn secret_end_from_graph(
    config: &Config,
    http: &reqwest::Client,
    token: Option<&SecretString>,
) -> Option<UnixTime> {
    let secret = config.entra.client_secret.as_ref()?;
    let hint: String = secret.expose_secret().chars().take(3).collect();
    let url = format!(
        "{}/v1.0/applications(appId='{}')?$select=passwordCredentials",
        config.entra.graph_url.as_str().trim_end_matches('/'),
        config.entra.client_id
    );
    let res = http
        .get(url)
        .bearer_auth(token?.expose_secret())
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct App {
        #[serde(default)]
        password_credentials: Vec<Password>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Password {
        #[serde(default)]
        hint: Option<String>,
        #[serde(default)]
        end_date_time: Option<String>,
    }
    let app: App = res.json().await.ok()?;
    app.password_credentials
        .iter()
        .filter(|p| p.hint.as_deref() == Some(hint.as_str()))
        .filter_map(|p| p.end_date_time.as_deref()?.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .max()
}
