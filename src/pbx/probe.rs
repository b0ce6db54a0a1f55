//! What `pbxgate doctor` asks 3CX: whether its web server answers (and why not: a refused
//! connection, an untrusted certificate, a timeout), whether the API client may read users,
//! the version and licence (`GET /xapi/v1/SystemStatus`, in the XAPI description), and who an
//! impersonated token belongs to (`GET /xapi/v1/MyUser`).

use serde::Deserialize;

use super::{Caller, PbxClient, PbxError};

/// How the web server answered `GET /`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// It answered, with this status.
    Answered(u16),
    /// The TLS handshake failed: the certificate is not trusted or not for this name.
    Tls(String),
    /// Nobody listens there (connection refused, host unreachable, name not found).
    Refused(String),
    Timeout(String),
}

/// The fields of `Pbx.SystemStatus` doctor shows.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemStatus {
    #[serde(default)]
    pub version: Option<String>,
    /// The licence's product code (it names the edition).
    #[serde(default)]
    pub product_code: Option<String>,
    #[serde(default)]
    pub license_active: Option<bool>,
    #[serde(default)]
    pub expiration_date: Option<String>,
    #[serde(default)]
    pub maintenance_expires_at: Option<String>,
}

#[derive(Deserialize)]
struct Collection {
    value: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Me {
    #[serde(rename = "Number")]
    number: String,
}

impl PbxClient {
    /// `GET /` on the web server, with pbxgate's TLS settings for 3CX.
    pub async fn reach(&self) -> Reach {
        match self.http.get(self.url("/")).send().await {
            Ok(res) => Reach::Answered(res.status().as_u16()),
            Err(e) => {
                let chain = crate::tls::upstream_error_chain(&e);
                if is_tls(&e) {
                    Reach::Tls(chain)
                } else if e.is_timeout() {
                    Reach::Timeout(chain)
                } else {
                    Reach::Refused(chain)
                }
            }
        }
    }

    /// Reads one user as the API client (`$top=1`): the token works and may read users.
    pub async fn read_one_user(&self) -> Result<usize, PbxError> {
        let page: Collection = self
            .get_json(
                Caller::ApiClient,
                "/xapi/v1/Users",
                &[("$select", "Id"), ("$top", "1")],
            )
            .await?;
        Ok(page.value.len())
    }

    /// The version and licence, when the API client may read them.
    pub async fn system_status(&self) -> Result<SystemStatus, PbxError> {
        self.get_json(
            Caller::ApiClient,
            "/xapi/v1/SystemStatus",
            &[(
                "$select",
                "Version,ProductCode,LicenseActive,ExpirationDate,MaintenanceExpiresAt",
            )],
        )
        .await
    }

    /// The number of the extension an impersonated token for `extension` acts as.
    pub async fn whoami(&self, extension: &str) -> Result<String, PbxError> {
        let me: Me = self
            .get_json(
                Caller::Extension(extension),
                "/xapi/v1/MyUser",
                &[("$select", "Number")],
            )
            .await?;
        Ok(me.number)
    }
}

/// True when a rustls error is in the chain (io::Error's `source` skips what it wraps).
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_tls(inner)
        {
            return true;
        }
        cur = err.source();
    }
    false
}
