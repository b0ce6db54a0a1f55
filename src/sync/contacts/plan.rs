//! The pure planner of one phonebook: what Outlook says against what 3CX and the store hold
//! now. No I/O, so that every case is a unit test.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::map::{tag_for, to_fields};
use super::read::SourceRead;
use super::{ContactAction, LinkKey, Source};
use crate::config::DedupeBy;
use crate::pbx::{Book, ContactFields, PbxContact};
use crate::store::ContactLink;

/// The state of one phonebook: pbxgate's entries in 3CX and the links in the store.
pub struct BookState {
    pub entries: Vec<PbxContact>,
    pub links: Vec<ContactLink>,
}

/// The pure part of planning one phonebook. `reads` are the sources of `book` read in this run;
/// `complete` says that every source of the book was read from scratch, so pbxgate entries
/// nobody wants any more are deleted. Returns the actions and the mailboxes whose contacts did
/// not all fit under `limit` (their delta must not advance).
pub fn plan_book(
    book: &Book,
    reads: &[(&Source, &SourceRead)],
    state: &BookState,
    dedupe: DedupeBy,
    limit: usize,
    complete: bool,
) -> (Vec<ContactAction>, BTreeSet<String>) {
    let dedupe = if *book == Book::Company {
        dedupe
    } else {
        DedupeBy::None
    };
    // What Outlook wants: tag → fields (the first source wins) and the contacts behind it.
    let mut desired: BTreeMap<String, (ContactFields, Vec<LinkKey>)> = BTreeMap::new();
    let mut gone: BTreeSet<(String, String)> = BTreeSet::new();
    let links_by_key: HashMap<(String, String), &ContactLink> = state
        .links
        .iter()
        .map(|l| ((l.mailbox.clone(), l.contact_id.clone()), l))
        .collect();
    for (src, read) in reads {
        for f in &read.folders {
            for c in &f.changed {
                let Some(mut fields) = to_fields(c) else {
                    gone.insert((src.mailbox.clone(), c.id.clone()));
                    continue;
                };
                fields.tag = tag_for(&src.mailbox, &c.id, &fields, dedupe);
                let link = LinkKey {
                    mailbox: src.mailbox.clone(),
                    contact_id: c.id.clone(),
                    folder_id: f.folder.clone(),
                };
                desired
                    .entry(fields.tag.clone())
                    .or_insert_with(|| (fields, Vec::new()))
                    .1
                    .push(link);
            }
            gone.extend(f.removed.iter().map(|id| (src.mailbox.clone(), id.clone())));
        }
        // Linked contacts a from-scratch read did not return are gone as well.
        let fresh: BTreeSet<&str> = read
            .folders
            .iter()
            .filter(|f| f.fresh || f.gone)
            .map(|f| f.folder.as_str())
            .collect();
        let listed: BTreeSet<&str> = read.folders.iter().map(|f| f.folder.as_str()).collect();
        for l in state.links.iter().filter(|l| l.mailbox == src.mailbox) {
            let folder = l.folder_id.as_str();
            if fresh.contains(folder) || (read.complete() && !listed.contains(folder)) {
                gone.insert((l.mailbox.clone(), l.contact_id.clone()));
            }
        }
    }
    // Every source read from scratch: links of mailboxes no longer configured are gone too.
    if complete {
        let known: BTreeSet<&str> = reads.iter().map(|(s, _)| s.mailbox.as_str()).collect();
        gone.extend(
            state
                .links
                .iter()
                .filter(|l| !known.contains(l.mailbox.as_str()))
                .map(|l| (l.mailbox.clone(), l.contact_id.clone())),
        );
    }
    // A contact that left one folder and arrived in another has moved, not gone.
    let wanted: BTreeSet<(String, String)> = desired
        .values()
        .flat_map(|(_, ls)| ls.iter().map(|l| (l.mailbox.clone(), l.contact_id.clone())))
        .collect();
    let gone: BTreeSet<(String, String)> = gone.difference(&wanted).cloned().collect();

    let mut actions = Vec::new();
    let mut by_tag: HashMap<&str, &PbxContact> = HashMap::new();
    for e in &state.entries {
        if by_tag.contains_key(e.fields.tag.as_str()) {
            // Two entries with one tag (a create whose answer was lost): keep one.
            actions.push(ContactAction::Delete {
                book: book.clone(),
                tag: e.fields.tag.clone(),
                pbx_id: Some(e.id),
                unlink: Vec::new(),
            });
        } else {
            by_tag.insert(e.fields.tag.as_str(), e);
        }
    }
    let mut owned = by_tag.len();
    let mut overflow: BTreeSet<String> = BTreeSet::new();
    let mut dropped = 0usize;
    for (tag, (fields, links)) in &desired {
        let recorded = |e: &PbxContact| {
            links.iter().all(|k| {
                links_by_key
                    .get(&(k.mailbox.clone(), k.contact_id.clone()))
                    .is_some_and(|l| {
                        l.tag == *tag && l.pbx_id == e.id && l.folder_id == k.folder_id
                    })
            })
        };
        match by_tag.get(tag.as_str()) {
            Some(e) if e.fields == *fields && recorded(e) => {}
            Some(e) if e.fields == *fields => actions.push(ContactAction::Link {
                book: book.clone(),
                pbx_id: e.id,
                tag: tag.clone(),
                links: links.clone(),
            }),
            Some(e) => actions.push(ContactAction::Update {
                book: book.clone(),
                pbx_id: e.id,
                fields: fields.clone(),
                links: links.clone(),
            }),
            None if owned >= limit => {
                dropped += 1;
                overflow.extend(links.iter().map(|l| l.mailbox.clone()));
            }
            None => {
                owned += 1;
                actions.push(ContactAction::Create {
                    book: book.clone(),
                    fields: fields.clone(),
                    links: links.clone(),
                });
            }
        }
    }
    // Contacts whose entry changed tag (e.g. a new e-mail with dedupe) leave their old tag.
    let retagged: Vec<(String, String)> = desired
        .iter()
        .flat_map(|(tag, (_, ls))| ls.iter().map(move |k| (tag, k)))
        .filter_map(|(tag, k)| {
            let key = (k.mailbox.clone(), k.contact_id.clone());
            links_by_key
                .get(&key)
                .filter(|l| l.tag != *tag)
                .map(|_| key)
        })
        .collect();
    let leaving: BTreeSet<(String, String)> = gone
        .iter()
        .filter(|k| links_by_key.contains_key(*k))
        .cloned()
        .chain(retagged)
        .collect();
    // Old tag → the contacts leaving it; an entry is deleted when nobody holds it any more.
    let mut by_old_tag: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for k in &leaving {
        if let Some(l) = links_by_key.get(k) {
            by_old_tag.entry(l.tag.clone()).or_default().push(k.clone());
        }
    }
    let held: BTreeSet<&str> = state
        .links
        .iter()
        .filter(|l| !leaving.contains(&(l.mailbox.clone(), l.contact_id.clone())))
        .map(|l| l.tag.as_str())
        .collect();
    let holds = |tag: &str| desired.contains_key(tag) || held.contains(tag);
    for (tag, unlink) in by_old_tag {
        if holds(&tag) {
            actions.push(ContactAction::Unlink {
                book: book.clone(),
                tag,
                unlink,
            });
        } else {
            let pbx_id = by_tag.get(tag.as_str()).map(|e| e.id);
            actions.push(ContactAction::Delete {
                book: book.clone(),
                tag,
                pbx_id,
                unlink,
            });
        }
    }
    // A full read of every source: pbxgate's entries nobody holds are leftovers; remove them.
    if complete {
        let planned: BTreeSet<String> = actions
            .iter()
            .filter_map(|a| match a {
                ContactAction::Delete { tag, .. } => Some(tag.clone()),
                _ => None,
            })
            .collect();
        for (tag, e) in &by_tag {
            if !holds(tag) && !planned.contains(*tag) {
                actions.push(ContactAction::Delete {
                    book: book.clone(),
                    tag: tag.to_string(),
                    pbx_id: Some(e.id),
                    unlink: Vec::new(),
                });
            }
        }
    }
    if dropped > 0 {
        actions.push(ContactAction::Skip {
            item: book.to_string(),
            mailbox: None,
            reason: format!(
                "{dropped} contact(s) not created: the limit of {limit} pbxgate entries is reached"
            ),
            retry_at: None,
        });
    }
    (actions, overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Action;
    use crate::sync::contacts::map::tests::contact;
    use crate::sync::contacts::read::FolderRead;
    use crate::sync::contacts::wire::GraphContact;

    fn source(m: &str) -> Source {
        Source {
            mailbox: m.into(),
            label: m.into(),
            book: Book::Company,
        }
    }

    fn read(
        folder: &str,
        changed: Vec<GraphContact>,
        removed: Vec<&str>,
        fresh: bool,
    ) -> SourceRead {
        SourceRead {
            folders: vec![FolderRead {
                folder: folder.into(),
                changed,
                removed: removed.into_iter().map(Into::into).collect(),
                fresh,
                gone: false,
                link: Some("l".into()),
            }],
            discovered: fresh.then(|| vec![folder.to_string()]),
        }
    }

    fn entry(id: i64, c: &GraphContact, mailbox: &str) -> PbxContact {
        let mut fields = to_fields(c).unwrap();
        fields.tag = tag_for(mailbox, &c.id, &fields, DedupeBy::None);
        PbxContact { id, fields }
    }

    fn link(e: &PbxContact, mailbox: &str, contact: &str, folder: &str) -> ContactLink {
        ContactLink {
            book: "company".into(),
            mailbox: mailbox.into(),
            contact_id: contact.into(),
            folder_id: folder.into(),
            tag: e.fields.tag.clone(),
            pbx_id: e.id,
            updated_at: 0,
        }
    }

    #[test]
    fn a_first_read_creates_and_an_unchanged_book_plans_nothing() {
        let src = source("shared@x");
        let ann = contact("c1", "Ann", Some("+49 1"));
        let bo = contact("c2", "Bo", None);
        let r = read("f", vec![ann.clone(), bo], vec![], true);
        let empty = BookState {
            entries: vec![],
            links: vec![],
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &empty,
            DedupeBy::None,
            10,
            true,
        );
        assert_eq!(a.len(), 1);
        assert!(
            matches!(&a[0], ContactAction::Create { fields, .. } if fields.first_name == "Ann")
        );
        let e = entry(7, &ann, "shared@x");
        let state = BookState {
            links: vec![link(&e, "shared@x", "c1", "f")],
            entries: vec![e],
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &state,
            DedupeBy::None,
            10,
            true,
        );
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn changes_moves_and_removals_touch_only_linked_entries() {
        let src = source("shared@x");
        let ann = contact("c1", "Ann", Some("+49 1"));
        let cy = contact("c3", "Cy", Some("+49 3"));
        let (e1, e3) = (entry(1, &ann, "shared@x"), entry(3, &cy, "shared@x"));
        let state = BookState {
            links: vec![
                link(&e1, "shared@x", "c1", "f"),
                link(&e3, "shared@x", "c3", "f"),
            ],
            entries: vec![e1, e3],
        };
        // Ann changed her number and moved to folder g; Cy was deleted.
        let mut ann2 = ann.clone();
        ann2.mobile_phone = Some("+49 2".into());
        let r = SourceRead {
            folders: vec![
                FolderRead {
                    folder: "f".into(),
                    removed: vec!["c1".into(), "c3".into()],
                    ..Default::default()
                },
                FolderRead {
                    folder: "g".into(),
                    changed: vec![ann2],
                    ..Default::default()
                },
            ],
            discovered: None,
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &state,
            DedupeBy::None,
            10,
            false,
        );
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(
            matches!(&a[0], ContactAction::Update { pbx_id: 1, fields, links, .. }
            if fields.phone_number == "+492" && links[0].folder_id == "g")
        );
        assert!(matches!(
            &a[1],
            ContactAction::Delete {
                pbx_id: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn a_full_read_removes_leftovers_and_duplicates_and_respects_the_limit() {
        let src = source("shared@x");
        let ann = contact("c1", "Ann", Some("+49 1"));
        let e1 = entry(1, &ann, "shared@x");
        let mut dup = e1.clone();
        dup.id = 2;
        let stray = PbxContact {
            id: 5,
            fields: ContactFields {
                tag: "pbxgate:0000000000000000".into(),
                ..Default::default()
            },
        };
        let old = entry(6, &contact("z9", "Zed", Some("+49 9")), "gone@x");
        let state = BookState {
            links: vec![
                link(&e1, "shared@x", "c1", "f"),
                link(&old, "gone@x", "z9", "f"),
            ],
            entries: vec![e1, dup, stray, old],
        };
        let bo = contact("c2", "Bo", Some("+49 2"));
        let r = read("f", vec![ann, bo], vec![], true);
        let (a, overflow) = plan_book(
            &Book::Company,
            &[(&src, &r)],
            &state,
            DedupeBy::None,
            1,
            true,
        );
        let kinds: Vec<&str> = a.iter().map(Action::kind).collect();
        assert_eq!(kinds, ["delete", "delete", "delete", "skip"], "{a:?}");
        assert!(a.iter().any(|x| matches!(x, ContactAction::Delete { pbx_id: Some(6), unlink, .. } if unlink.len() == 1)));
        assert!(overflow.contains("shared@x"));
    }

    #[test]
    fn deduped_entries_stay_while_any_mailbox_has_the_person() {
        let (s1, s2) = (source("a@x"), source("b@x"));
        let ann = contact("c1", "Ann", Some("+49 1"));
        let r1 = read("f1", vec![ann.clone()], vec![], true);
        let r2 = read(
            "f2",
            vec![contact("d1", "Ann", Some("+49 1"))],
            vec![],
            true,
        );
        let empty = BookState {
            entries: vec![],
            links: vec![],
        };
        let (a, _) = plan_book(
            &Book::Company,
            &[(&s1, &r1), (&s2, &r2)],
            &empty,
            DedupeBy::Email,
            10,
            true,
        );
        assert_eq!(a.len(), 1);
        let ContactAction::Create {
            mut fields, links, ..
        } = a[0].clone()
        else {
            panic!()
        };
        assert_eq!(links.len(), 2);
        fields.tag = tag_for("a@x", "c1", &fields, DedupeBy::Email);
        let e = PbxContact { id: 4, fields };
        let mut l2 = link(&e, "b@x", "d1", "f2");
        l2.book = "company".into();
        let state = BookState {
            links: vec![link(&e, "a@x", "c1", "f1"), l2],
            entries: vec![e],
        };
        let gone = read("f1", vec![], vec!["c1"], false);
        let (a, _) = plan_book(
            &Book::Company,
            &[(&s1, &gone)],
            &state,
            DedupeBy::Email,
            10,
            false,
        );
        assert!(
            matches!(a.as_slice(), [ContactAction::Unlink { .. }]),
            "{a:?}"
        );
    }
}
