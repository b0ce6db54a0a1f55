//! The changes a contacts run plans, and how each reads in the run record and the dry-run
//! table.

use std::collections::BTreeSet;

use crate::pbx::{Book, ContactFields};
use crate::sync::Action;

/// Where one Outlook contact sits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkKey {
    pub mailbox: String,
    pub contact_id: String,
    pub folder_id: String,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactAction {
    /// A new entry, tagged as pbxgate's.
    Create {
        book: Book,
        fields: ContactFields,
        links: Vec<LinkKey>,
    },
    /// Bring a pbxgate entry in line with Outlook.
    Update {
        book: Book,
        pbx_id: i64,
        fields: ContactFields,
        links: Vec<LinkKey>,
    },
    /// The entry is right already; only pbxgate's records change (e.g. a contact moved).
    Link {
        book: Book,
        pbx_id: i64,
        tag: String,
        links: Vec<LinkKey>,
    },
    /// The contacts behind an entry are gone: delete it (if 3CX still has it) and the links.
    Delete {
        book: Book,
        tag: String,
        pbx_id: Option<i64>,
        unlink: Vec<(String, String)>,
    },
    /// Forget contacts whose entry other contacts still hold.
    Unlink {
        book: Book,
        tag: String,
        unlink: Vec<(String, String)>,
    },
    /// Nothing is done for `item`; reported on the run. With `retry_at`, the mailbox is left
    /// alone until then.
    Skip {
        item: String,
        mailbox: Option<String>,
        reason: String,
        retry_at: Option<i64>,
    },
}

impl Action for ContactAction {
    fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Update { .. } => "update",
            Self::Link { .. } => "link",
            Self::Delete { .. } => "delete",
            Self::Unlink { .. } => "unlink",
            Self::Skip { .. } => "skip",
        }
    }

    fn item(&self) -> String {
        match self {
            Self::Create { book, fields, .. } | Self::Update { book, fields, .. } => {
                format!("{book}: {}", name_of(fields))
            }
            Self::Link { book, tag, .. }
            | Self::Delete { book, tag, .. }
            | Self::Unlink { book, tag, .. } => format!("{book}: {tag}"),
            Self::Skip { item, .. } => item.clone(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Create { fields, links, .. } => format!("{} ({})", describe(fields), from(links)),
            Self::Update { pbx_id, fields, .. } => format!("entry {pbx_id}: {}", describe(fields)),
            Self::Link { pbx_id, links, .. } => format!("entry {pbx_id} ← {}", from(links)),
            Self::Delete { pbx_id, unlink, .. } => match pbx_id {
                Some(id) => format!("entry {id}: {} contact(s) gone", unlink.len()),
                None => "already gone from 3CX".into(),
            },
            Self::Unlink { unlink, .. } => format!("{} contact(s) gone; entry kept", unlink.len()),
            Self::Skip { reason, .. } => reason.clone(),
        }
    }
}

fn name_of(f: &ContactFields) -> String {
    format!("{} {}", f.first_name, f.last_name)
        .trim()
        .to_string()
}

fn describe(f: &ContactFields) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

fn from(links: &[LinkKey]) -> String {
    let mailboxes: BTreeSet<&str> = links.iter().map(|l| l.mailbox.as_str()).collect();
    format!(
        "from {}",
        mailboxes.into_iter().collect::<Vec<_>>().join(", ")
    )
}
