//! Durable action log and outbox, kept in one redb file (`<state_dir>/journal.redb`).
//!
//! The agent records a decided action ([`Journal::decide`]) before it acts (or, for an idempotent
//! act such as a plain CRR stop, while it acts), and the outcome ([`Journal::complete`]) after.
//! Every commit is made with [`redb::Durability::Immediate`], so after a `kill -9` at any point:
//! * an action that was decided but not completed is returned by [`Journal::pending`] and is
//!   re-issued by the caller (stopping a container is idempotent);
//! * an action whose outcome was recorded is reported as [`Recorded::AlreadyDone`] and is never
//!   repeated, even after its event was pruned (completed keys are kept in a separate table for
//!   twice [`Retention::max_age`]);
//! * completing an action removes it from the pending set, appends an [`Event`] with the next
//!   sequence number, and appends a copy to the outbox, all in one write transaction. The outbox is
//!   drained by [`Journal::outbox`] + [`Journal::ack_outbox`] for exactly-once delivery upstream.
//!   A journal with nothing upstream ([`Journal::set_upstream`]) keeps no outbox copies.
//!
//! The agent must never refuse to start because of its own state: a journal file that redb
//! cannot open or that fails its integrity check is moved aside and a fresh one is created
//! ([`OpenReport::moved_aside`]). The only refusals are a state directory that cannot be created
//! or written, a full disk, and a journal locked by another live process ([`JournalError::Locked`]).
//!
//! Writes block on disk I/O (an `fsync` per commit): in async code go through [`Commits`], whose
//! thread shares one commit among concurrent writes, or `spawn_blocking`. Reads
//! ([`Journal::lookup_all`]) never wait for a commit and make no `fsync`.

mod batch;
mod model;
mod precheck;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageError, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use batch::Commits;
pub use model::{
    Action, ContainerOutcome, ContainerRef, Event, KIND_RECREATE_CONTAINER,
    KIND_RESTART_FOR_METADATA_ENV, KIND_STOP_SIDECAR, Outcome, PodInfo, RESULT_FAILED,
    RESULT_SKIPPED, RESULT_STOPPED,
};
use model::{PendingRecord, to_millis};

/// File name of the journal inside the state directory.
pub const FILE_NAME: &str = "journal.redb";

/// redb's page cache; the journal is small (a few MB at the default retention).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Small counters: `last_event_seq`, `last_decision_seq`, `schema`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Decided, not completed: key → JSON [`PendingRecord`].
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// Completed keys: key → (event seq, completion time in unix ms). Outlives the events.
const DONE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("done");
/// Event log: seq → (recording time in unix ms, JSON [`Event`]).
const EVENTS: TableDefinition<u64, (u64, &[u8])> = TableDefinition::new("events");
/// Not yet delivered upstream: seq → JSON [`Event`].
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

const META_LAST_EVENT: &str = "last_event_seq";
const META_LAST_DECISION: &str = "last_decision_seq";
const META_SCHEMA: &str = "schema";
const SCHEMA_VERSION: u64 = 1;

/// How much history the event log keeps. Pending actions and undelivered outbox entries are never
/// pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many events (oldest are pruned first).
    pub max_events: usize,
    /// Prune events older than this. Completed keys are remembered for twice as long.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What [`Journal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The previous journal could not be used; it was renamed to this path, for this reason, and
    /// a fresh journal was started. The caller should log this as an error.
    pub moved_aside: Option<(PathBuf, String)>,
    /// Decided actions that were not completed (to be re-issued).
    pub pending: usize,
    /// Events in the log.
    pub events: usize,
}

/// Result of [`Journal::decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Recorded {
    /// First time this key was decided; recorded with this decision number. Act now.
    New(u64),
    /// Decided earlier and not completed (e.g. before a restart). Re-issue the action.
    Pending,
    /// An outcome is already recorded for this key. Do NOT act again.
    AlreadyDone,
}

/// Result of [`Journal::lookup`].
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Pending(Action),
    Done,
}

