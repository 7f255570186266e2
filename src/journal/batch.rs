//! Group commit: concurrent [`Commits::decide`] and [`Commits::complete`] calls are written by
//! one thread in shared transactions, so a burst of N writes costs one `fsync`, not N, and no
//! caller waits for the write lock behind another's `fsync`.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Action, Event, Journal, JournalError, Outcome, Recorded, Write, Written};

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;

struct Request {
    write: Write,
    reply: oneshot::Sender<Result<Written, JournalError>>,
}

/// The batching front of [`Journal::decide`] and [`Journal::complete`]. Cheap to clone; the
/// commit thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Commits {
    tx: mpsc::Sender<Request>,
}

impl Commits {
    pub fn new(journal: Journal) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("journal-commit".into())
            .spawn(move || commit_loop(&journal, &rx))
            .map(|_| ())
            .unwrap_or_else(
                |e| tracing::error!(error = %e, "cannot start the journal commit thread"),
            );
        Self { tx }
    }

    /// [`Journal::decide`], sharing the commit with concurrent callers.
    pub async fn decide(&self, key: String, action: Action) -> Result<Recorded, JournalError> {
        match self.write(Write::Decide { key, action }).await? {
            Written::Decided(r) => Ok(r),
            Written::Completed(_) => Err(JournalError::CommitThreadGone),
        }
    }

    /// [`Journal::complete`], sharing the commit with concurrent callers.
    pub async fn complete(&self, key: String, outcome: Outcome) -> Result<Event, JournalError> {
        match self.write(Write::Complete { key, outcome }).await? {
            Written::Completed(r) => r.map(|e| *e),
            Written::Decided(_) => Err(JournalError::CommitThreadGone),
        }
    }

    async fn write(&self, write: Write) -> Result<Written, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { write, reply })
            .map_err(|_| JournalError::CommitThreadGone)?;
        rx.await.map_err(|_| JournalError::CommitThreadGone)?
    }
}

fn commit_loop(journal: &Journal, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let writes: Vec<Write> = batch.iter().map(|r| r.write.clone()).collect();
        match journal.write_all(&writes) {
            Ok(results) => {
                for (r, res) in batch.into_iter().zip(results) {
                    let _ = r.reply.send(Ok(res));
                }
            }
            // One bad entry must not fail the others: fall back to one transaction each.
            Err(_) => {
                for r in batch {
                    let res = journal.write_all(std::slice::from_ref(&r.write));
                    let res = res.and_then(|mut v| v.pop().ok_or(JournalError::CommitThreadGone));
                    let _ = r.reply.send(res);
                }
            }
        }
    }
}
