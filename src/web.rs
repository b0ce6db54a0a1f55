//! The few pages pbxgate renders itself. Each failure page is short, names a correlation id
//! (the request id, also in the log line with the details) and never shows internals.

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use http::request::Parts;
use http::{HeaderValue, StatusCode};

pub use pbxgate_wire::html::escape;

use crate::metrics::RouteClass;

/// The request id (accepted from `X-Request-Id` or generated), put on the request by the
/// observing layer; the correlation id on pages.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The request's id, where the observing layer recorded one.
pub fn correlation(parts: &Parts) -> Option<String> {
    parts.extensions.get::<RequestId>().map(|r| r.0.clone())
}

/// A short page with the request's correlation id, counted under `class`.
pub fn page(
    id: Option<&str>,
    class: RouteClass,
    status: StatusCode,
    title: &'static str,
    message: &str,
) -> Response {
    classed(
        class,
        Page::new(status, title, message).with_correlation_id(id),
    )
}

/// Marks an answer with its route class, which the observing layer counts it under.
pub fn classed(class: RouteClass, res: impl IntoResponse) -> Response {
    let mut res = res.into_response();
    res.extensions_mut().insert(class);
    res
}

/// A short HTML page with a title, one sentence and a correlation id.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    pub correlation_id: Option<String>,
    /// A link shown under the message: (href, text). Only local paths are ever passed.
    pub link: Option<(String, String)>,
    /// A button that posts an empty form: (action, label). Only local paths are ever passed.
    pub form: Option<(String, String)>,
}

impl Page {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
            correlation_id: None,
            link: None,
            form: None,
        }
    }

    pub fn with_form(mut self, action: &str, label: &str) -> Self {
        self.form = Some((action.to_string(), label.to_string()));
        self
    }

    pub fn with_link(mut self, href: &str, text: &str) -> Self {
        self.link = Some((href.to_string(), text.to_string()));
        self
    }

    pub fn with_correlation_id(mut self, id: Option<&str>) -> Self {
        self.correlation_id = id.map(str::to_string);
        self
    }

    pub fn render(&self) -> String {
        let reference = self
            .correlation_id
            .as_deref()
            .map(|id| {
                format!(
                    "<p class=\"ref\">If you contact your IT department, give them this reference: \
                     <code>{}</code></p>",
                    escape(id)
                )
            })
            .unwrap_or_default();
        let link = self
            .link
            .as_ref()
            .map(|(href, text)| format!("<p><a href=\"{}\">{}</a></p>", escape(href), escape(text)))
            .unwrap_or_default();
        let form = self
            .form
            .as_ref()
            .map(|(action, label)| {
                format!(
                    "<form method=\"post\" action=\"{}\"><button type=\"submit\">{}</button></form>",
                    escape(action),
                    escape(label)
                )
            })
            .unwrap_or_default();
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:36rem;\
             margin:4rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}\
             .ref{{color:#555;font-size:.9rem}}</style></head>\
             <body><h1>{title}</h1><p>{message}</p>{form}{link}{reference}</body></html>\n",
            title = escape(self.title),
            message = escape(&self.message),
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.render()).into_response();
        let h = res.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        security_headers(h);
        res
    }
}

/// The content security policy of pbxgate's pages: nothing loaded but inline style, never
/// framed, forms post only to pbxgate (`form-action` does not fall back to `default-src`).
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'";

/// [`CSP`] for a page whose form's answer redirects on to `also` (an origin): browsers check
/// `form-action` on every redirect after a form is sent.
pub fn csp_with_form_action(also: Option<&str>) -> String {
    match also {
        Some(origin) => format!("{CSP} {origin}"),
        None => CSP.to_string(),
    }
}

/// Headers for everything pbxgate answers itself: nothing cached, nothing embedded or leaked.
pub fn security_headers(h: &mut http::HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_and_names_the_reference() {
        let html = Page::new(
            StatusCode::BAD_GATEWAY,
            "Phone system unreachable",
            "<b>x</b>",
        )
        .with_correlation_id(Some("abc123"))
        .render();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(html.contains("<code>abc123</code>"));
    }
}
