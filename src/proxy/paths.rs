//! The path check: which request paths pbxgate forwards at all, and which passthrough
//! prefix a path falls under, so that 3CX resolves every forwarded path to the prefix
//! pbxgate checked (property-tested against a lenient server below).

use percent_encoding::percent_decode_str;

/// Rejects paths whose meaning could change between here and 3CX: dot segments (also
/// percent-encoded, with `;params` or trailing spaces, or longer runs of dots, which some
/// servers take for `..`), and escapes that a server could read as more than a plain
/// character: encoded slashes, backslashes, percent signs (a second decoding), control
/// characters, `%u` forms and bytes that are not UTF-8 (overlong `.` or `/`). Without
/// this, a passthrough prefix could be stretched to reach a protected path
/// (`/provisioning/../webclient`).
pub fn path_is_safe(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    // On every request: three vectorised scans decide most paths (no backslash or percent
    // sign, no segment starting with a dot); no allocation unless a segment is encoded.
    let bytes = path.as_bytes();
    if memchr::memchr(b'\\', bytes).is_some() {
        return false;
    }
    if memchr::memchr(b'%', bytes).is_none() && memchr::memmem::find(bytes, b"/.").is_none() {
        return true;
    }
    if !escapes_are_plain(bytes) {
        return false;
    }
    path.split('/').all(|seg| {
        if seg.contains('%') {
            !moves_around(&percent_decode_str(seg).decode_utf8_lossy())
        } else {
            !moves_around(seg)
        }
    })
}

/// Whether every `%` starts a two-digit escape of a byte that means nothing to a path,
/// and the escapes spell UTF-8.
fn escapes_are_plain(bytes: &[u8]) -> bool {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(b'%', rest) {
        let (Some(h), Some(l)) = (
            rest.get(i + 1).and_then(|&b| hex(b)),
            rest.get(i + 2).and_then(|&b| hex(b)),
        ) else {
            return false;
        };
        let b = (h << 4 | l) as u8;
        if matches!(b, b'/' | b'\\' | b'%' | 0x7f) || b < 0x20 {
            return false;
        }
        rest = &rest[i + 3..];
    }
    std::str::from_utf8(&percent_encoding::percent_decode(bytes).collect::<Vec<u8>>()).is_ok()
}

/// A (decoded) segment that a server may take for `.` or `..`: dots and spaces only,
/// before any `;params`.
fn moves_around(seg: &str) -> bool {
    let bare = seg.split(';').next().unwrap_or("");
    bare.contains('.') && bare.bytes().all(|b| b == b'.' || b == b' ')
}

