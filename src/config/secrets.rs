//! Secrets kept in files, as Docker, Kubernetes and systemd credentials hand them over: every
//! secret key has a `_file` twin naming a file that holds it. The file is read before the
//! config is typed, so its content is checked exactly like a secret written in the config,
//! and errors about it name the file.

use super::env::{Leaf, Node};
use super::error::{ConfigError, Origins};

/// Every secret key, with its `_file` twin.
pub(super) const SECRET_FILES: &[(&str, &str)] = &[
    ("entra.client_secret", "entra.client_secret_file"),
    ("pbx.client_secret", "pbx.client_secret_file"),
    ("pbx.password_key", "pbx.password_key_file"),
    ("pbx.service_password", "pbx.service_password_file"),
    ("pbx.service_totp_secret", "pbx.service_totp_secret_file"),
    ("store.url", "store.url_file"),
];

/// The `_file` twin of secret `key`, for messages about a missing secret.
pub(super) fn file_twin(key: &str) -> Option<&'static str> {
    SECRET_FILES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, f)| *f)
}

/// Replaces each `*_file` key's file by its content under the secret key. A secret given
/// both ways is refused: which one wins would be a guess.
pub(super) fn read_secret_files(root: &mut Node, origins: &mut Origins) -> Result<(), ConfigError> {
    for &(key, file_key) in SECRET_FILES {
        let file_path: Vec<&str> = file_key.split('.').collect();
        let path = match root.text_at(&file_path) {
            None => continue,
            Some(Leaf::Other) => return Err(origins.error(file_key, "must be a file path")),
            Some(Leaf::Text(p)) => p.to_string(),
        };
        let key_path: Vec<&str> = key.split('.').collect();
        if root.text_at(&key_path).is_some() {
            let message = format!(
                "is also set by `{file_key}` ({}); set the secret or its file, not both",
                origins.of(file_key)
            );
            return Err(origins.error(key, message));
        }
        let secret =
            read(&path).map_err(|e| origins.error(file_key, format!("cannot read {path}: {e}")))?;
        root.insert(&key_path, Node::File(toml::Value::String(secret)))
            .map_err(|m| origins.error(key, m))?;
        origins.set(key, format!("secret file {path} ({file_key})"));
    }
    Ok(())
}

/// The file's content without the one line end that editors and `echo` add; anything else
/// (spaces, a second newline) is part of the secret.
fn read(path: &str) -> std::io::Result<String> {
    let mut s = std::fs::read_to_string(path)?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// Drops from rendered config the secrets that were read from a file: the `_file` key says
/// where they are, and the output must parse back (both keys would be refused).
pub(super) fn hide_read_secrets(rendered: &mut toml::Table) {
    for &(key, file_key) in SECRET_FILES {
        let (Some((section, name)), Some((_, file_name))) =
            (key.rsplit_once('.'), file_key.rsplit_once('.'))
        else {
            continue;
        };
        let table = section
            .split('.')
            .try_fold(&mut *rendered, |t, s| t.get_mut(s)?.as_table_mut());
        if let Some(t) = table
            && t.contains_key(file_name)
        {
            t.remove(name);
        }
    }
}
