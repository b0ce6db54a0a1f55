//! `Cookie` request headers as name/value pairs (RFC 6265 §5.4: `name=value; name=value`).

use http::HeaderMap;
use http::header::COOKIE;

/// Iterates the `name=value` pairs of every `Cookie` header.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    pairs_of(headers.get_all(COOKIE).iter())
}

/// Iterates the `name=value` pairs of `Cookie` header values.
pub fn pairs_of<'a>(
    values: impl Iterator<Item = &'a http::HeaderValue>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim(), v.trim()))
        })
}
