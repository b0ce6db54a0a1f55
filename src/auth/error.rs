//! Why a sign-in step failed. Each variant knows the page the user sees (short, with the
//! correlation id) and the line the log gets (the details), so that the handlers read as a
//! sequence of `?` steps.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::directory::{DirectoryError, Refusal};
use crate::graph::GraphError;
use crate::ids::RandomError;
use crate::metrics::RouteClass;
use crate::oidc::OidcError;
use crate::pbx::PbxError;
use crate::session::SessionError;
use crate::store::StoreError;
use crate::web;

use super::callback::GroupDenial;
use crate::directory::PasswordError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("sign-in rate limit reached")]
    RateLimited,
    #[error("malformed sign-in link")]
    MalformedLogin,
    #[error("refused return_to {0:?}")]
    ReturnTo(Option<String>),
    #[error("cannot start sign-in: {0}")]
    Start(#[source] StartError),
    #[error("malformed callback")]
    MalformedCallback,
    #[error("Entra returned an error: {error} ({description:?})")]
    Entra {
        error: String,
        description: Option<String>,
    },
    #[error("incomplete callback (no code or state)")]
    IncompleteCallback,
    #[error("login attempt lookup failed: {0}")]
    AttemptLookup(#[source] StoreError),
    #[error(
        "sign-in state refused (unknown, reused, expired or from another browser): known={known} same_browser={same_browser}"
    )]
    Attempt { known: bool, same_browser: bool },
    #[error("code exchange failed: {0}")]
    CodeExchange(#[source] OidcError),
    #[error("Entra ID is unavailable during the sign-in: {0}")]
    EntraUnavailable(#[source] OidcError),
    #[error("ID token refused: {0}")]
    IdToken(#[source] OidcError),
    #[error("group check: {0}")]
    Groups(#[from] GroupDenial),
    #[error("no extension for user {upn} (oid {oid})")]
    NotAssigned { upn: String, oid: String },
    #[error("guest {upn} (oid {oid}) refused: [sync.users] include_guests is false")]
    Guest { upn: String, oid: String },
    #[error("cannot tell whether {upn} (oid {oid}) is a guest: Graph: {source}")]
    GuestCheck {
        upn: String,
        oid: String,
        #[source]
        source: GraphError,
    },
    #[error("user {upn} refused: the user sync marked them removed (extension {extension})")]
    Removed { upn: String, extension: String },
    #[error(
        "user {upn} refused: extension {extension} is linked to another Entra object id ({other_object_id})"
    )]
    LinkedToAnother {
        upn: String,
        extension: String,
        other_object_id: String,
    },
    #[error("user {upn} refused: extension {extension} is disabled in 3CX")]
    ExtensionDisabled { upn: String, extension: String },
    #[error("directory lookup failed: {0}")]
    Directory(#[from] DirectoryError),
    #[error("3CX session refused for extension {extension}: {source}")]
    Pbx {
        extension: String,
        source: PbxSessionError,
    },
    #[error("3CX is unavailable: no session for extension {extension}: {source}")]
    PbxUnavailable {
        extension: String,
        source: PbxSessionError,
    },
    #[error("session create failed: {0}")]
    Session(#[from] SessionError),
}

impl AuthError {
    /// A failed code exchange or ID-token check: Entra's outage (a page that says to try
    /// again) or, through `refusal`, a refusal of this sign-in.
    pub fn from_oidc(e: OidcError, refusal: fn(OidcError) -> Self) -> Self {
        if e.is_outage() {
            Self::EntraUnavailable(e)
        } else {
            refusal(e)
        }
    }

    /// 3CX did not open the session of `extension`: down, or refusing it.
    pub fn from_pbx(extension: &str, source: PbxSessionError) -> Self {
        let extension = extension.to_string();
        if source.is_outage() {
            Self::PbxUnavailable { extension, source }
        } else {
            Self::Pbx { extension, source }
        }
    }

    /// The sign-in error for a directory refusal of `upn`.
    pub fn refused(upn: &str, refusal: Refusal) -> Self {
        let upn = upn.to_string();
        match refusal {
            Refusal::Removed { extension } => Self::Removed { upn, extension },
            Refusal::LinkedToAnother {
                extension,
                other_object_id,
            } => Self::LinkedToAnother {
                upn,
                extension,
                other_object_id,
            },
            Refusal::ExtensionDisabled { extension } => Self::ExtensionDisabled { upn, extension },
        }
    }
}

/// Why a sign-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
}

/// Why 3CX did not open a session for the user's extension.
#[derive(Debug, thiserror::Error)]
pub enum PbxSessionError {
    #[error(transparent)]
    Pbx(#[from] PbxError),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl PbxSessionError {
    /// 3CX (or the way there) failing, as opposed to refusing this extension. A 5xx to the
    /// webclient sign-in is 3CX's failure, whatever status the call reports it under.
    fn is_outage(&self) -> bool {
        let pbx = match self {
            Self::Pbx(e) | Self::Password(PasswordError::Pbx(e)) => e,
            Self::Password(_) => return false,
        };
        pbx.is_outage() || matches!(pbx, PbxError::SignInRefused { status, .. } if *status >= 500)
    }
}

impl AuthError {
    /// What the user is shown: status, title and one sentence.
    fn page(&self) -> (StatusCode, &'static str, String) {
        use AuthError::*;
        let (status, title, message) = match self {
            RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-in attempts",
                "Please wait a minute and try again.",
            ),
            MalformedLogin => (
                StatusCode::BAD_REQUEST,
                "Bad sign-in link",
                "The sign-in link is malformed.",
            ),
            ReturnTo(_) => (
                StatusCode::BAD_REQUEST,
                "Bad sign-in link",
                "The sign-in link points outside this site.",
            ),
            // Before Entra is asked: the attempt could not be stored.
            Start(StartError::Store(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is temporarily unavailable",
                "pbxgate cannot record the sign-in right now. Please try again in a minute.",
            ),
            Start(_) | EntraUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Microsoft sign-in is unavailable",
                "pbxgate cannot reach Microsoft Entra ID right now. Please try again in a minute.",
            ),
            MalformedCallback => (
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The answer from Microsoft is malformed.",
            ),
            Entra { .. } => (
                StatusCode::FORBIDDEN,
                "Sign-in did not complete",
                "Microsoft Entra ID did not sign you in. Close this tab and try again.",
            ),
            IncompleteCallback => (
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The answer from Microsoft is incomplete.",
            ),
            AttemptLookup(_) | Session(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in failed",
                "Please try again in a minute.",
            ),
            Attempt { .. } => (
                StatusCode::BAD_REQUEST,
                "This sign-in link has expired",
                "Sign-in links work once, for ten minutes, in the browser that started them. Please start again.",
            ),
            CodeExchange(_) => (
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "Microsoft Entra ID did not confirm the sign-in. Please try again.",
            ),
            IdToken(_) => (
                StatusCode::FORBIDDEN,
                "Sign-in failed",
                "The sign-in could not be verified. Please try again.",
            ),
            Groups(denial) => (StatusCode::FORBIDDEN, "Access denied", denial.message()),
            NotAssigned { upn, .. } => {
                return (
                    StatusCode::FORBIDDEN,
                    "No extension is assigned to you",
                    format!(
                        "{upn} has no extension on this phone system. Ask your IT department to assign one."
                    ),
                );
            }
            Guest { upn, .. } => {
                return (
                    StatusCode::FORBIDDEN,
                    "Guest accounts cannot use the web client",
                    format!(
                        "{upn} is a guest account in this organisation's Microsoft Entra ID. The phone system's web client is for members. Ask your IT department if you need access."
                    ),
                );
            }
            GuestCheck { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Your account cannot be checked right now",
                "pbxgate could not check your account with Microsoft Entra ID. Please try again in a minute.",
            ),
            Removed { upn, .. } => {
                return (
                    StatusCode::FORBIDDEN,
                    "Your access has been removed",
                    format!(
                        "{upn} was disabled or removed in Microsoft Entra ID, so its access to the phone system has ended. If your account was restored just now, try again after the next directory sync, or ask your IT department."
                    ),
                );
            }
            LinkedToAnother { upn, extension, .. } => {
                return (
                    StatusCode::FORBIDDEN,
                    "This extension belongs to another account",
                    format!(
                        "Extension {extension}, which matches {upn}, is still assigned to another (perhaps former) account. Ask your IT department to reassign it."
                    ),
                );
            }
            ExtensionDisabled { extension, .. } => {
                return (
                    StatusCode::FORBIDDEN,
                    "Your extension is disabled",
                    format!(
                        "Extension {extension} is disabled on the phone system. Ask your IT department."
                    ),
                );
            }
            PbxUnavailable { .. } => (
                StatusCode::BAD_GATEWAY,
                "The phone system is not reachable",
                "pbxgate could not open your session on the phone system. Nothing was signed in; please try again in a minute.",
            ),
            Directory(_) => (
                StatusCode::BAD_GATEWAY,
                "The phone system is not reachable",
                "pbxgate could not look up your extension. Please try again in a minute.",
            ),
            Pbx { .. } => (
                StatusCode::BAD_GATEWAY,
                "The phone system refused the sign-in",
                "3CX did not open a session for your extension. Please try again, or ask your IT department.",
            ),
        };
        (status, title, message.to_string())
    }

    /// The log line: routine refusals at `info`/`warn`, failures of pbxgate's own parts at
    /// `error`.
    fn log(&self) {
        use AuthError::*;
        let error = crate::errors::error_chain(self);
        match self {
            NotAssigned { .. } => tracing::info!(%error, "sign-in refused"),
            Start(_)
            | AttemptLookup(_)
            | Directory(_)
            | Pbx { .. }
            | PbxUnavailable { .. }
            | EntraUnavailable(_)
            | Session(_)
            | GuestCheck { .. } => {
                tracing::error!(%error, "sign-in failed")
            }
            Groups(GroupDenial::Unknown(_)) => tracing::error!(%error, "sign-in failed"),
            _ => tracing::warn!(%error, "sign-in refused"),
        }
    }

    /// The answer for a request with correlation id `id`.
    pub fn respond(self, id: Option<&str>) -> Response {
        self.log();
        let (status, title, message) = self.page();
        web::page(id, RouteClass::Auth, status, title, &message).into_response()
    }
}