/// Sizes of the journal, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub events: u64,
    pub pending: u64,
    pub outbox: u64,
    pub done_keys: u64,
    pub file_bytes: u64,
    pub last_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state directory {}: {what}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal {} is locked: another nodeward process (or another Journal in this process) has it open",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("journal {}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("journal {}: a fresh journal is unusable too: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("moving unusable journal {} aside to {}: {source}", from.display(), to.display())]
    MoveAside {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal {op}: {source}")]
    Storage {
        op: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("journal: encoding {what} for {key:?}: {source}")]
    Encode {
        what: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal: decoding {what} {key:?}: {source}")]
    Decode {
        what: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal: the commit thread is gone")]
    CommitThreadGone,
    #[error("journal: no decided action {key:?} to complete")]
    NotPending { key: String },
    #[error("journal: action {key:?} is already completed")]
    AlreadyCompleted { key: String },
    #[error("journal {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Wrap a redb error with the operation it happened in.
fn storage<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> JournalError {
    move |e| JournalError::Storage {
        op,
        source: e.into(),
    }
}

fn encode<T: Serialize>(what: &'static str, key: &str, v: &T) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(v).map_err(|source| JournalError::Encode {
        what,
        key: key.to_string(),
        source,
    })
}

fn decode<T: DeserializeOwned>(what: &'static str, key: &str, b: &[u8]) -> Result<T, JournalError> {
    serde_json::from_slice(b).map_err(|source| JournalError::Decode {
        what,
        key: key.to_string(),
        source,
    })
}

/// The durable action log. Cheap to clone; all clones share one database. Thread-safe: write
/// transactions are serialised by redb.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// `journal.lock`, flock'ed for the life of the journal.
    _lock: fs::File,
    path: PathBuf,
    retention: Retention,
    last_seq: AtomicU64,
    /// Completions are copied to the outbox.
    upstream: AtomicBool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .field("retention", &self.inner.retention)
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

/// Why a journal file could not be opened.
enum OpenFailure {
    /// Another live `Database` holds the file lock.
    Locked,
    /// Environmental (disk full, read-only file system): a fresh file would not help.
    Fatal(redb::Error),
    /// The file itself is unusable: move it aside.
    Bad(String),
}

fn classify(e: redb::Error) -> OpenFailure {
    match e {
        redb::Error::DatabaseAlreadyOpen => OpenFailure::Locked,
        redb::Error::Io(ref io)
            if matches!(
                io.kind(),
                io::ErrorKind::StorageFull
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            OpenFailure::Fatal(e)
        }
        other => OpenFailure::Bad(other.to_string()),
    }
}

fn classify_db(e: DatabaseError) -> OpenFailure {
    match e {
        // Keep the storage error's io::Error kind visible to `classify`.
        DatabaseError::Storage(StorageError::Io(io)) => classify(redb::Error::Io(io)),
        other => classify(other.into()),
    }
}

fn classify_storage<E: Into<redb::Error>>(e: E) -> OpenFailure {
    match e.into() {
        redb::Error::Io(io) => classify(redb::Error::Io(io)),
        other => classify(other),
    }
}

/// Counters read while opening.
struct Opened {
    db: Database,
    last_seq: u64,
    pending: u64,
    events: u64,
}

/// Open (or create) and verify the database, and make sure every table exists.
fn try_open(path: &Path) -> Result<Opened, OpenFailure> {
    let existed = match fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => return Err(OpenFailure::Bad("not a regular file".into())),
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(classify(e.into())),
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| classify(e.into()))?;
    owner_only(&file).map_err(|e| classify(e.into()))?;
    // Take redb's lock (flock) before looking at the contents, so that a journal in use by a live
    // process is reported as locked and never judged (or moved) on a half-written state. redb
    // locks the same open file again, which succeeds.
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(OpenFailure::Locked),
        Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {}
        Err(fs::TryLockError::Error(e)) => return Err(classify(e.into())),
    }
    let len = file.metadata().map_err(|e| classify(e.into()))?.len();
    // redb would initialise an empty file silently; an empty journal means its contents were
    // lost (e.g. a crash while it was being created, or an outside truncation), so report it.
    if existed && len == 0 {
        return Err(OpenFailure::Bad("file is empty".into()));
    }
    // redb panics on some damaged headers (e.g. truncation); reject those first.
    if let Some(reason) = precheck::header_problem(&file).map_err(|e| classify(e.into()))? {
        return Err(OpenFailure::Bad(reason));
    }
    precheck::force_recovery(&file).map_err(|e| classify(e.into()))?;
    // With the recovery flag set, this verifies the commit slots and every page's checksum and
    // rolls back to the previous commit if the last one is damaged.
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_file(file)
        .map_err(classify_db)?;
    let txn = db.begin_write().map_err(classify_storage)?;
    let counts = init_tables(&txn).map_err(classify_storage)?;
    txn.commit().map_err(classify_storage)?;
    validate(&db)?;
    probe_writes(&db).map_err(classify_storage)?;
    let (last_seq, pending, events) = counts;
    Ok(Opened {
        db,
        last_seq,
        pending,
        events,
    })
}

