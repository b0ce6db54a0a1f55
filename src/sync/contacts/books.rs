//! Which phonebooks a run plans (those with news; every one in a full run), and their
//! state in 3CX and the store, read a few books at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::plan::{BookState, plan_book};
use super::read::SourceRead;
use super::{ContactAction, ContactsWorker, Source, unordered};
use crate::pbx::{Book, OWNED_TAG_PREFIX};
use crate::sync::{Mode, SyncError};

impl ContactsWorker {
    async fn book_state(&self, book: &Book) -> Result<BookState, SyncError> {
        let slot = self.pbx_slot().await;
        let entries = self.pbx.contacts(book, OWNED_TAG_PREFIX).await?;
        drop(slot);
        let links = self.store.contact_links(&book.key()).await?;
        Ok(BookState { entries, links })
    }

    fn limit(&self, book: &Book) -> usize {
        match book {
            Book::Company => self.config.max_company_contacts,
            Book::Personal(_) => self.config.max_personal_contacts,
        }
    }

    /// Plans the phonebooks that have news (every one in a full run).
    pub(super) async fn plan_books(
        &self,
        sources: &[Source],
        reads: &HashMap<String, SourceRead>,
        unread: &BTreeSet<String>,
        mode: Mode,
    ) -> Result<(Vec<ContactAction>, BTreeSet<String>), SyncError> {
        let touched = touched(sources, reads, mode);
        let mut reading = Vec::new();
        for (b, _) in &touched {
            reading.push(async move { (b.clone(), self.book_state(b).await) });
        }
        let mut states: HashMap<Book, Result<BookState, SyncError>> =
            unordered(reading).await.into_iter().collect();
        let mut actions = Vec::new();
        let mut overflow = BTreeSet::new();
        for (book, srcs) in &touched {
            let state = match states.remove(book) {
                Some(Ok(s)) => s,
                Some(Err(e)) if e.is_outage() => return Err(e),
                Some(Err(e)) => {
                    actions.push(ContactAction::Skip {
                        item: book.to_string(),
                        mailbox: None,
                        reason: e.to_string(),
                        retry_at: None,
                    });
                    overflow.extend(srcs.iter().map(|s| s.mailbox.clone()));
                    continue;
                }
                None => continue,
            };
            let (a, o) = self.plan_one(book, srcs, reads, unread, &state);
            actions.extend(a);
            overflow.extend(o);
        }
        Ok((actions, overflow))
    }

    /// One book's plan from the reads of its sources; complete when every source of the
    /// book was read, each from scratch.
    fn plan_one(
        &self,
        book: &Book,
        srcs: &[&Source],
        reads: &HashMap<String, SourceRead>,
        unread: &BTreeSet<String>,
        state: &BookState,
    ) -> (Vec<ContactAction>, BTreeSet<String>) {
        let book_reads: Vec<(&Source, &SourceRead)> = srcs
            .iter()
            .filter_map(|s| reads.get(&s.mailbox).map(|r| (*s, r)))
            .collect();
        let complete = srcs.iter().all(|s| !unread.contains(&s.mailbox))
            && book_reads.iter().all(|(_, r)| r.complete());
        let (dedupe, limit) = (self.config.dedupe_by, self.limit(book));
        plan_book(book, &book_reads, state, dedupe, limit, complete)
    }
}

/// The books to plan, with their sources: those with a source read now and, in a delta run,
/// with news from one.
fn touched<'a>(
    sources: &'a [Source],
    reads: &HashMap<String, SourceRead>,
    mode: Mode,
) -> Vec<(Book, Vec<&'a Source>)> {
    let mut books: BTreeMap<Book, Vec<&Source>> = BTreeMap::new();
    for s in sources {
        books.entry(s.book.clone()).or_default().push(s);
    }
    books
        .into_iter()
        .filter(|(_, srcs)| srcs.iter().any(|s| reads.contains_key(&s.mailbox)))
        .filter(|(_, srcs)| {
            mode == Mode::Full
                || srcs
                    .iter()
                    .any(|s| reads.get(&s.mailbox).is_some_and(SourceRead::has_news))
        })
        .collect()
}