/// The passthrough prefix `path` falls under, if any. A prefix matches whole segments:
/// `/public` opens `/public` and `/public/…`, not `/publicity`.
pub fn passthrough_prefix<'a>(path: &str, prefixes: &'a [String]) -> Option<&'a str> {
    prefixes
        .iter()
        .find(|p| {
            path.strip_prefix(p.as_str())
                .is_some_and(|rest| p.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for p in [
            "/provisioning/../webclient",
            "/provisioning/%2e%2e/x",
            "/provisioning/%2E./x",
            "/a/%2fb",
            "/a/%2Fb",
            "/a/%5Cb",
            "/a/%00",
            "/a\\b",
            "/%41\\b",
            "/./x",
            "/provisioning/..;/x",
            "x",
            // Found by `a_forwarded_path_stays_under_the_prefix_pbxgate_checked`:
            // double encoding, runs of dots, trailing spaces, overlong UTF-8, `%u`,
            // control characters and malformed escapes.
            "/provisioning/..%252e",
            "/provisioning/%252e%252e/webclient",
            "/provisioning/.../webclient",
            "/provisioning/..%20/webclient",
            "/provisioning/%c0%ae%c0%ae/webclient",
            "/provisioning/%e0%80%ae./webclient",
            "/provisioning/%u002e%u002e/webclient",
            "/provisioning/x%0a",
            "/provisioning/x%7F",
            "/provisioning/x%2",
            "/provisioning/x%zz",
        ] {
            assert!(!path_is_safe(p), "{p}");
        }
        for p in [
            "/",
            "/provisioning/abc/0001.xml",
            "/a..b/c.d",
            "/%41",
            "/a/%C3%A9.%20x",
        ] {
            assert!(path_is_safe(p), "{p}");
        }
    }

    /// Found by `a_forwarded_path_stays_under_the_prefix_pbxgate_checked`.
    #[test]
    fn a_prefix_matches_whole_segments() {
        let prefixes = ["/public".to_string(), "/provisioning/".to_string()];
        for (path, want) in [
            ("/public", Some("/public")),
            ("/public/x", Some("/public")),
            ("/publicity/x", None),
            ("/provisioning/x", Some("/provisioning/")),
            ("/provisioning", None),
        ] {
            assert_eq!(passthrough_prefix(path, &prefixes), want, "{path}");
        }
    }

    /// The path check against a lenient server.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// How a lenient server could read `path`: percent-decoded twice (double decoding),
        /// `%uXXXX` (IIS) and overlong UTF-8 taken for the characters they spell, cut at NUL,
        /// `\` as `/`, `;params` dropped, trailing spaces and dots trimmed from segments (as
        /// Windows does; any run of two or more dots taken for `..`), `.`/`..` resolved and
        /// empty segments collapsed. Returns the segments.
        fn lenient_server_view(path: &str) -> Vec<String> {
            let once = decode(path.as_bytes());
            let bytes = decode(&once);
            let text: String = chars_leniently(&bytes);
            let text = text.split('\0').next().unwrap_or("").replace('\\', "/");
            let mut out: Vec<String> = Vec::new();
            for seg in text.split('/') {
                let bare = seg.split(';').next().unwrap_or("").trim_end_matches(' ');
                let all_dots = !bare.is_empty() && bare.bytes().all(|b| b == b'.');
                match bare {
                    _ if all_dots && bare.len() >= 2 => {
                        out.pop();
                    }
                    "" | "." => {}
                    _ => {
                        let trimmed = bare.trim_end_matches(['.', ' ']);
                        if !trimmed.is_empty() {
                            out.push(trimmed.to_string());
                        }
                    }
                }
            }
            out
        }

        /// One round of `%XX` and `%uXXXX` decoding; anything else stays as it is.
        fn decode(b: &[u8]) -> Vec<u8> {
            let hex = |s: &[u8]| {
                std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| u32::from_str_radix(s, 16).ok())
            };
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%'
                    && (b.get(i + 1) == Some(&b'u') || b.get(i + 1) == Some(&b'U'))
                    && let Some(c) = b.get(i + 2..i + 6).and_then(hex).and_then(char::from_u32)
                {
                    out.extend_from_slice(c.to_string().as_bytes());
                    i += 6;
                } else if b[i] == b'%'
                    && let Some(v) = b
                        .get(i + 1..i + 3)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(hex)
                {
                    out.push(v as u8);
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        }

        /// UTF-8, also overlong two- and three-byte forms (which strict decoders refuse).
        fn chars_leniently(b: &[u8]) -> String {
            let mut out = String::new();
            let mut i = 0;
            while i < b.len() {
                let c = match b[i] {
                    0xc0 | 0xc1 if i + 1 < b.len() => {
                        i += 2;
                        char::from_u32(
                            (u32::from(b[i - 2] & 0x1f) << 6) | u32::from(b[i - 1] & 0x3f),
                        )
                    }
                    0xe0 if i + 2 < b.len() && b[i + 1] < 0xa0 => {
                        i += 3;
                        char::from_u32(
                            (u32::from(b[i - 2] & 0x3f) << 6) | u32::from(b[i - 1] & 0x3f),
                        )
                    }
                    _ => {
                        let rest = &b[i..];
                        let valid = match std::str::from_utf8(rest) {
                            Ok(s) => s,
                            Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or(""),
                        };
                        match valid.chars().next() {
                            Some(c) => {
                                i += c.len_utf8();
                                Some(c)
                            }
                            None => {
                                i += 1;
                                Some(char::REPLACEMENT_CHARACTER)
                            }
                        }
                    }
                };
                out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            out
        }

        fn prefixes() -> Vec<String> {
            let mut p: Vec<String> = crate::config::DEFAULT_PASSTHROUGH
                .iter()
                .map(|s| s.to_string())
                .collect();
            p.push("/public".into());
            p
        }

        /// Pieces that path tricks are made of, and plain text.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(vec![
                    "/", "//", "\\", ".", "..", "...", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.",
                    "%2f", "%2F", "%5c", "%5C", "%25", "%252e", "%252E", "%252f", "%255c",
                    "%25252e", "%c0%ae", "%C0%AE", "%c0%af", "%c1%9c", "%e0%80%ae", "%u002e",
                    "%U002E", "%u002f", "%u005c", "%00", "%20", "%09", "%0a", ";", ";x=1", "%3b",
                    "%3B", "a", "webclient", "api", "x.xml", "%41", "%", "%2", "%zz", "~",
                ]).prop_map(str::to_string),
                1 => "[!-~]{0,6}",
            ]
        }

        fn tricky_path() -> impl Strategy<Value = String> {
            (
                prop::sample::select(prefixes()),
                prop::collection::vec(piece(), 0..10),
            )
                .prop_map(|(p, pieces)| p + &pieces.concat())
        }

        proptest! {
            #[test]
            fn a_forwarded_path_stays_under_the_prefix_pbxgate_checked(path in tricky_path()) {
                let prefixes = prefixes();
                if path_is_safe(&path)
                    && let Some(prefix) = passthrough_prefix(&path, &prefixes)
                {
                    let want: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
                    let view = lenient_server_view(&path);
                    prop_assert!(
                        view.len() >= want.len() && view.iter().zip(&want).all(|(a, b)| a == b),
                        "{path:?} checked under {prefix:?}, a server may read {view:?}"
                    );
                }
            }

            #[test]
            fn the_path_check_never_panics(path in "\\PC{0,40}") {
                let _ = path_is_safe(&path);
            }
        }
    }
}
