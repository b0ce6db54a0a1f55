//! The console's one layout (header, navigation, notice, main) and how its pages are
//! answered: HTML rendered with maud (checked at compile time, escaped by default), the
//! stylesheet served from `/admin/admin.css` so the policy allows no inline style or script.

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use http::{HeaderValue, StatusCode};
use maud::{DOCTYPE, Markup, html};

use super::i18n::Lang;
use crate::clock::UnixTime;
use crate::metrics::RouteClass;
use crate::web;

/// The console's policy: only its own stylesheet, no script at all, never framed, forms
/// post only to pbxgate.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

pub const CSS: &str = include_str!("admin.css");

/// The console's sections, in navigation order: (path, title).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Sync,
    Directory,
    Sessions,
    Audit,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Overview,
        Section::Sync,
        Section::Directory,
        Section::Sessions,
        Section::Audit,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Section::Overview => "/admin",
            Section::Sync => "/admin/sync",
            Section::Directory => "/admin/directory",
            Section::Sessions => "/admin/sessions",
            Section::Audit => "/admin/audit",
        }
    }

    pub fn title(self, lang: Lang) -> &'static str {
        let t = lang.t();
        match self {
            Section::Overview => t.overview,
            Section::Sync => t.sync,
            Section::Directory => t.directory,
            Section::Sessions => t.sessions,
            Section::Audit => t.audit,
        }
    }
}

/// What every page shows around its content.
pub struct Frame<'a> {
    pub lang: Lang,
    pub section: Section,
    pub admin_upn: &'a str,
    /// A message on top (the outcome of the last action).
    pub notice: Option<String>,
}

impl Frame<'_> {
    pub fn page(&self, content: Markup) -> Response {
        let t = self.lang.t();
        let title = self.section.title(self.lang);
        let body = html! {
            (DOCTYPE)
            html lang=(self.lang.code()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · " (t.console) }
                    link rel="stylesheet" href="/admin/admin.css";
                }
                body {
                    header {
                        span.brand { (t.console) }
                        span.who { (t.signed_in_as) " " (self.admin_upn) }
                    }
                    nav {
                        @for s in Section::ALL {
                            a href=(s.path()) class=[(s == self.section).then_some("current")] {
                                (s.title(self.lang))
                            }
                        }
                    }
                    main {
                        h1 { (title) }
                        @if let Some(n) = &self.notice { p.notice role="status" { (n) } }
                        (content)
                    }
                }
            }
        };
        respond(StatusCode::OK, body.into_string())
    }
}

/// A short page in the admin's language without the console's navigation (refusals), with
/// the correlation id that is also in the log line.
pub fn short_page(
    lang: Lang,
    status: StatusCode,
    title: &str,
    message: &str,
    reference: Option<&str>,
) -> Response {
    let t = lang.t();
    let body = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (t.console) }
                link rel="stylesheet" href="/admin/admin.css";
            }
            body { main {
                h1 { (title) }
                p { (message) }
                @if let Some(id) = reference { p.muted { (t.reference) ": " code { (id) } } }
            } }
        }
    };
    respond(status, body.into_string())
}

/// An HTML answer with the console's headers.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    console_headers(h);
    web::classed(RouteClass::Ops, res)
}

/// pbxgate's page headers, with the console's policy, and a referrer policy that lets
/// the forms' `POST`s carry their `Origin` (the same-origin check reads it).
pub fn console_headers(h: &mut http::HeaderMap) {
    web::security_headers(h);
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// `GET /admin/admin.css`.
pub async fn stylesheet() -> Response {
    let mut res = CSS.into_response();
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    console_headers(h);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    web::classed(RouteClass::Ops, res)
}

/// A hidden field with the session's CSRF token, for every form.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A form that posts to `action` with the CSRF token and `fields` (name, value) hidden.
pub fn button_form(action: &str, token: &str, fields: &[(&str, &str)], label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(token))
            @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
            button type="submit" { (label) }
        }
    }
}

/// A Unix time as UTC, to the second.
pub fn when(t: UnixTime) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// A duration in seconds, short: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn took(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(when(1_800_000_000), "2027-01-15 08:00:00 UTC");
        assert_eq!(took(42), "42 s");
        assert_eq!(took(185), "3 min 5 s");
        assert_eq!(took(7800), "2 h 10 min");
        assert_eq!(took(-3), "0 s");
    }
}
