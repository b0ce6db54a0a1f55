//! `Cookie` request headers as name/value pairs (RFC 6265 §5.4: `name=value; name=value`).

use http::HeaderMap;
use http::header::COOKIE;

/// Iterates the `name=value` pairs of every `Cookie` header.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    pairs_of(headers.get_all(COOKIE).iter())
}

/// Iterates the `name=value` pairs of `Cookie` header values that are UTF-8 and named.
/// Decided pair by pair: one cookie that is not UTF-8 (a script may set one) does not hide
/// the others in its header.
pub fn pairs_of<'a>(
    values: impl Iterator<Item = &'a http::HeaderValue>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    values
        .flat_map(|v| split_pairs(v.as_bytes()))
        .filter(|(k, _)| !k.is_empty())
        .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
}

/// The value of the first cookie named `name` whose value is UTF-8: what
/// `cookie_pairs(headers).find(|(k, _)| *k == name)` finds, without checking the UTF-8 of
/// every other cookie on the way (this runs on every session-checked request).
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| split_pairs(v.as_bytes()))
        .filter(|(k, _)| *k == name.as_bytes())
        .find_map(|(_, v)| std::str::from_utf8(v).ok())
}

/// The pairs of one `Cookie` value as bytes, name and value trimmed of spaces and tabs.
/// A pair without `=` is a value with an empty name, as browsers store and send it
/// (RFC 6265bis §5.7); empty pairs are skipped. Separators are found with `memchr`: on
/// every request that carries cookies, a byte-at-a-time split cost more than the rest of
/// the session check.
pub fn split_pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        loop {
            let now = rest?;
            let pair = match memchr::memchr(b';', now) {
                Some(i) => {
                    rest = Some(&now[i + 1..]);
                    &now[..i]
                }
                None => {
                    rest = None;
                    now
                }
            };
            let pair = trim(pair);
            if pair.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b'=', pair) {
                Some(i) => (trim(&pair[..i]), trim(&pair[i + 1..])),
                None => (&pair[..0], pair),
            });
        }
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !ows(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ows(c)).map_or(start, |i| i + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn pairs(raw: &[u8]) -> Vec<(String, String)> {
        let v = HeaderValue::from_bytes(raw).unwrap();
        pairs_of(std::iter::once(&v))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_cookie_that_is_not_utf8_hides_no_other() {
        let found = pairs(b"a=\xe9t\xe9; __Host-pbxgate=ID; b=\"q\"");
        assert_eq!(
            found,
            [("__Host-pbxgate", "ID"), ("b", "\"q\"")].map(|(k, v)| (k.into(), v.into()))
        );
    }

    #[test]
    fn find_skips_a_namesake_that_is_not_utf8_and_names_nothing_empty() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"a=\xe9; =x; b=1").unwrap());
        h.append(COOKIE, HeaderValue::from_static("a=2; b=3"));
        assert_eq!(find(&h, "a"), Some("2"));
        assert_eq!(find(&h, "b"), Some("1"));
        assert_eq!(find(&h, ""), None);
        assert_eq!(find(&h, "c"), None);
    }

    #[test]
    fn pairs_are_split_and_trimmed() {
        let found: Vec<_> = split_pairs(b" a = 1 ;;b=x=y; flag ;\tc=").collect();
        let want: [(&[u8], &[u8]); 4] = [(b"a", b"1"), (b"b", b"x=y"), (b"", b"flag"), (b"c", b"")];
        assert_eq!(found, want);
    }

    mod properties {
        use super::*;
        use http::HeaderMap;
        use proptest::prelude::*;

        const OURS: &str = "__Host-pbxgate";

        /// Other cookies' names: tokens, and look-alikes of ours.
        fn other_name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}",
                prop::sample::select(vec![
                    "__Host-pbxgate-login",
                    "__host-pbxgate",
                    "x__Host-pbxgate",
                    "__Host-pbxgat",
                    "__Host-pbxgate ",
                    "__Secure-pbxgate",
                    "pbxgate",
                ])
                .prop_map(str::to_string),
            ]
            .prop_filter("not ours", |n| n.trim() != OURS)
        }

        /// Other cookies' values: anything but `;`, also bytes that are not UTF-8.
        fn other_value() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(any::<u8>(), 0..16).prop_map(|v| {
                v.into_iter()
                    .filter(|&b| b != b';' && (b >= 0x20 || b == b'\t') && b != 0x7f)
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn any_cookie_header_splits_without_panic(raw in prop::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(v) = http::HeaderValue::from_bytes(&raw) {
                    let _ = split_pairs(v.as_bytes()).count();
                    let _ = pairs_of(std::iter::once(&v)).count();
                }
            }

            #[test]
            fn ours_is_found_exactly_among_any_others(
                others in prop::collection::vec((other_name(), other_value()), 0..6),
                at in any::<prop::sample::Index>(),
                ours in "[!#-+--:<-\\[\\]-~]{0,40}",
                split_at in any::<prop::sample::Index>(),
                pad in " {0,2}",
            ) {
                let mut pairs: Vec<Vec<u8>> = others
                    .iter()
                    .map(|(k, v)| [k.as_bytes(), b"=", v].concat())
                    .collect();
                pairs.insert(at.index(pairs.len() + 1), format!("{OURS}={ours}").into_bytes());
                // In one or two `Cookie` headers, with some space around the separators.
                let cut = split_at.index(pairs.len() + 1);
                let sep = format!("{pad};{pad}");
                let mut h = HeaderMap::new();
                for part in [&pairs[..cut], &pairs[cut..]] {
                    if let Ok(v) = http::HeaderValue::from_bytes(&part.join(sep.as_bytes())) {
                        h.append(COOKIE, v);
                    }
                }
                let found: Vec<&str> =
                    cookie_pairs(&h).filter(|(k, _)| *k == OURS).map(|(_, v)| v).collect();
                prop_assert_eq!(found, vec![ours.as_str()]);
                prop_assert_eq!(find(&h, OURS), Some(ours.as_str()));
            }
        }
    }
}