/// Read every record once: redb verifies page checksums on the way and every stored record must
/// decode. Damage found here moves the file aside instead of failing later, mid-operation.
fn validate(db: &Database) -> Result<(), OpenFailure> {
    fn bad(e: JournalError) -> OpenFailure {
        OpenFailure::Bad(e.to_string())
    }
    let txn = db.begin_read().map_err(classify_storage)?;
    for row in txn
        .open_table(PENDING)
        .map_err(classify_storage)?
        .iter()
        .map_err(classify_storage)?
    {
        let (k, v) = row.map_err(classify_storage)?;
        decode::<PendingRecord>("pending action", k.value(), v.value()).map_err(bad)?;
    }
    for row in txn
        .open_table(EVENTS)
        .map_err(classify_storage)?
        .iter()
        .map_err(classify_storage)?
    {
        let (k, v) = row.map_err(classify_storage)?;
        decode::<Event>("event", &k.value().to_string(), v.value().1).map_err(bad)?;
    }
    for row in txn
        .open_table(OUTBOX)
        .map_err(classify_storage)?
        .iter()
        .map_err(classify_storage)?
    {
        let (k, v) = row.map_err(classify_storage)?;
        decode::<Event>("outbox event", &k.value().to_string(), v.value()).map_err(bad)?;
    }
    for row in txn
        .open_table(DONE)
        .map_err(classify_storage)?
        .iter()
        .map_err(classify_storage)?
    {
        row.map_err(classify_storage)?;
    }
    for row in txn
        .open_table(META)
        .map_err(classify_storage)?
        .iter()
        .map_err(classify_storage)?
    {
        row.map_err(classify_storage)?;
    }
    Ok(())
}

/// A few throw-away commits, so that damage in redb's allocator and free-page state shows up
/// while the crash-loop marker is still in place (redb panics on some of it) rather than at the
/// first real write.
fn probe_writes(db: &Database) -> Result<(), redb::Error> {
    const PROBE: &str = "open_probe";
    for i in 0..3u64 {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            if i % 2 == 0 {
                meta.insert(PROBE, i)?;
            } else {
                meta.remove(PROBE)?;
            }
        }
        txn.commit()?;
    }
    let txn = db.begin_write()?;
    txn.open_table(META)?.remove(PROBE)?;
    txn.commit()?;
    Ok(())
}

/// Create missing tables and return (last event seq, pending count, event count).
fn init_tables(txn: &WriteTransaction) -> Result<(u64, u64, u64), redb::Error> {
    let mut meta = txn.open_table(META)?;
    if meta.get(META_SCHEMA)?.is_none() {
        meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
    }
    let last_seq = meta.get(META_LAST_EVENT)?.map(|v| v.value()).unwrap_or(0);
    let pending = txn.open_table(PENDING)?.len()?;
    txn.open_table(DONE)?;
    let events = txn.open_table(EVENTS)?.len()?;
    txn.open_table(OUTBOX)?;
    Ok((last_seq, pending, events))
}

/// The journal's files are the agent's alone (0600), whatever the umask or an older version made.
fn owner_only(file: &fs::File) -> io::Result<()> {
    if file.metadata()?.permissions().mode() & 0o777 != 0o600 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Create the state directory (0700) if missing, restrict an existing one to 0700 (a hostPath
/// `DirectoryOrCreate` makes it 0755), and check that it is writable.
fn ensure_state_dir(dir: &Path) -> Result<(), JournalError> {
    let err = |what, source| JournalError::StateDir {
        path: dir.to_path_buf(),
        what,
        source,
    };
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o777 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| err("cannot restrict to 0700", e))?;
            }
        }
        Ok(_) => {
            return Err(err(
                "not a directory",
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err("cannot create", e))?,
        Err(e) => return Err(err("cannot stat", e)),
    }
    rustix::fs::access(
        dir,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| err("not writable", e.into()))
}

