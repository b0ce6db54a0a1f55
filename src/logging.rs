//! The log writer: every event goes to stderr as exactly one line, whatever its fields hold.
//!
//! Fields come from outside (query values, Graph names, 3CX error texts), and a newline in
//! one would start a forged log line. Escaping here, on the formatted event, covers every
//! field, span and message of both formats at once, instead of trusting each call site: in
//! text, control characters become `\n`, `\r`, `\t` or `\u001b`; in JSON the formatter has
//! already escaped C0, and the rest (DEL, C1, U+2028/U+2029, which serde_json leaves raw)
//! becomes a `\uXXXX` escape, still valid JSON. ANSI colours are therefore off: an escape
//! sequence pbxgate wrote could not be told from one a client sent.

use std::borrow::Cow;
use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

/// A [`MakeWriter`] for stderr that escapes control characters within each event.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedStderr;

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter(Vec::with_capacity(256))
    }
}

/// One event, collected whole and written escaped when the formatter is done with it.
pub struct EventWriter(Vec<u8>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = escape_event(&self.0);
        // Nowhere to report a failing stderr.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Characters that end or rewrite a line somewhere: C0 and C1 controls, DEL, and Unicode's
/// line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// The event with every control character escaped; only its own final newline stays.
pub fn escape_event(event: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(event);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if !body.chars().any(needs_escape) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\n');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_stays_one_line() {
        let forged = "WARN refused error=x\n2026-01-01T00:00:00Z INFO signed in\r\u{1b}[2J\u{85}\u{2028}\u{2029}\u{7f}\tend\n";
        let out = escape_event(forged.as_bytes());
        assert_eq!(
            out,
            "WARN refused error=x\\n2026-01-01T00:00:00Z INFO signed in\\r\\u001b[2J\\u0085\\u2028\\u2029\\u007f\\tend\n"
        );
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn json_stays_valid_json() {
        let v = serde_json::json!({"error": "x\n\u{85}y\u{2028}z\u{1b}", "n": 1});
        let line = format!("{v}\n");
        let out = escape_event(line.as_bytes());
        assert!(!out.contains('\u{2028}') && !out.contains('\u{85}'));
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, v, "the escapes decode to the same values");
    }

    #[test]
    fn clean_events_are_passed_through() {
        assert!(matches!(
            escape_event(b"INFO listening addr=127.0.0.1:80\n"),
            Cow::Borrowed(_)
        ));
    }
}
