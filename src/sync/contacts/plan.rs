//! The pure planner of one phonebook: what Outlook says against what 3CX and the store hold
//! now. No I/O, so that every case is a unit test.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::map::{tag_for, to_fields};
use super::read::{FolderRead, SourceRead};
use super::{ContactAction, LinkKey, Source};
use crate::config::DedupeBy;
use crate::pbx::{Book, ContactFields, PbxContact};
use crate::store::ContactLink;

/// The state of one phonebook: pbxgate's entries in 3CX and the links in the store.
pub struct BookState {
    pub entries: Vec<PbxContact>,
    pub links: Vec<ContactLink>,
}

/// One Outlook contact, wherever it sits: (mailbox, contact id).
type Key = (String, String);

/// What Outlook wants in the book: tag → the entry's fields (the first source wins) and the
/// contacts behind it.
type Desired = BTreeMap<String, (ContactFields, Vec<LinkKey>)>;

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
    let (desired, gone) = outlook(reads, &state.links, dedupe, complete);
    let mut p = Planner::new(book, state, desired, &gone);
    let (overflow, dropped) = p.converge(limit);
    p.release();
    if complete {
        p.remove_leftovers();
    }
    if dropped > 0 {
        p.actions.push(ContactAction::Skip {
            item: book.to_string(),
            mailbox: None,
            reason: format!(
                "{dropped} contact(s) not created: the limit of {limit} pbxgate entries is reached"
            ),
            retry_at: None,
        });
    }
    (p.actions, overflow)
}

fn key_of(l: &ContactLink) -> Key {
    (l.mailbox.clone(), l.contact_id.clone())
}

fn link_key(k: &LinkKey) -> Key {
    (k.mailbox.clone(), k.contact_id.clone())
}

/// What the reads say: the entries Outlook wants, and the contacts that are gone. A contact
/// that left one folder and arrived in another has moved, not gone.
fn outlook(
    reads: &[(&Source, &SourceRead)],
    links: &[ContactLink],
    dedupe: DedupeBy,
    complete: bool,
) -> (Desired, BTreeSet<Key>) {
    let mut desired = Desired::new();
    let mut gone = BTreeSet::new();
    for (src, read) in reads {
        for f in &read.folders {
            add_folder(&mut desired, &mut gone, src, f, dedupe);
        }
        gone.extend(unreturned(src, read, links));
    }
    // Every source read from scratch: links of mailboxes no longer configured are gone too.
    if complete {
        let known: BTreeSet<&str> = reads.iter().map(|(s, _)| s.mailbox.as_str()).collect();
        let unknown = links.iter().filter(|l| !known.contains(l.mailbox.as_str()));
        gone.extend(unknown.map(key_of));
    }
    let wanted: BTreeSet<Key> = desired
        .values()
        .flat_map(|(_, ls)| ls.iter().map(link_key))
        .collect();
    let gone = gone.difference(&wanted).cloned().collect();
    (desired, gone)
}

/// One folder's changes: contacts with a phone number are wanted, the others and the
/// removed ones are gone.
fn add_folder(
    desired: &mut Desired,
    gone: &mut BTreeSet<Key>,
    src: &Source,
    f: &FolderRead,
    dedupe: DedupeBy,
) {
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

/// Linked contacts a from-scratch read did not return: those in a folder read afresh (or
/// gone), and with the folder list read afresh, those in a folder no longer listed.
fn unreturned(src: &Source, read: &SourceRead, links: &[ContactLink]) -> Vec<Key> {
    let fresh: BTreeSet<&str> = read
        .folders
        .iter()
        .filter(|f| f.fresh || f.gone)
        .map(|f| f.folder.as_str())
        .collect();
    let listed: BTreeSet<&str> = read.folders.iter().map(|f| f.folder.as_str()).collect();
    let complete = read.complete();
    links
        .iter()
        .filter(|l| l.mailbox == src.mailbox)
        .filter(|l| {
            let folder = l.folder_id.as_str();
            fresh.contains(folder) || (complete && !listed.contains(folder))
        })
        .map(key_of)
        .collect()
}

/// One book's plan in the making: what Outlook wants against what 3CX and the store hold.
struct Planner<'a> {
    book: &'a Book,
    desired: Desired,
    /// The store's links by the contact behind them.
    links: HashMap<Key, &'a ContactLink>,
    /// pbxgate's entry of each tag (the first, when 3CX has two).
    by_tag: HashMap<&'a str, &'a PbxContact>,
    /// Linked contacts leaving their entry's tag: gone, or now wanted under another tag.
    leaving: BTreeSet<Key>,
    /// Tags some contact that is not leaving still holds.
    held: BTreeSet<&'a str>,
    actions: Vec<ContactAction>,
}

impl<'a> Planner<'a> {
    fn new(book: &'a Book, state: &'a BookState, desired: Desired, gone: &BTreeSet<Key>) -> Self {
        let links: HashMap<Key, &ContactLink> =
            state.links.iter().map(|l| (key_of(l), l)).collect();
        let leaving = leaving(&desired, &links, gone);
        let held = state
            .links
            .iter()
            .filter(|l| !leaving.contains(&key_of(l)))
            .map(|l| l.tag.as_str())
            .collect();
        let mut p = Self {
            book,
            desired,
            links,
            by_tag: HashMap::new(),
            leaving,
            held,
            actions: Vec::new(),
        };
        p.index_entries(&state.entries);
        p
    }

