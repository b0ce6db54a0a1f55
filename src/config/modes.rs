//! Secret files that others can read. pbxgate warns at start rather than refusing: whether a
//! group is meant to read them is the admin's call, but a world-readable client secret is
//! rarely intended.

use std::path::{Path, PathBuf};

use super::Config;

/// A secret file whose mode lets its group or others in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseFile {
    /// The config key that names it.
    pub key: &'static str,
    pub path: PathBuf,
    /// Its permission bits, e.g. `0o644`.
    pub mode: u32,
}

/// The permission bits of `path` when group or others have any access to it; `None` for a
/// private file, or one that cannot be read (loading the config reported that).
pub fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl Config {
    /// The files the config names that hold a secret: the `*_file` secrets and the private
    /// keys. (`pbx.ca_file` is a public certificate.)
    pub fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("entra.client_secret_file", &self.entra.client_secret_file),
            ("entra.client_private_key", &self.entra.client_private_key),
            ("pbx.client_secret_file", &self.pbx.client_secret_file),
            ("pbx.password_key_file", &self.pbx.password_key_file),
            ("pbx.service_password_file", &self.pbx.service_password_file),
            (
                "pbx.service_totp_secret_file",
                &self.pbx.service_totp_secret_file,
            ),
            ("server.tls_key", &self.server.tls_key),
            ("store.url_file", &self.store.url_file),
        ]
        .into_iter()
        .filter_map(|(key, path)| Some((key, path.as_deref()?)))
        .collect()
    }

    /// The secret files group or others can read, for the warning at start.
    pub fn loose_secret_files(&self) -> Vec<LooseFile> {
        self.secret_files()
            .into_iter()
            .filter_map(|(key, path)| {
                Some(LooseFile {
                    key,
                    path: path.to_path_buf(),
                    mode: loose_mode(path)?,
                })
            })
            .collect()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn only_files_others_can_read_are_loose() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_mode(&f), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(loose_mode(&f), Some(0o640));
        assert_eq!(loose_mode(&dir.path().join("missing")), None);
    }
}
