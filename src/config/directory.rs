//! `[directory]`: who is who beyond what the user sync finds (UPN aliases, fixed
//! extensions).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Origins};

/// Who is who beyond what the user sync finds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// UPN suffixes that name the same users: alias → suffix used in 3CX, e.g. an on-premises
    /// `"contoso.local" = "contoso.com"`. Compared case-insensitively.
    pub upn_suffix_aliases: BTreeMap<String, String>,
    /// Fixed UPN → extension assignments; they win over everything else.
    pub overrides: Vec<DirectoryOverride>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryOverride {
    pub upn: String,
    pub extension: String,
}

impl DirectoryConfig {
    pub(super) fn validate(&self, o: &Origins) -> Result<(), ConfigError> {
        match self
            .overrides
            .iter()
            .position(|ov| !ov.upn.contains('@') || ov.extension.trim().is_empty())
        {
            Some(i) => Err(o.error(
                &format!("directory.overrides[{i}]"),
                "needs upn = \"user@domain\" and extension = \"101\"",
            )),
            None => Ok(()),
        }
    }
}
