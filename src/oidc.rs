//! Entra ID as an OpenID provider: discovery, the JWKS cache, the code exchange with a client
//! secret or a certificate assertion, app-only tokens, and ID-token validation (DESIGN §3
//! step 3).
//!
//! Layer: an outside party's client. Both the sign-in (`auth`) and the Graph client (which
//! takes its app-only tokens from here) use it; it uses only `config`, `clock` and `tls`.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::clock::{Clock, UnixTime};
use crate::config::EntraConfig;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const SKEW: i64 = 300;
/// An unknown `kid` refetches the JWKS unless a fetch was tried this recently: Entra
/// publishes a key before it signs with it, so one fetch finds a rotated key at once, while a
/// stream of tokens under invented kids costs Entra at most one request per 30 s.
const JWKS_REFETCH_MIN: i64 = 30;
/// Discovery and JWKS are refreshed at least this often.
const METADATA_TTL: i64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("Entra ID is unreachable: {0}")]
    Unreachable(String),
    #[error("Entra ID's metadata is unusable: {0}")]
    Metadata(String),
    #[error("Entra ID refused the code: {error}: {description}")]
    TokenEndpoint { error: String, description: String },
    #[error("cannot read the client certificate or key: {0}")]
    Credential(String),
    #[error("ID token rejected: {0}")]
    Token(#[from] TokenError),
}

impl OidcError {
    /// Entra (or the way there) failing, as opposed to refusing this sign-in: the user is
    /// told to try again later, not that the sign-in was wrong.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Metadata(_))
    }
}

/// Why an ID token is refused; one variant per rule, so logs and tests can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not allowed (RS256 only)")]
    Algorithm(String),
    #[error("no key id (kid) in the header")]
    NoKeyId,
    #[error("no signing key with kid {0}")]
    UnknownKey(String),
    #[error("bad signature")]
    Signature,
    #[error("issuer {0:?} is not the configured tenant's")]
    Issuer(String),
    #[error("audience is not this client")]
    Audience,
    #[error("audience names other parties besides this client")]
    ExtraAudience,
    #[error("authorized party (azp) {0:?} is not this client")]
    AuthorizedParty(String),
    #[error("tenant {0:?} is not the configured tenant")]
    Tenant(String),
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("nonce does not match the sign-in attempt")]
    Nonce,
    #[error("no object id (oid) claim")]
    NoObjectId,
}

/// The provider's discovery document (the fields pbxgate uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// The `aud` claim: one audience, or an array of them (OpenID Connect Core §2).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn as_slice(&self) -> &[String] {
        match self {
            Self::One(a) => std::slice::from_ref(a),
            Self::Many(v) => v,
        }
    }
}

/// The claims of an accepted ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub aud: Audience,
    /// The authorized party; when present it must be this client.
    #[serde(default)]
    pub azp: Option<String>,
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub nonce: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    pub login_hint: Option<String>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Group overage: `{"groups": "src1"}` when the user is in more groups than fit.
    #[serde(default, rename = "_claim_names")]
    pub claim_names: Option<HashMap<String, String>>,
    #[serde(default)]
    pub hasgroups: Option<bool>,
}

impl IdClaims {
    /// The user's UPN for display and first-login matching (never a key).
    pub fn username(&self) -> Option<&str> {
        self.upn
            .as_deref()
            .or(self.preferred_username.as_deref())
            .or(self.email.as_deref())
    }

    /// True when the token says the group list did not fit into it.
    pub fn groups_overage(&self) -> bool {
        self.hasgroups == Some(true)
            || self
                .claim_names
                .as_ref()
                .is_some_and(|c| c.contains_key("groups"))
    }
}

/// How pbxgate proves it is the registered app.
pub enum Credential {
    Secret(SecretString),
    /// A certificate uploaded to the app registration: assertions are signed with its key and
    /// carry both thumbprints (`x5t` SHA-1, `x5t#S256` SHA-256) of the DER certificate.
    Certificate {
        key: EncodingKey,
        x5t: String,
        x5t_s256: String,
    },
}

impl Credential {
    pub fn from_config(c: &EntraConfig) -> Result<Self, OidcError> {
        match (&c.client_certificate, &c.client_private_key) {
            (Some(cert), Some(key)) => {
                let der = crate::tls::load_certs(cert)
                    .map_err(|e| OidcError::Credential(e.to_string()))?
                    .remove(0);
                let pem = std::fs::read(key)
                    .map_err(|e| OidcError::Credential(format!("{}: {e}", key.display())))?;
                let key = EncodingKey::from_rsa_pem(&pem)
                    .map_err(|e| OidcError::Credential(format!("{}: {e}", key.display())))?;
                Ok(Self::Certificate {
                    key,
                    x5t: thumbprint(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der),
                    x5t_s256: thumbprint(&ring::digest::SHA256, &der),
                })
            }
            _ => Ok(Self::Secret(c.client_secret.clone().ok_or_else(|| {
                OidcError::Credential("no client secret".into())
            })?)),
        }
    }
}

