//! Microsoft Graph's error body, the one shape every Graph failure shares
//! (`{"error": {"code": "...", "message": "..."}}`, Graph REST API "Error responses").
//! The client reads it; the simulated Graph writes it.

use serde::{Deserialize, Serialize};

/// The body of a Graph error response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// `error` of an [`ErrorBody`]: a machine code (e.g. `ErrorItemNotFound`,
/// `MailboxNotEnabledForRESTAPI`, `syncStateNotFound`) and a human message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// When and for which request; Graph sends it, and support asks for it.
    #[serde(
        rename = "innerError",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inner_error: Option<InnerError>,
}

/// `error.innerError`: the time (UTC, no zone suffix) and the request's ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerError {
    #[serde(default)]
    pub date: String,
    #[serde(rename = "request-id", default)]
    pub request_id: String,
    #[serde(rename = "client-request-id", default)]
    pub client_request_id: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                inner_error: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_round_trip_and_tolerate_extra_fields() {
        let text =
            r#"{"error":{"code":"ErrorItemNotFound","message":"gone","innerError":{"date":"x"}}}"#;
        let body: ErrorBody = serde_json::from_str(text).unwrap();
        assert_eq!(body.error.code, "ErrorItemNotFound");
        assert_eq!(body.error.message, "gone");
        assert_eq!(body.error.inner_error.as_ref().unwrap().date, "x");
        let back = serde_json::to_value(&body).unwrap();
        assert_eq!(back["error"]["code"], "ErrorItemNotFound");
    }
}
