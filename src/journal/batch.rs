//! Group commit for decisions: concurrent [`Decisions::decide`] calls are written by one thread
//! in shared transactions, so a burst of N decisions costs one `fsync`, not N.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Action, Journal, JournalError, Recorded};

/// Most decisions written in one transaction.
const MAX_BATCH: usize = 256;

struct Request {
    key: String,
    action: Action,
    reply: oneshot::Sender<Result<Recorded, JournalError>>,
}

/// The batching front of [`Journal::decide`]. Cheap to clone; the commit thread ends when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Decisions {
    tx: mpsc::Sender<Request>,
}

impl Decisions {
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
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { key, action, reply })
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
        let items: Vec<(String, Action)> = batch
            .iter()
            .map(|r| (r.key.clone(), r.action.clone()))
            .collect();
        match journal.decide_all(&items) {
            Ok(results) => {
                for (r, res) in batch.into_iter().zip(results) {
                    let _ = r.reply.send(Ok(res));
                }
            }
            // One bad entry must not fail the others: fall back to one transaction each.
            Err(_) => {
                for r in batch {
                    let res = journal.decide(&r.key, &r.action);
                    let _ = r.reply.send(res);
                }
            }
        }
    }
}
