//! A run in parts: whole phonebooks, about `PART_SOURCES` mailboxes a part, each read,
//! planned and (by the runner) applied before the next but one is read. A part holds only its
//! own mailboxes' contacts, so memory stays flat however big the company is; the first delta
//! pages of a part still go through `$batch`, 20 folders a call.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ContactAction;
use super::read::SourceRead;
use super::{ContactsWorker, FULL_STATE, Skipped, Source};
use crate::pbx::Book;
use crate::sync::{Mode, Plan, SyncError};

/// Mailboxes read and planned together (a multiple of 10, so that with two folders each the
/// `$batch` calls stay full).
const PART_SOURCES: usize = 50;

/// Where a run in parts stands.
pub(super) enum Step {
    Start,
    Next(Parts),
    Done,
}

/// The parts still to plan.
pub(super) struct Parts {
    now: i64,
    skips: HashMap<String, Skipped>,
    left: std::vec::IntoIter<Vec<Source>>,
}

impl ContactsWorker {
    /// The next part of the plan, and where the run stands after it.
    pub(super) async fn step(
        &self,
        mode: Mode,
        step: Step,
    ) -> Option<(Result<Plan<ContactAction>, SyncError>, Step)> {
        let mut parts = match step {
            Step::Done => return None,
            Step::Next(p) => p,
            Step::Start => match self.start(mode).await {
                Ok(p) => p,
                Err(e) => return Some((Err(e), Step::Done)),
            },
        };
        let sources = parts.left.next()?;
        let last = parts.left.len() == 0;
        match self.plan_part(&sources, &parts.skips, mode).await {
            Ok(mut plan) => {
                if last && mode == Mode::Full {
                    plan.commit
                        .push((FULL_STATE.into(), Some(parts.now.to_string())));
                }
                Some((Ok(plan), Step::Next(parts)))
            }
            Err(e) => Some((Err(e), Step::Done)),
        }
    }

    async fn start(&self, mode: Mode) -> Result<Parts, SyncError> {
        let now = self.clock.now();
        let sources = self.sources().await?;
        let skips = self.skips(mode, now).await?;
        Ok(Parts {
            now,
            skips,
            left: split(sources).into_iter(),
        })
    }

    /// One part's plan: the skips, reads and phonebook plans of `sources`.
    async fn plan_part(
        &self,
        sources: &[Source],
        skips: &HashMap<String, Skipped>,
        mode: Mode,
    ) -> Result<Plan<ContactAction>, SyncError> {
        let mut actions = Vec::new();
        let mut unread = BTreeSet::new();
        let mut to_read = Vec::new();
        for s in sources {
            match skips.get(&s.mailbox) {
                Some(skip) => {
                    unread.insert(s.mailbox.clone());
                    actions.push(skip.action(s));
                }
                None => to_read.push(s),
            }
        }
        let mut reads: HashMap<String, SourceRead> = HashMap::new();
        for (src, r) in self.read_sources(&to_read, mode).await? {
            match r {
                Ok(read) => {
                    reads.insert(src.mailbox.clone(), read);
                }
                Err(a) => {
                    tracing::info!(mailbox = %src.label, reason = %crate::sync::Action::detail(&a), "contacts of a mailbox skipped");
                    unread.insert(src.mailbox.clone());
                    actions.push(a);
                }
            }
        }
        let (book_actions, overflow) = self.plan_books(sources, &reads, &unread, mode).await?;
        actions.extend(book_actions);
        let commit = sources
            .iter()
            .filter(|s| !overflow.contains(&s.mailbox))
            .filter_map(|s| reads.get(&s.mailbox).map(|r| Self::commit_for(s, r)))
            .flatten()
            .collect();
        Ok(Plan {
            mode,
            actions,
            commit,
        })
    }
}

/// The sources in parts of whole phonebooks, about `PART_SOURCES` mailboxes each; at least
/// one part, so that even a run without sources ends with its commit.
fn split(sources: Vec<Source>) -> Vec<Vec<Source>> {
    let mut books: BTreeMap<Book, Vec<Source>> = BTreeMap::new();
    for s in sources {
        books.entry(s.book.clone()).or_default().push(s);
    }
    let mut parts = vec![Vec::new()];
    for (_, srcs) in books {
        if parts.last().is_some_and(|p| p.len() >= PART_SOURCES) {
            parts.push(Vec::new());
        }
        if let Some(p) = parts.last_mut() {
            p.extend(srcs);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(mailbox: &str, book: Book) -> Source {
        Source {
            mailbox: mailbox.into(),
            label: mailbox.into(),
            book,
        }
    }

    #[test]
    fn parts_hold_whole_phonebooks_and_about_fifty_mailboxes() {
        let mut sources = vec![src("a@x", Book::Company), src("b@x", Book::Company)];
        for i in 0..120 {
            sources.push(src(
                &format!("u{i}"),
                Book::Personal(format!("{}", 1000 + i)),
            ));
        }
        let parts = split(sources);
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 22]);
        assert!(parts[0][..2].iter().all(|s| s.book == Book::Company));
        assert_eq!(
            split(Vec::new()).len(),
            1,
            "an empty run still has its commit"
        );
    }
}
