//! The environment overlay: `PBXGATE__SECTION__KEY=value` variables set or replace keys of
//! the file before it is deserialized, so containers can configure pbxgate without a file
//! edit. Each key set this way is recorded in [`Origins`], so errors name the variable.

use super::ENV_PREFIX;
use super::error::{ConfigError, Origins, env_origin};

/// Applies `PBXGATE__SECTION__KEY=value` variables. Values are strings, except `true`/`false`
/// (booleans) and `[...]` (a TOML array, e.g. `["10.0.0.0/8"]`).
pub(super) fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let key = parts.join(".");
        let error = |message: String| ConfigError::Key {
            origin: env_origin(&var),
            key: key.clone(),
            message,
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(error("malformed name; use PBXGATE__SECTION__KEY".into()));
        }
        let value = env_value(&raw).map_err(error)?;
        insert_path(table, &parts, value).map_err(error)?;
        origins.env.insert(key, var);
    }
    Ok(())
}

fn env_value(raw: &str) -> Result<toml::Value, String> {
    match raw.trim() {
        "true" => Ok(toml::Value::Boolean(true)),
        "false" => Ok(toml::Value::Boolean(false)),
        t if t.starts_with('[') => toml::from_str::<toml::Table>(&format!("v = {t}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| format!("{t:?} is not a TOML array")),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

fn insert_path(
    table: &mut toml::Table,
    parts: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let (last, sections) = parts.split_last().ok_or("empty key")?;
    let mut cur = table;
    for p in sections {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}
