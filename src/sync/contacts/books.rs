//! Which phonebooks a run plans (those with news; every one in a full run), and their
//! state in 3CX and the store, read a few books at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::StreamExt;

use super::plan::{BookState, plan_book};
use super::read::SourceRead;
use super::{ContactAction, ContactsWorker, PARALLEL, Source};
use crate::pbx::{Book, OWNED_TAG_PREFIX};
use crate::sync::{Mode, SyncError};

impl ContactsWorker {
    async fn book_state(&self, book: &Book) -> Result<BookState, SyncError> {
        let entries = self.pbx.contacts(book, OWNED_TAG_PREFIX).await?;
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
        let mut books: BTreeMap<Book, Vec<&Source>> = BTreeMap::new();
        for s in sources {
            books.entry(s.book.clone()).or_default().push(s);
        }
        let touched: Vec<(Book, Vec<&Source>)> = books
            .into_iter()
            .filter(|(_, srcs)| srcs.iter().any(|s| reads.contains_key(&s.mailbox)))
            .filter(|(_, srcs)| {
                mode == Mode::Full
                    || srcs
                        .iter()
                        .any(|s| reads.get(&s.mailbox).is_some_and(SourceRead::has_news))
            })
            .collect();
        let mut reading = Vec::new();
        for (b, _) in &touched {
            reading.push(async move { (b.clone(), self.book_state(b).await) });
        }
        let states = futures_util::stream::iter(reading)
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await;
        let mut states: HashMap<Book, Result<BookState, SyncError>> = states.into_iter().collect();
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
            let book_reads: Vec<(&Source, &SourceRead)> = srcs
                .iter()
                .filter_map(|s| reads.get(&s.mailbox).map(|r| (*s, r)))
                .collect();
            let complete = srcs.iter().all(|s| !unread.contains(&s.mailbox))
                && book_reads.iter().all(|(_, r)| r.complete());
            let (a, o) = plan_book(
                book,
                &book_reads,
                &state,
                self.config.dedupe_by,
                self.limit(book),
                complete,
            );
            actions.extend(a);
            overflow.extend(o);
        }
        Ok((actions, overflow))
    }
}