/// Lock file next to the journal, held while a [`Journal`] is open.
const LOCK_FILE: &str = "journal.lock";
/// Present while an open attempt is in progress; holds the number of attempts that did not return.
const OPENING_MARKER: &str = "journal.redb.opening";
/// Consecutive open attempts that may die before the journal is moved aside. More than one, so
/// that a single unrelated `kill -9` during an open does not discard a good journal.
const CRASHED_OPENS_BEFORE_MOVE_ASIDE: u32 = 2;

fn take_lock(dir: &Path, journal: &Path) -> Result<fs::File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| JournalError::Io {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    owner_only(&file).map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: journal.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => Ok(file),
        Err(fs::TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// Number of open attempts that did not return (0 without a marker; 1 if it is unreadable).
fn read_marker(marker: &Path) -> u32 {
    match fs::read_to_string(marker) {
        Ok(s) => s.trim().parse().unwrap_or(1),
        Err(_) => 0,
    }
}

fn sync_dir(dir: &Path) {
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "fsync of state directory failed");
    }
}

fn write_marker(marker: &Path, dir: &Path, attempts: u32) -> Result<(), JournalError> {
    let io_err = |source| JournalError::Io {
        path: marker.to_path_buf(),
        source,
    };
    let mut f = fs::File::create(marker).map_err(io_err)?;
    owner_only(&f).map_err(io_err)?;
    io::Write::write_all(&mut f, format!("{attempts}\n").as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    sync_dir(dir);
    Ok(())
}

fn remove_marker(marker: &Path, dir: &Path) -> Result<(), JournalError> {
    match fs::remove_file(marker) {
        Ok(()) => {
            sync_dir(dir);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(JournalError::Io {
            path: marker.to_path_buf(),
            source,
        }),
    }
}

/// Rename an unusable journal to `journal.redb.corrupt-<unix-ts>` (with a `.N` suffix if that
/// name is taken) and make the rename durable.
fn move_aside(path: &Path, dir: &Path) -> Result<PathBuf, JournalError> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{FILE_NAME}.corrupt-{ts}");
    let mut to = dir.join(&base);
    let mut n = 1;
    while fs::symlink_metadata(&to).is_ok() {
        to = dir.join(format!("{base}.{n}"));
        n += 1;
    }
    fs::rename(path, &to).map_err(|source| JournalError::MoveAside {
        from: path.to_path_buf(),
        to: to.clone(),
        source,
    })?;
    sync_dir(dir);
    Ok(to)
}

/// One write of a batch ([`Journal::write_all`]).
#[derive(Clone, Debug)]
pub enum Write {
    Decide { key: String, action: Action },
    Complete { key: String, outcome: Outcome },
}

/// What one [`Write`] did.
#[derive(Debug)]
pub enum Written {
    Decided(Recorded),
    /// The stored event, or why the key could not be completed.
    Completed(Result<Box<Event>, JournalError>),
}

/// The tables of one write transaction, with the sequence counters it advances.
struct Writer<'t> {
    done: redb::Table<'t, &'static str, (u64, u64)>,
    pending: redb::Table<'t, &'static str, &'static [u8]>,
    events: redb::Table<'t, u64, (u64, &'static [u8])>,
    /// `None`: nothing upstream, no outbox copies.
    outbox: Option<redb::Table<'t, u64, &'static [u8]>>,
    meta: redb::Table<'t, &'static str, u64>,
    last_decision: u64,
    last_event: u64,
    changed: bool,
}

