//! Reading a config file that has no app registration yet, and writing the `[entra]` keys
//! `setup` learned into it.
//!
//! The write is a careful text edit rather than a TOML round trip: `toml` (the parser in the
//! tree) drops comments and layout, and a `toml_edit` dependency would be one more crate for
//! four string keys. Only whole lines `key = …` inside the `[entra]` table are replaced or
//! added; everything else stays byte for byte. The result is parsed again and must carry the
//! new values before it replaces the file (atomically, keeping the file's mode).

use std::path::Path;

use super::SetupError;
use crate::config::Config;

/// Placeholders for the keys a config has before its first `setup`; never written anywhere.
pub const UNSET_CLIENT_ID: &str = "00000000-0000-0000-0000-000000000000";
const UNSET_SECRET: &str = "pbxgate-setup-placeholder";

/// The config with the `[entra]` keys it may still lack filled in, and whether a real
/// `client_id` was there.
pub fn load(path: &Path) -> Result<(Config, bool), SetupError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| SetupError::Config(format!("{file}: {e}")))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| SetupError::Config(format!("{file}: {e}")))?;
    let entra = table
        .entry("entra")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let Some(entra) = entra.as_table_mut() else {
        return Err(SetupError::Config(format!(
            "{file}: `entra` must be a table"
        )));
    };
    let known = entra
        .get("client_id")
        .and_then(|v| v.as_str())
        .is_some_and(|s| !s.is_empty() && s != UNSET_CLIENT_ID);
    let mut fill = |key: &str, value: &str| {
        let empty = entra
            .get(key)
            .and_then(|v| v.as_str())
            .is_none_or(str::is_empty);
        if empty {
            entra.insert(key.into(), toml::Value::String(value.into()));
        }
    };
    fill("tenant_id", "organizations");
    fill("client_id", UNSET_CLIENT_ID);
    let has_credential = ["client_secret", "client_secret_file", "client_certificate"]
        .iter()
        .any(|k| entra.contains_key(*k));
    if !has_credential {
        entra.insert(
            "client_secret".into(),
            toml::Value::String(UNSET_SECRET.into()),
        );
    }
    let text = toml::to_string(&table).map_err(|e| SetupError::Config(e.to_string()))?;
    let config = Config::parse(&text, &file, std::env::vars())
        .map_err(|e| SetupError::Config(e.to_string()))?;
    Ok((config, known))
}

/// Sets `keys` (all strings) in the `[entra]` table of `text`; adds the table if missing.
pub fn set_entra_keys(text: &str, keys: &[(&str, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let header = lines.iter().position(|l| is_header(l, Some("entra")));
    let (start, mut end) = match header {
        Some(h) => {
            let end = lines[h + 1..]
                .iter()
                .position(|l| is_header(l, None))
                .map_or(lines.len(), |i| h + 1 + i);
            (h + 1, end)
        }
        None => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push("[entra]".into());
            (lines.len(), lines.len())
        }
    };
    for (key, value) in keys {
        let line = format!("{key} = {}", toml::Value::String(value.clone()));
        match (start..end).find(|&i| key_of(&lines[i]) == Some(key)) {
            Some(i) => lines[i] = line,
            None => {
                // After the table's last key line, so trailing blank lines and comments that
                // belong to the next table stay where they are.
                let at = (start..end)
                    .rev()
                    .find(|&i| key_of(&lines[i]).is_some())
                    .map_or(start, |i| i + 1);
                lines.insert(at, line);
                end += 1;
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `[name]` (with `name` given) or any table header (`[x]`, `[[x]]`, `[x.y]`).
fn is_header(line: &str, name: Option<&str>) -> bool {
    let t = line.trim();
    let t = t.split('#').next().unwrap_or("").trim();
    if !t.starts_with('[') || !t.ends_with(']') {
        return false;
    }
    match name {
        Some(n) => t.trim_matches(['[', ']']).trim() == n && !t.starts_with("[["),
        None => true,
    }
}

/// The key of a `key = value` line (bare keys only, as pbxgate's are).
fn key_of(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.is_empty()
        && !k.starts_with('#')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(k)
}

/// Writes the keys into the file at `path`, checking the result first.
pub fn write(path: &Path, keys: &[(&str, String)]) -> Result<(), SetupError> {
    let file = path.display().to_string();
    let io = |e: std::io::Error| SetupError::Config(format!("{file}: {e}"));
    let text = std::fs::read_to_string(path).map_err(io)?;
    let new = set_entra_keys(&text, keys);
    let table: toml::Table = toml::from_str(&new)
        .map_err(|e| SetupError::Config(format!("{file}: the edited file does not parse: {e}")))?;
    for (k, v) in keys {
        if table["entra"].get(*k).and_then(|x| x.as_str()) != Some(v.as_str()) {
            return Err(SetupError::Config(format!(
                "{file}: could not set entra.{k}"
            )));
        }
    }
    let tmp = path.with_extension("toml.setup-tmp");
    std::fs::write(&tmp, new).map_err(io)?;
    let perms = std::fs::metadata(path).map_err(io)?.permissions();
    std::fs::set_permissions(&tmp, perms).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# pbxgate\n[server]\npublic_url = \"https://pbx.example.com\" # ours\n\n[entra]\n# the tenant\ntenant_id = \"t\"\nclient_secret = \"s\"\n\n# 3CX below\n[pbx]\nurl = \"https://pbx\"\n";

    #[test]
    fn keys_are_replaced_or_added_inside_the_table_and_the_rest_is_kept() {
        let out = set_entra_keys(
            TEXT,
            &[
                ("tenant_id", "new-tenant".into()),
                ("client_id", "app \"1\"".into()),
            ],
        );
        assert_eq!(
            out,
            "# pbxgate\n[server]\npublic_url = \"https://pbx.example.com\" # ours\n\n[entra]\n# the tenant\ntenant_id = \"new-tenant\"\nclient_secret = \"s\"\nclient_id = 'app \"1\"'\n\n# 3CX below\n[pbx]\nurl = \"https://pbx\"\n"
        );
    }

    #[test]
    fn a_missing_table_is_appended() {
        let out = set_entra_keys("[server]\nx = 1", &[("client_id", "c".into())]);
        assert_eq!(out, "[server]\nx = 1\n\n[entra]\nclient_id = \"c\"\n");
    }
}