    /// Fills `by_tag`. Two entries with one tag (a create whose answer was lost): one is
    /// kept, the other deleted.
    fn index_entries(&mut self, entries: &'a [PbxContact]) {
        for e in entries {
            if self.by_tag.contains_key(e.fields.tag.as_str()) {
                self.actions
                    .push(self.delete(&e.fields.tag, Some(e.id), Vec::new()));
            } else {
                self.by_tag.insert(e.fields.tag.as_str(), e);
            }
        }
    }

    fn delete(&self, tag: &str, pbx_id: Option<i64>, unlink: Vec<Key>) -> ContactAction {
        ContactAction::Delete {
            book: self.book.clone(),
            tag: tag.to_string(),
            pbx_id,
            unlink,
        }
    }

    /// Each wanted entry kept, relinked, updated or created, as far as `limit` allows.
    /// Returns the mailboxes with contacts left out, and how many were.
    fn converge(&mut self, limit: usize) -> (BTreeSet<String>, usize) {
        let mut owned = self.by_tag.len();
        let mut overflow = BTreeSet::new();
        let mut dropped = 0usize;
        let mut actions = Vec::new();
        for (tag, (fields, links)) in &self.desired {
            match self.by_tag.get(tag.as_str()) {
                Some(e) => actions.extend(self.change(tag, fields, links, e)),
                None if owned >= limit => {
                    dropped += 1;
                    overflow.extend(links.iter().map(|l| l.mailbox.clone()));
                }
                None => {
                    owned += 1;
                    actions.push(ContactAction::Create {
                        book: self.book.clone(),
                        fields: fields.clone(),
                        links: links.clone(),
                    });
                }
            }
        }
        self.actions.extend(actions);
        (overflow, dropped)
    }

    /// What brings entry `e` in line with `fields` and its contacts, if anything.
    fn change(
        &self,
        tag: &str,
        fields: &ContactFields,
        links: &[LinkKey],
        e: &PbxContact,
    ) -> Option<ContactAction> {
        let book = self.book.clone();
        if e.fields != *fields {
            let (fields, links) = (fields.clone(), links.to_vec());
            return Some(ContactAction::Update {
                book,
                pbx_id: e.id,
                fields,
                links,
            });
        }
        (!self.recorded(tag, links, e)).then(|| ContactAction::Link {
            book,
            pbx_id: e.id,
            tag: tag.to_string(),
            links: links.to_vec(),
        })
    }

    /// Whether the store links every contact of `links` to `e` under `tag`, in its folder.
    fn recorded(&self, tag: &str, links: &[LinkKey], e: &PbxContact) -> bool {
        links.iter().all(|k| {
            self.links
                .get(&link_key(k))
                .is_some_and(|l| l.tag == tag && l.pbx_id == e.id && l.folder_id == k.folder_id)
        })
    }

    fn holds(&self, tag: &str) -> bool {
        self.desired.contains_key(tag) || self.held.contains(tag)
    }

    /// The leaving contacts are unlinked from their old tag's entry, and the entry deleted
    /// when nobody holds it any more.
    fn release(&mut self) {
        let mut by_old_tag: BTreeMap<&str, Vec<Key>> = BTreeMap::new();
        for k in &self.leaving {
            if let Some(l) = self.links.get(k) {
                by_old_tag
                    .entry(l.tag.as_str())
                    .or_default()
                    .push(k.clone());
            }
        }
        let mut actions = Vec::new();
        for (tag, unlink) in by_old_tag {
            actions.push(if self.holds(tag) {
                ContactAction::Unlink {
                    book: self.book.clone(),
                    tag: tag.to_string(),
                    unlink,
                }
            } else {
                let pbx_id = self.by_tag.get(tag).map(|e| e.id);
                self.delete(tag, pbx_id, unlink)
            });
        }
        self.actions.extend(actions);
    }

    /// After a full read of every source: pbxgate's entries nobody holds are leftovers.
    fn remove_leftovers(&mut self) {
        let planned: BTreeSet<&str> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                ContactAction::Delete { tag, .. } => Some(tag.as_str()),
                _ => None,
            })
            .collect();
        let leftovers: Vec<ContactAction> = self
            .by_tag
            .iter()
            .filter(|(tag, _)| !self.holds(tag) && !planned.contains(*tag))
            .map(|(tag, e)| self.delete(tag, Some(e.id), Vec::new()))
            .collect();
        self.actions.extend(leftovers);
    }
}

/// The linked contacts leaving their entry's tag: gone, or now wanted under another tag (e.g.
/// a new e-mail address with `dedupe_by = "email"`).
fn leaving(
    desired: &Desired,
    links: &HashMap<Key, &ContactLink>,
    gone: &BTreeSet<Key>,
) -> BTreeSet<Key> {
    let retagged = desired
        .iter()
        .flat_map(|(tag, (_, ls))| ls.iter().map(move |k| (tag, k)))
        .filter_map(|(tag, k)| {
            let key = link_key(k);
            links.get(&key).filter(|l| l.tag != *tag).map(|_| key)
        });
    gone.iter()
        .filter(|k| links.contains_key(*k))
        .cloned()
        .chain(retagged)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Action;
    use crate::sync::contacts::map::tests::contact;
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