impl<'t> Writer<'t> {
    fn open(txn: &'t WriteTransaction, upstream: bool) -> Result<Self, JournalError> {
        const OP: &str = "write";
        let meta = txn.open_table(META).map_err(storage(OP))?;
        let counter = |key| -> Result<u64, JournalError> {
            Ok(meta
                .get(key)
                .map_err(storage(OP))?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let (last_decision, last_event) = (counter(META_LAST_DECISION)?, counter(META_LAST_EVENT)?);
        Ok(Self {
            done: txn.open_table(DONE).map_err(storage(OP))?,
            pending: txn.open_table(PENDING).map_err(storage(OP))?,
            events: txn.open_table(EVENTS).map_err(storage(OP))?,
            outbox: if upstream {
                Some(txn.open_table(OUTBOX).map_err(storage(OP))?)
            } else {
                None
            },
            meta,
            last_decision,
            last_event,
            changed: false,
        })
    }

    fn decide(&mut self, key: &str, action: &Action) -> Result<Recorded, JournalError> {
        const OP: &str = "decide";
        if self.done.get(key).map_err(storage(OP))?.is_some() {
            return Ok(Recorded::AlreadyDone);
        }
        if self.pending.get(key).map_err(storage(OP))?.is_some() {
            return Ok(Recorded::Pending);
        }
        let record = PendingRecord {
            decision: self.last_decision + 1,
            action: action.clone(),
        };
        let bytes = encode("action", key, &record)?;
        self.pending
            .insert(key, bytes.as_slice())
            .map_err(storage(OP))?;
        self.last_decision = record.decision;
        self.changed = true;
        Ok(Recorded::New(record.decision))
    }

    /// `Ok(Err(_))`: the key is not pending (nothing written).
    fn complete(
        &mut self,
        key: &str,
        outcome: &Outcome,
    ) -> Result<Result<Event, JournalError>, JournalError> {
        const OP: &str = "complete";
        let record: PendingRecord = match self.pending.get(key).map_err(storage(OP))? {
            Some(v) => decode("pending action", key, v.value())?,
            None => {
                let known = self.done.get(key).map_err(storage(OP))?.is_some();
                return Ok(Err(if known {
                    JournalError::AlreadyCompleted { key: key.into() }
                } else {
                    JournalError::NotPending { key: key.into() }
                }));
            }
        };
        self.pending.remove(key).map_err(storage(OP))?;
        let seq = self.last_event + 1;
        let event = Event {
            seq,
            key: key.to_string(),
            action: record.action,
            outcome: outcome.clone(),
        };
        let bytes = encode("event", key, &event)?;
        // Return the event as stored (times rounded to ms), equal to what outbox() returns.
        let event: Event = decode("event", key, &bytes)?;
        let now = to_millis(SystemTime::now());
        self.events
            .insert(seq, (now, bytes.as_slice()))
            .map_err(storage(OP))?;
        if let Some(outbox) = &mut self.outbox {
            outbox.insert(seq, bytes.as_slice()).map_err(storage(OP))?;
        }
        self.done.insert(key, (seq, now)).map_err(storage(OP))?;
        self.last_event = seq;
        self.changed = true;
        Ok(Ok(event))
    }

    /// Store the advanced counters.
    fn close(&mut self) -> Result<(), JournalError> {
        const OP: &str = "write";
        if self.changed {
            self.meta
                .insert(META_LAST_DECISION, self.last_decision)
                .map_err(storage(OP))?;
            self.meta
                .insert(META_LAST_EVENT, self.last_event)
                .map_err(storage(OP))?;
        }
        Ok(())
    }
}

impl Journal {
    /// Open or create `<state_dir>/journal.redb` (creating `state_dir` with mode 0700 if missing).
    ///
    /// A journal file that cannot be opened or fails its integrity check (garbage, truncated,
    /// empty, an unknown format version) is renamed to `journal.redb.corrupt-<unix-ts>` and a
    /// fresh journal is started; [`OpenReport::moved_aside`] says so. Errors are returned only for
    /// a state directory that cannot be created or written, a full or read-only disk, and
    /// [`JournalError::Locked`] when another live process has the journal open.
    pub fn open(
        state_dir: &Path,
        retention: Retention,
    ) -> Result<(Journal, OpenReport), JournalError> {
        ensure_state_dir(state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let lock = take_lock(state_dir, &path)?;
        let marker = state_dir.join(OPENING_MARKER);
        let mut moved_aside = None;

        // redb panics (which aborts a release build) on some damaged files. Each open attempt is
        // announced in a marker file that is removed when the attempt returns; if attempts kept
        // dying, the file is moved aside so that the agent does not crash-loop on it.
        let crashed = read_marker(&marker);
        if crashed >= CRASHED_OPENS_BEFORE_MOVE_ASIDE && fs::symlink_metadata(&path).is_ok() {
            let to = move_aside(&path, state_dir)?;
            moved_aside = Some((
                to,
                format!("the last {crashed} attempts to open it did not return (crashed)"),
            ));
        }
        write_marker(&marker, state_dir, crashed.saturating_add(1))?;
        let result = Self::open_file(&path, state_dir);
        remove_marker(&marker, state_dir)?;
        let (opened, moved) = result?;
        if moved.is_some() {
            moved_aside = moved;
        }

        let report = OpenReport {
            moved_aside,
            pending: usize::try_from(opened.pending).unwrap_or(usize::MAX),
            events: usize::try_from(opened.events).unwrap_or(usize::MAX),
        };
        let journal = Journal {
            inner: Arc::new(Inner {
                db: opened.db,
                _lock: lock,
                path,
                retention,
                last_seq: AtomicU64::new(opened.last_seq),
                upstream: AtomicBool::new(true),
            }),
        };
        Ok((journal, report))
    }

    /// Open the journal file, moving it aside once if it is unusable.
    fn open_file(
        path: &Path,
        state_dir: &Path,
    ) -> Result<(Opened, Option<(PathBuf, String)>), JournalError> {
        let fail = |f: OpenFailure, path: &Path| match f {
            OpenFailure::Locked => JournalError::Locked {
                path: path.to_path_buf(),
            },
            OpenFailure::Fatal(source) => JournalError::Open {
                path: path.to_path_buf(),
                source,
            },
            OpenFailure::Bad(reason) => JournalError::Unusable {
                path: path.to_path_buf(),
                reason,
            },
        };
        match try_open(path) {
            Ok(o) => Ok((o, None)),
            Err(OpenFailure::Bad(reason)) => {
                let to = move_aside(path, state_dir)?;
                let opened = try_open(path).map_err(|f| fail(f, path))?;
                Ok((opened, Some((to, reason))))
            }
            Err(f) => Err(fail(f, path)),
        }
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn retention(&self) -> Retention {
        self.inner.retention
    }

    fn begin_write(&self, op: &'static str) -> Result<WriteTransaction, JournalError> {
        let mut txn = self.inner.db.begin_write().map_err(storage(op))?;
        txn.set_durability(Durability::Immediate)
            .map_err(storage(op))?;
        Ok(txn)
    }

    /// Record a decided action before acting on it. `key` identifies the action idempotently
    /// (e.g. `stop-sidecar/<container-id>`).
    ///
    /// * [`Recorded::New`]: not known before; now pending. Act.
    /// * [`Recorded::Pending`]: decided earlier, not completed. Re-issue the action.
    /// * [`Recorded::AlreadyDone`]: an outcome is recorded. Do not act again.
    ///
    /// For a known key, the stored action is kept and `action` is ignored.
    pub fn decide(&self, key: &str, action: &Action) -> Result<Recorded, JournalError> {
        self.write_one(|w| w.decide(key, action))
    }

    /// Record the outcome of a pending action. In one transaction: the action leaves the pending
    /// set, an [`Event`] with the next sequence number is appended to the log, a copy goes to the
    /// outbox (unless [`set_upstream`](Self::set_upstream)`(false)`), and the key is remembered as
    /// done.
    ///
    /// Fails with [`JournalError::NotPending`] for a key never decided, and with
    /// [`JournalError::AlreadyCompleted`] for one completed before.
    pub fn complete(&self, key: &str, outcome: &Outcome) -> Result<Event, JournalError> {
        self.write_one(|w| w.complete(key, outcome))?
    }

    /// Many [`decide`](Self::decide)s and [`complete`](Self::complete)s in one transaction, in
    /// order: one `fsync` for the lot. Results are in input order; a completion's own refusal
    /// (not pending) is its result, any other failure fails the whole transaction.
    pub fn write_all(&self, writes: &[Write]) -> Result<Vec<Written>, JournalError> {
        self.write_one(|w| {
            writes
                .iter()
                .map(|write| match write {
                    Write::Decide { key, action } => w.decide(key, action).map(Written::Decided),
                    Write::Complete { key, outcome } => w
                        .complete(key, outcome)
                        .map(|r| Written::Completed(r.map(Box::new))),
                })
                .collect()
        })
    }

    /// Run `f` in a write transaction, committed when it changed something.
    fn write_one<T>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        const OP: &str = "write";
        let txn = self.begin_write(OP)?;
        let (out, changed, last_event) = {
            let mut w = Writer::open(&txn, self.inner.upstream.load(Ordering::Acquire))?;
            let out = f(&mut w)?;
            w.close()?;
            (out, w.changed, w.last_event)
        };
        if changed {
            txn.commit().map_err(storage(OP))?;
            self.inner.last_seq.fetch_max(last_event, Ordering::AcqRel);
        } else {
            txn.abort().map_err(storage(OP))?;
        }
        Ok(out)
    }

    /// Whether completions are copied to the outbox for delivery upstream (the default). An agent
    /// with nothing upstream (standalone) turns it off: no outbox to drain, no `fsync` to ack.
    pub fn set_upstream(&self, upstream: bool) {
        self.inner.upstream.store(upstream, Ordering::Release);
    }

    /// Decided actions without an outcome, oldest decision first.
    pub fn pending(&self) -> Result<Vec<(String, Action)>, JournalError> {
        const OP: &str = "pending";
        let txn = self.inner.db.begin_read().map_err(storage(OP))?;
        let table = txn.open_table(PENDING).map_err(storage(OP))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage(OP))? {
            let (k, v) = row.map_err(storage(OP))?;
            let key = k.value().to_string();
            let record: PendingRecord = decode("pending action", &key, v.value())?;
            out.push((record.decision, key, record.action));
        }
        out.sort_by_key(|(decision, _, _)| *decision);
        Ok(out.into_iter().map(|(_, k, a)| (k, a)).collect())
    }

    /// Where `key` stands: decided and not completed (with its action), completed, or unknown.
    pub fn lookup(&self, key: &str) -> Result<Option<Lookup>, JournalError> {
        Ok(self.lookup_all(&[key])?.pop().flatten())
    }

    /// [`lookup`](Self::lookup) for several keys in one read transaction. Reads never wait for
    /// a commit and make no `fsync`; they are cheap enough for async code.
    pub fn lookup_all(&self, keys: &[&str]) -> Result<Vec<Option<Lookup>>, JournalError> {
        const OP: &str = "lookup";
        let txn = self.inner.db.begin_read().map_err(storage(OP))?;
        let done = txn.open_table(DONE).map_err(storage(OP))?;
        let pending = txn.open_table(PENDING).map_err(storage(OP))?;
        keys.iter()
            .map(|&key| {
                if done.get(key).map_err(storage(OP))?.is_some() {
                    return Ok(Some(Lookup::Done));
                }
                match pending.get(key).map_err(storage(OP))? {
                    Some(v) => {
                        let record: PendingRecord = decode("pending action", key, v.value())?;
                        Ok(Some(Lookup::Pending(record.action)))
                    }
                    None => Ok(None),
                }
            })
            .collect()
    }

    /// An outcome is recorded for `key` (within the done-key retention of 2 × `max_age`).
    pub fn is_done(&self, key: &str) -> Result<bool, JournalError> {
        const OP: &str = "is_done";
        let txn = self.inner.db.begin_read().map_err(storage(OP))?;
        let table = txn.open_table(DONE).map_err(storage(OP))?;
        Ok(table.get(key).map_err(storage(OP))?.is_some())
    }

    /// Up to `limit` events with `seq > after_seq`, in sequence order.
    pub fn events_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, JournalError> {
        const OP: &str = "events_since";
        let Some(start) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.inner.db.begin_read().map_err(storage(OP))?;
        let table = txn.open_table(EVENTS).map_err(storage(OP))?;
        let mut out = Vec::new();
        for row in table.range(start..).map_err(storage(OP))?.take(limit) {
            let (k, v) = row.map_err(storage(OP))?;
            let (_, bytes) = v.value();
            out.push(decode("event", &k.value().to_string(), bytes)?);
        }
        Ok(out)
    }

    /// Sequence number of the last recorded event (0 if none ever was).
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// Up to `limit` undelivered events, oldest first.
    pub fn outbox(&self, limit: usize) -> Result<Vec<Event>, JournalError> {
        const OP: &str = "outbox";
        let txn = self.inner.db.begin_read().map_err(storage(OP))?;
        let table = txn.open_table(OUTBOX).map_err(storage(OP))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage(OP))?.take(limit) {
            let (k, v) = row.map_err(storage(OP))?;
            out.push(decode("outbox event", &k.value().to_string(), v.value())?);
        }
        Ok(out)
    }

    /// Remove delivered events from the outbox. Unknown sequence numbers are ignored.
    pub fn ack_outbox(&self, seqs: &[u64]) -> Result<(), JournalError> {
        const OP: &str = "ack_outbox";
        if seqs.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write(OP)?;
        {
            let mut table = txn.open_table(OUTBOX).map_err(storage(OP))?;
            for seq in seqs {
                table.remove(*seq).map_err(storage(OP))?;
            }
        }
        txn.commit().map_err(storage(OP))
    }

    /// Table sizes and the file size.
    pub fn stats(&self) -> Result<JournalStats, JournalError> {
        const OP: &str = "stats";
        let txn = self.inner.db.begin_read().map_err(storage(OP))?;
        let stats = JournalStats {
            events: txn
                .open_table(EVENTS)
                .map_err(storage(OP))?
                .len()
                .map_err(storage(OP))?,
            pending: txn
                .open_table(PENDING)
                .map_err(storage(OP))?
                .len()
                .map_err(storage(OP))?,
            outbox: txn
                .open_table(OUTBOX)
                .map_err(storage(OP))?
                .len()
                .map_err(storage(OP))?,
            done_keys: txn
                .open_table(DONE)
                .map_err(storage(OP))?
                .len()
                .map_err(storage(OP))?,
            file_bytes: fs::metadata(&self.inner.path)
                .map_err(|source| JournalError::Io {
                    path: self.inner.path.clone(),
                    source,
                })?
                .len(),
            last_seq: self.last_seq(),
        };
        Ok(stats)
    }

    /// Apply the retention: drop the oldest events beyond `max_events` and events recorded more
    /// than `max_age` before `now`; forget completed keys older than 2 × `max_age`. Pending
    /// actions and outbox entries are never dropped. Returns the number of events dropped.
    pub fn prune(&self, now: SystemTime) -> Result<usize, JournalError> {
        const OP: &str = "prune";
        let Retention {
            max_events,
            max_age,
        } = self.inner.retention;
        let cutoff = |age: Duration| now.checked_sub(age).map(to_millis).unwrap_or(0);
        let event_cutoff = cutoff(max_age);
        let done_cutoff = cutoff(max_age.saturating_mul(2));

        let txn = self.begin_write(OP)?;
        let (dropped, forgotten) = {
            let mut events = txn.open_table(EVENTS).map_err(storage(OP))?;
            let len = events.len().map_err(storage(OP))?;
            let excess = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .saturating_sub(max_events);
            let mut dropped = 0usize;
            loop {
                let first = events
                    .first()
                    .map_err(storage(OP))?
                    .map(|(k, v)| (k.value(), v.value().0));
                let Some((seq, recorded)) = first else { break };
                if dropped < excess || recorded < event_cutoff {
                    events.remove(seq).map_err(storage(OP))?;
                    dropped += 1;
                } else {
                    break;
                }
            }

            let mut done = txn.open_table(DONE).map_err(storage(OP))?;
            let before = done.len().map_err(storage(OP))?;
            done.retain(|_, (_, completed)| completed >= done_cutoff)
                .map_err(storage(OP))?;
            let forgotten = before.saturating_sub(done.len().map_err(storage(OP))?);
            (dropped, forgotten)
        };
        if dropped == 0 && forgotten == 0 {
            txn.abort().map_err(storage(OP))?;
        } else {
            txn.commit().map_err(storage(OP))?;
        }
        Ok(dropped)
    }
}