fn thumbprint(alg: &'static ring::digest::Algorithm, der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(alg, der))
}

/// The last good key set, and how the last fetch went.
#[derive(Default)]
struct Jwks {
    keys: HashMap<String, DecodingKey>,
    /// When `keys` was fetched.
    fetched_at: Option<UnixTime>,
    /// When a fetch was last tried, successful or not (the 30 s rule counts both).
    tried_at: Option<UnixTime>,
    /// Why the last try failed; cleared by a good fetch.
    failure: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct AccessTokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct TokenErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Entra ID for one tenant and one app registration.
pub struct Provider {
    http: reqwest::Client,
    discovery_url: String,
    issuer: String,
    tenant_id: String,
    client_id: String,
    credential: Credential,
    clock: Arc<dyn Clock>,
    metadata: RwLock<Option<(Arc<Metadata>, UnixTime)>>,
    jwks: RwLock<Jwks>,
    /// Serialise refetches, so a burst of sign-ins or unknown kids costs one request each.
    /// Two locks: a JWKS refetch may need fresh metadata first.
    metadata_fetch: Mutex<()>,
    jwks_fetch: Mutex<()>,
}

impl Provider {
    pub fn new(c: &EntraConfig, clock: Arc<dyn Clock>) -> Result<Self, OidcError> {
        crate::tls::provider();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pbxgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let authority = c.authority.as_str().trim_end_matches('/');
        let issuer = format!("{authority}/{}/v2.0", c.tenant_id);
        Ok(Self {
            http,
            discovery_url: format!("{issuer}/.well-known/openid-configuration"),
            issuer,
            tenant_id: c.tenant_id.clone(),
            client_id: c.client_id.clone(),
            credential: Credential::from_config(c)?,
            clock,
            metadata: RwLock::new(None),
            jwks: RwLock::new(Jwks::default()),
            metadata_fetch: Mutex::new(()),
            jwks_fetch: Mutex::new(()),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The configured tenant's issuer, `{authority}/{tenant_id}/v2.0`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovery document, fetched on first use and daily; a stale copy is kept when
    /// Entra cannot be reached.
    pub async fn metadata(&self) -> Result<Arc<Metadata>, OidcError> {
        let now = self.clock.now();
        if let Some((m, at)) = self.metadata.read().await.as_ref()
            && now - at < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let _guard = self.metadata_fetch.lock().await;
        if let Some((m, at)) = self.metadata.read().await.as_ref()
            && now - at < METADATA_TTL
        {
            return Ok(m.clone());
        }
        match self.fetch_metadata().await {
            Ok(m) => {
                let m = Arc::new(m);
                *self.metadata.write().await = Some((m.clone(), now));
                Ok(m)
            }
            Err(e) => match self.metadata.read().await.as_ref() {
                Some((m, _)) => {
                    tracing::warn!(error = %e, "using cached Entra metadata");
                    Ok(m.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn fetch_metadata(&self) -> Result<Metadata, OidcError> {
        let m: Metadata = self.get_json(&self.discovery_url).await?;
        // The configured tenant's own document names its concrete issuer; anything else
        // (a `{tenantid}` template from `common`, another tenant) is a misconfiguration.
        if m.issuer != self.issuer {
            return Err(OidcError::Metadata(format!(
                "issuer {:?}, expected {:?}",
                m.issuer, self.issuer
            )));
        }
        Ok(m)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(crate::errors::error_chain(&e)))?;
        let status = res.status();
        if status.is_server_error() {
            return Err(OidcError::Unreachable(format!("{url}: {status}")));
        }
        if !status.is_success() {
            return Err(OidcError::Metadata(format!("{url}: {status}")));
        }
        res.json()
            .await
            .map_err(|e| OidcError::Metadata(format!("{url}: {e}")))
    }

    /// The usable signing keys of the JWKS, by kid. A set without one is an error, so that
    /// a broken answer never replaces the last good set.
    async fn fetch_jwks(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        let m = self.metadata().await?;
        let set: JwkSet = self.get_json(&m.jwks_uri).await?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA" && k.use_.as_deref().is_none_or(|u| u == "sig"))
            .filter_map(|k| {
                let key =
                    DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
                Some((k.kid?, key))
            })
            .collect();
        if keys.is_empty() {
            return Err(OidcError::Metadata(format!(
                "{}: no usable RS256 key",
                m.jwks_uri
            )));
        }
        Ok(keys)
    }

    /// The key for `kid` from a set fetched within the last day.
    async fn fresh_key(&self, kid: &str, now: UnixTime) -> Option<DecodingKey> {
        let jwks = self.jwks.read().await;
        let fresh = jwks.fetched_at.is_some_and(|t| now - t < METADATA_TTL);
        jwks.keys.get(kid).filter(|_| fresh).cloned()
    }

    /// The key for `kid`. The set is refetched when it is a day old or `kid` is unknown,
    /// unless a fetch was tried in the last 30 s; one fetch at a time, and requests that
    /// waited for it use its result (single flight). A failed fetch keeps the last good set;
    /// a `kid` that is not in it then is Entra's outage, not a forged token.
    async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        if let Some(k) = self.fresh_key(kid, self.clock.now()).await {
            return Ok(k);
        }
        let _flight = self.jwks_fetch.lock().await;
        let now = self.clock.now();
        if let Some(k) = self.fresh_key(kid, now).await {
            return Ok(k);
        }
        let tried = self.jwks.read().await.tried_at;
        if tried.is_none_or(|t| now - t >= JWKS_REFETCH_MIN) {
            self.refresh_jwks(now).await;
        }
        let jwks = self.jwks.read().await;
        if let Some(k) = jwks.keys.get(kid) {
            return Ok(k.clone());
        }
        Err(match &jwks.failure {
            Some(e) => OidcError::Unreachable(format!("signing keys: {e}")),
            None => TokenError::UnknownKey(kid.to_string()).into(),
        })
    }

    /// One JWKS fetch; on failure the last good set stays.
    async fn refresh_jwks(&self, now: UnixTime) {
        let fetched = self.fetch_jwks().await;
        let mut jwks = self.jwks.write().await;
        jwks.tried_at = Some(now);
        match fetched {
            Ok(keys) => {
                jwks.keys = keys;
                jwks.fetched_at = Some(now);
                jwks.failure = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the last key set");
                jwks.failure = Some(e.to_string());
            }
        }
    }

    /// The URL that sends the browser to Entra's sign-in.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
        login_hint: Option<&str>,
    ) -> Result<String, OidcError> {
        let m = self.metadata().await?;
        let mut url = url::Url::parse(&m.authorization_endpoint)
            .map_err(|e| OidcError::Metadata(format!("authorization_endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("response_mode", "query")
                .append_pair("scope", "openid profile email")
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(hint) = login_hint {
                q.append_pair("login_hint", hint);
            }
        }
        Ok(url.into())
    }

    /// Redeems an authorization code; returns the ID token.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, OidcError> {
        let m = self.metadata().await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("client_id", self.client_id.clone()),
            ("code", code.to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", verifier.to_string()),
            ("scope", "openid profile email".to_string()),
        ];
        self.authenticate(&m, &mut form)?;
        let text = self.post_token(&m, &form).await?;
        let body: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| OidcError::Metadata(format!("token response: {e}")))?;
        body.id_token.ok_or_else(|| OidcError::TokenEndpoint {
            error: "no_id_token".into(),
            description: "the token response has no id_token".into(),
        })
    }

    /// An app-only access token for `scope` (e.g. `https://graph.microsoft.com/.default`) by
    /// the client-credentials grant, from the token endpoint discovery names. Returns the
    /// token and its lifetime in seconds.
    pub async fn client_credentials(&self, scope: &str) -> Result<(SecretString, i64), OidcError> {
        let m = self.metadata().await?;
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", self.client_id.clone()),
            ("scope", scope.to_string()),
        ];
        self.authenticate(&m, &mut form)?;
        let text = self.post_token(&m, &form).await?;
        let body: AccessTokenResponse = serde_json::from_str(&text)
            .map_err(|e| OidcError::Metadata(format!("token response: {e}")))?;
        Ok((
            SecretString::from(body.access_token),
            body.expires_in.unwrap_or(3599),
        ))
    }

    /// POSTs to the token endpoint; Entra's error body becomes `OidcError::TokenEndpoint`.
    async fn post_token(
        &self,
        m: &Metadata,
        form: &[(&'static str, String)],
    ) -> Result<String, OidcError> {
        let res = self
            .http
            .post(&m.token_endpoint)
            .form(form)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(crate::errors::error_chain(&e)))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let body: TokenErrorBody = serde_json::from_str(&text).unwrap_or(TokenErrorBody {
                error: status.to_string(),
                error_description: text.chars().take(200).collect(),
            });
            if status.is_server_error() {
                return Err(OidcError::Unreachable(format!(
                    "the token endpoint answered {status}: {}: {}",
                    body.error, body.error_description
                )));
            }
            return Err(OidcError::TokenEndpoint {
                error: body.error,
                description: body.error_description,
            });
        }
        Ok(text)
    }

    /// Adds the client authentication to a token request.
    fn authenticate(
        &self,
        m: &Metadata,
        form: &mut Vec<(&'static str, String)>,
    ) -> Result<(), OidcError> {
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.expose_secret().to_string())),
            Credential::Certificate { key, x5t, x5t_s256 } => {
                let now = self.clock.now();
                let jti = crate::ids::hex(
                    &crate::ids::random::<16>()
                        .map_err(|e| OidcError::Credential(e.to_string()))?,
                );
                let claims = serde_json::json!({
                    "aud": m.token_endpoint, "iss": self.client_id, "sub": self.client_id,
                    "jti": jti, "nbf": now, "iat": now, "exp": now + 300,
                });
                let mut header = Header::new(Algorithm::RS256);
                header.x5t = Some(x5t.clone());
                header.x5t_s256 = Some(x5t_s256.clone());
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| OidcError::Credential(e.to_string()))?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
            }
        }
        Ok(())
    }

    /// Validates an ID token exactly as DESIGN §3 step 3 says; time comes from the clock.
    pub async fn validate(&self, token: &str, nonce: &str) -> Result<IdClaims, OidcError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)).into());
        }
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_exp = false; // checked below against the injected clock
        v.validate_nbf = false;
        v.validate_aud = true;
        v.set_audience(&[&self.client_id]);
        v.set_issuer(&[&self.issuer]);
        v.required_spec_claims.clear();
        v.required_spec_claims.insert("aud".into());
        v.required_spec_claims.insert("iss".into());
        let data = jsonwebtoken::decode::<IdClaims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => TokenError::Signature,
                K::InvalidIssuer => TokenError::Issuer(issuer_of(token)),
                K::InvalidAudience | K::MissingRequiredClaim(_) => TokenError::Audience,
                K::InvalidAlgorithm => TokenError::Algorithm(format!("{:?}", header.alg)),
                _ => TokenError::Malformed(e.to_string()),
            }
        })?;
        let claims = data.claims;
        self.check_claims(&claims, nonce)?;
        Ok(claims)
    }

    fn check_claims(&self, c: &IdClaims, nonce: &str) -> Result<(), TokenError> {
        self.check_audience(c)?;
        let now = self.clock.now();
        if c.tid.as_deref() != Some(self.tenant_id.as_str()) {
            return Err(TokenError::Tenant(c.tid.clone().unwrap_or_default()));
        }
        match c.exp {
            Some(exp) if now <= exp + SKEW => {}
            _ => return Err(TokenError::Expired),
        }
        if c.nbf.is_some_and(|nbf| now + SKEW < nbf) {
            return Err(TokenError::NotYetValid);
        }
        match c.iat {
            Some(iat) if iat <= now + SKEW => {}
            Some(_) => return Err(TokenError::IssuedInFuture),
            None => return Err(TokenError::Malformed("no iat".into())),
        }
        let matches = c
            .nonce
            .as_deref()
            .is_some_and(|n| crate::ids::secrets_equal(n, nonce));
        if !matches {
            return Err(TokenError::Nonce);
        }
        if c.oid.as_deref().is_none_or(str::is_empty) {
            return Err(TokenError::NoObjectId);
        }
        Ok(())
    }

    /// OpenID Connect Core §3.1.3.7: this client must be the only audience (the library
    /// checked it is one of them; Entra never issues a token for more), and `azp`, when
    /// present, must name it too. A token minted for several parties is not ours to accept.
    fn check_audience(&self, c: &IdClaims) -> Result<(), TokenError> {
        let auds = c.aud.as_slice();
        if !auds.contains(&self.client_id) {
            return Err(TokenError::Audience);
        }
        if auds.iter().any(|a| *a != self.client_id) {
            return Err(TokenError::ExtraAudience);
        }
        match c.azp.as_deref() {
            Some(azp) if azp != self.client_id => Err(TokenError::AuthorizedParty(azp.into())),
            _ => Ok(()),
        }
    }

    /// Entra's sign-out URL, or None when discovery names none.
    pub async fn end_session_url(
        &self,
        post_logout_redirect_uri: &str,
        logout_hint: Option<&str>,
    ) -> Option<String> {
        let m = self.metadata().await.ok()?;
        let mut url = url::Url::parse(m.end_session_endpoint.as_deref()?).ok()?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
            q.append_pair("client_id", &self.client_id);
            if let Some(h) = logout_hint {
                q.append_pair("logout_hint", h);
            }
        }
        Some(url.into())
    }
}

/// The `iss` claim of an unverified token, for the log line of a rejection.
fn issuer_of(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["iss"].as_str().map(str::to_string))
        .unwrap_or_default()
}
