//! [`MailStore`] on sled, made durable by a write-ahead journal.
//!
//! All data sits in one tree so each change is one atomic batch (see [`super::keys`]).
//! Read-modify-write changes (uid allocation, reference counts) run under one writer mutex:
//! they take microseconds in memory, so a mutex is cheaper than sled transactions that would
//! conflict and retry when twenty sessions deliver to the same INBOX. Durability is separate:
//! each change set is also queued in the [`super::journal`], and [`MailStore::sync`] writes
//! and `fdatasync`s everything queued so far; sessions queued behind a running flush find their
//! change sets already covered when it ends (group commit).

mod directory;
mod kv;
mod mailboxes;
mod messages;
mod queue;

use super::journal::{self, BodyPtr, Journal, WriteSet};
use super::keys::{self, u64_value};
use super::*;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The store; a handle on shared internals so the checkpoint task can hold them weakly
/// (dropping the store must release sled's file lock).
pub struct SledStore {
    inner: Arc<Inner>,
}

impl std::ops::Deref for SledStore {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

pub struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    kv: sled::Tree,
    /// `kv_set_large` values: per key a head (chunk count, length) and its chunks.
    large: sled::Tree,
    /// Serialises read-modify-write change sets; also orders them in the journal.
    writer: Mutex<()>,
    /// Async writers queue here before `writer` ([`MailStore::write_turn`]).
    turn: tokio::sync::Mutex<()>,
    /// Number of the last change set applied.
    seq: AtomicU64,
    journal: Journal,
    /// Change notifications per mailbox (only for mailboxes someone watches).
    watchers: super::locks::Watchers,
    records: RecordCache,
    /// A change set failed part-way in sled (its journal record is whole): from then on no
    /// checkpoint or `applied` mark moves past it, so the next start replays it.
    sled_failed: std::sync::atomic::AtomicBool,
    /// POP3 maildrop locks (one process owns a sled store).
    maildrops: super::locks::Maildrops,
    /// [`MailStore::exclusive`] locks.
    names: Arc<super::locks::LocalNames>,
    /// When (unix seconds) the checkpoint task next looks for segments to compact.
    compact_at: AtomicU64,
}

/// The small records every delivery reads — accounts, domains, aliases, mailbox names and
/// mailbox records (key tags in [`CACHED_TAGS`]) — kept in memory, absent ones too.
/// Read-through, and written through by [`Inner::apply_with`], the only writer of the tree
/// after the journal's replay at open (the cache starts empty after it). Six sled lookups
/// per delivery cost ~3 µs each under load; these are four of them.
///
/// A reader that missed inserts what it read only if no change set was applied meanwhile
/// (`generation`), so a value read just before a write can never overwrite the written one.
/// Bounded: past [`MAX_CACHED`] entries it starts over.
#[derive(Default)]
struct RecordCache(Mutex<Records>);

#[derive(Default)]
struct Records {
    /// Change sets applied since open.
    generation: u64,
    values: std::collections::HashMap<Vec<u8>, Option<sled::IVec>>,
}

const CACHED_TAGS: [u8; 5] = [
    keys::ACCOUNT,
    keys::DOMAIN,
    keys::ALIAS,
    keys::MAILBOX_NAME,
    keys::MAILBOX,
];
const MAX_CACHED: usize = 100_000;

fn cached(key: &[u8]) -> bool {
    key.first().is_some_and(|t| CACHED_TAGS.contains(t))
}

impl Records {
    fn put(&mut self, key: Vec<u8>, value: Option<sled::IVec>) {
        if self.values.len() >= MAX_CACHED {
            self.values.clear();
        }
        self.values.insert(key, value);
    }
}

impl RecordCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value, or the generation to read the tree under.
    fn get(&self, key: &[u8]) -> std::result::Result<Option<sled::IVec>, u64> {
        let c = self.lock();
        c.values.get(key).cloned().ok_or(c.generation)
    }

    fn fill(&self, key: &[u8], value: &Option<sled::IVec>, generation: u64) {
        let mut c = self.lock();
        if c.generation == generation {
            c.put(key.to_vec(), value.clone());
        }
    }

    /// After a change set: its cached keys take their new values (`None`: forget all).
    fn written(&self, updates: Option<Vec<(Vec<u8>, Option<sled::IVec>)>>) {
        let mut c = self.lock();
        c.generation += 1;
        match updates {
            Some(u) => u.into_iter().for_each(|(k, v)| c.put(k, v)),
            None => c.values.clear(),
        }
    }
}

/// How often the journal is checkpointed into sled (and its old segments deleted).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Backend(format!("corrupt {what} record: {e}")))
}

impl SledStore {
    /// Opens (or creates) the store in `path`. Fails if another process holds it.
    pub fn open(path: &Path, cache_mb: u64) -> Result<SledStore> {
        Self::open_with(path, cache_mb, true)
    }

    /// [`open`](Self::open), with or without the checkpoint task (tests that count what a
    /// reopening replays must not have a checkpoint wake between their steps).
    fn open_with(path: &Path, cache_mb: u64, checkpoint_task: bool) -> Result<SledStore> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb << 20)
            // The journal makes acknowledged data durable; sled's background flush and our
            // checkpoints only let old journal segments go.
            .flush_every_ms(Some(1000))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => StoreError::Backend(format!(
                    "{} is locked by another process (is a server running without its admin socket?)",
                    path.display()
                )),
                e => StoreError::from(e),
            })?;
        let tree = db.open_tree("mail")?;
        match tree.get(keys::version())? {
            None => {
                tree.insert(keys::version(), &keys::SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) if u64_value(&v) == keys::SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StoreError::Backend(format!(
                    "store layout version {} is not the supported {}",
                    u64_value(&v),
                    keys::SCHEMA_VERSION
                )));
            }
        }
        let journal_dir = path.with_extension("journal");
        let (journal, last) = Journal::open(&journal_dir, &db, &tree)
            .map_err(|e| StoreError::Backend(format!("journal {}: {e}", journal_dir.display())))?;
        let kv = db.open_tree("kv")?;
        let large = db.open_tree("kv-large")?;
        let inner = Arc::new(Inner {
            db,
            tree,
            kv,
            large,
            writer: Mutex::new(()),
            turn: tokio::sync::Mutex::new(()),
            seq: AtomicU64::new(last),
            journal,
            watchers: Default::default(),
            records: RecordCache::default(),
            sled_failed: Default::default(),
            compact_at: AtomicU64::new(0),
            maildrops: Default::default(),
            names: Default::default(),
        });
        let store = SledStore { inner };
        store.remove_lost_bodies()?;
        if let (true, Ok(rt)) = (checkpoint_task, tokio::runtime::Handle::try_current()) {
            rt.spawn(checkpoints(Arc::downgrade(&store.inner)));
        }
        Ok(store)
    }

    /// Removes the messages and queue entries whose bodies the journal lost in a power cut
    /// ([`Journal::lost`]): never acknowledged, but sled may have kept them, so they would
    /// be listed and fail to be read. Removed as an expunge, so IMAP clients that saw one
    /// before the cut hear that it went; the bodies go with their last reference.
    fn remove_lost_bodies(&self) -> Result<()> {
        let lost: std::collections::HashSet<BlobId> = self.journal.lost().iter().copied().collect();
        if lost.is_empty() {
            return Ok(());
        }
        let mut messages: std::collections::BTreeMap<MailboxId, Vec<u32>> = Default::default();
        for item in self.tree.scan_prefix([keys::MESSAGE]) {
            let (k, v) = item?;
            if let (Some(mailbox), Some(uid), Some(meta)) = (
                keys::mailbox_of_message_key(&k),
                keys::uid_of_message_key(&k),
                MessageMeta::decode(&v),
            ) && lost.contains(&meta.blob)
            {
                messages.entry(mailbox).or_default().push(uid);
            }
        }
        let queued: Vec<u64> = self
            .queued()?
            .into_iter()
            .filter(|q| lost.contains(&q.blob))
            .map(|q| q.id)
            .collect();
        // A repair that fails leaves those entries as they were (unreadable), not the store
        // closed: the rest of the mail is served, and the next start tries again.
        let mut removed = 0;
        for (mailbox, uids) in &messages {
            match self.expunge(*mailbox, uids) {
                Ok(gone) => removed += gone.len(),
                Err(e) => tracing::error!("journal: removing mailbox {mailbox}'s messages with lost bodies: {e}"),
            }
        }
        let mut dequeued = 0;
        for id in &queued {
            match self.remove_queued(*id) {
                Ok(_) => dequeued += 1,
                Err(e) => tracing::error!("journal: removing queued message {id} with a lost body: {e}"),
            }
        }
        tracing::error!(
            "journal: removed {removed} messages and {dequeued} queued messages whose bodies a power cut took (never acknowledged)"
        );
        Ok(())
    }

    /// Makes all writes durable without a runtime (the CLI's direct mode, tests).
    pub fn flush_blocking(&self) -> Result<()> {
        {
            // No checkpoint task without a runtime: mark what sled holds, so the next open
            // has nothing to replay after a clean run.
            let _w = self.lock();
            if !self.sled_failed.load(Ordering::SeqCst) {
                journal::set_applied(&self.tree, self.seq.load(Ordering::SeqCst))?;
            }
        }
        self.journal
            .sync_blocking(self.journal.written())
            .map_err(|e| StoreError::Backend(format!("journal: {e}")))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave a half-applied batch (batches are
        // atomic), so a poisoned lock is safe to keep using.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a change set (caller holds the writer lock): journal first, then sled, with
    /// the pointers to any bodies it carries. `released` are bodies that lost their last
    /// reference in it.
    fn apply_with(&self, ws: WriteSet, released: Vec<BodyPtr>) -> Result<()> {
        self.apply_as(ws, released, false)
    }

    /// [`Inner::apply_with`]; `durable_first`: the journal record is flushed before sled
    /// hears of it (sled flushes itself every second, and must never point at bytes a power
    /// cut could take back while the old copy of an acknowledged body is deleted).
    fn apply_as(&self, ws: WriteSet, released: Vec<BodyPtr>, durable_first: bool) -> Result<()> {
        let seq = self.seq.load(Ordering::SeqCst) + 1;
        let ptrs = self.journal.append(seq, &ws).map_err(Inner::io)?;
        // From here the change set is in the journal: a failed sled apply is re-done by replay.
        self.seq.store(seq, Ordering::SeqCst);
        if durable_first {
            // A failed flush stops the journal (nothing more is acknowledged); the next
            // start replays the record. Not `sync_blocking`: it waits for the async flush
            // leader, which may wait for a runtime worker, which may wait for our lock (the
            // soak deadlocked so).
            self.journal.sync_now().map_err(Inner::io)?;
        }
        let mut ops = ws.batch;
        // Body pointers first, then the records that refer to them.
        for (id, ptr) in ptrs.into_iter().rev() {
            ops.insert(0, (keys::blob(&id), Some(ptr.encode().to_vec())));
        }
        let updates: Vec<_> = ops
            .iter()
            .filter(|(k, _)| cached(k))
            .map(|(k, v)| (k.clone(), v.as_deref().map(sled::IVec::from)))
            .collect();
        let applied = journal::apply_ops(&self.tree, ops);
        // Half-applied (sled failed): forget everything; replay at the next open completes it.
        self.records.written(applied.is_ok().then_some(updates));
        if applied.is_err() {
            self.sled_failed.store(true, Ordering::SeqCst);
        }
        applied?;
        for p in &released {
            self.journal.release(p);
        }
        Ok(())
    }

    fn apply(&self, batch: WriteSet) -> Result<()> {
        self.apply_with(batch, Vec::new())
    }

    /// `tree.get`, through [`RecordCache`] for the cached kinds of record.
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        if !cached(key) {
            return Ok(self.tree.get(key)?);
        }
        match self.records.get(key) {
            Ok(v) => Ok(v),
            Err(generation) => {
                let v = self.tree.get(key)?;
                self.records.fill(key, &v, generation);
                Ok(v)
            }
        }
    }

    fn io(e: std::io::Error) -> StoreError {
        StoreError::io("journal", &e)
    }

    /// Reserves `n` consecutive values of a counter in `batch`; returns the first.
    fn reserve_ids(&self, batch: &mut WriteSet, name: &str, n: u64) -> Result<u64> {
        let k = keys::counter(name);
        let first = self.tree.get(&k)?.map(|v| u64_value(&v)).unwrap_or(0) + 1;
        batch.insert(k, (first + n - 1).to_be_bytes());
        Ok(first)
    }

    fn mailbox_meta(&self, id: MailboxId) -> Result<Option<MailboxMeta>> {
        match self.get(&keys::mailbox(id))? {
            Some(v) => Ok(Some(from_json("mailbox", &v)?)),
            None => Ok(None),
        }
    }

    fn existing_mailbox(&self, id: MailboxId) -> Result<MailboxMeta> {
        self.mailbox_meta(id)?
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {id}")))
    }

    /// Tells watchers of these mailboxes that they changed (after the change is applied).
    fn notify(&self, ids: impl IntoIterator<Item = MailboxId>) {
        self.watchers.notify(ids);
    }

    /// Adds a new mailbox to `batch`. UIDVALIDITY comes from the clock and the mailbox id, so
    /// a name deleted and re-created gets a new one (RFC 3501 §2.3.1.1).
    fn new_mailbox(
        batch: &mut WriteSet,
        id: MailboxId,
        account: &str,
        name: &str,
        special_use: Option<&str>,
    ) -> MailboxMeta {
        let uidvalidity = ((now_secs() as u64).wrapping_add(id) & 0x7fff_ffff).max(1) as u32;
        let meta = MailboxMeta {
            id,
            account: account.to_string(),
            name: name.to_string(),
            uidvalidity,
            uidnext: 1,
            highestmodseq: 1,
            special_use: special_use.map(str::to_string),
        };
        batch.insert(keys::mailbox_name(account, name), id.to_be_bytes());
        batch.insert(keys::mailbox(id), json(&meta));
        meta
    }

    /// Adds to `batch` the removal of a mailbox and all its messages, and returns the blob
    /// reference decrements it implies.
    fn remove_mailbox(&self, batch: &mut WriteSet, meta: &MailboxMeta, unref: &mut Vec<BlobId>) -> Result<()> {
        for item in self.tree.scan_prefix(keys::messages_of(meta.id)) {
            let (k, v) = item?;
            if let Some(m) = MessageMeta::decode(&v) {
                unref.push(m.blob);
            }
            batch.remove(k);
        }
        batch.remove(keys::mailbox_name(&meta.account, &meta.name));
        batch.remove(keys::mailbox(meta.id));
        Ok(())
    }

    /// Adds reference-count changes to `batch`; returns the bodies that reach zero.
    fn adjust_refs(&self, batch: &mut WriteSet, changes: &[(BlobId, i64)]) -> Result<Vec<BodyPtr>> {
        let mut merged: Vec<(BlobId, i64)> = Vec::new();
        for (id, d) in changes {
            match merged.iter_mut().find(|(m, _)| m == id) {
                Some((_, total)) => *total += d,
                None => merged.push((*id, *d)),
            }
        }
        let mut gone = Vec::new();
        for (id, delta) in merged {
            let k = keys::blob_refs(&id);
            let now = self.tree.get(&k)?.map(|v| u64_value(&v)).unwrap_or(0) as i64 + delta;
            if now <= 0 {
                if let Some(ptr) = self.tree.get(keys::blob(&id))?.and_then(|v| BodyPtr::decode(&v)) {
                    gone.push(ptr);
                }
                batch.remove(k);
                batch.remove(keys::blob(&id));
            } else {
                batch.insert(k, (now as u64).to_be_bytes());
            }
        }
        Ok(gone)
    }

    fn scan_json<T: serde::de::DeserializeOwned>(&self, tag: u8, what: &str) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([tag]) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            out.push((name, from_json(what, &v)?));
        }
        Ok(out)
    }
}

impl MailStore for SledStore {
    fn stats(&self) -> String {
        format!(
            "{} change sets, {} journal flushes",
            self.seq.load(Ordering::Relaxed),
            self.journal.flushes()
        )
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.inner.clone().checkpoint_now())
    }

    fn free_space(&self) -> Option<u64> {
        super::free_space_at(self.inner.journal.dir())
    }

    fn write_turn(&self) -> BoxFuture<'_, WriteTurn<'_>> {
        Box::pin(async move { WriteTurn(Some(self.turn.lock().await)) })
    }

    fn exclusive(&self, name: &str) -> Result<super::locks::Exclusive> {
        Ok(super::locks::Exclusive::new(self.names.lock(name)))
    }

    fn lock_maildrop(&self, account: &str) -> Result<Option<super::locks::MaildropLock>> {
        Ok(super::locks::LocalMaildrop::try_new(&self.maildrops, account).map(super::locks::MaildropLock::new))
    }

    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let target = self.journal.written();
            self.journal.sync(target).await.map_err(Inner::io)
        })
    }
}

/// A journal segment at most a quarter live and with at least this many dead bytes has its
/// live bodies moved out (compaction).
const COMPACT_MIN_DEAD: u64 = 16 << 20;
/// Body bytes one compaction moves at most (the rest waits for the next checkpoint), and
/// per change set.
const COMPACT_BYTES: u64 = 64 << 20;
const COMPACT_BATCH_BYTES: u64 = 1 << 20;
/// How often checkpoints look for segments to compact.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl Inner {
    /// Moves the live bodies out of old journal segments that are mostly dead (at most
    /// [`COMPACT_BYTES`] per call), so that a later checkpoint deletes those segments; the
    /// moved bodies are durable in their new place before this returns. Without it a
    /// segment stays as long as any message in it does: under download-and-delete churn a
    /// soak left 1.9 GB of 64 MiB segments pinned by a few messages each. Returns the bytes
    /// moved. Blocking.
    fn compact(&self, min_dead: u64) -> Result<u64> {
        let (pos, live) = {
            let _w = self.lock();
            self.journal.checkpoint_begin()
        };
        let wanted: std::collections::HashSet<u64> = self
            .journal
            .segment_lengths(pos.0)
            .map_err(Inner::io)?
            .into_iter()
            .filter(|&(n, len)| {
                let l = live.get(&n).copied().unwrap_or(0);
                l > 0 && l * 4 <= len && len.saturating_sub(l) >= min_dead
            })
            .map(|(n, _)| n)
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let mut found: Vec<(BlobId, BodyPtr)> = Vec::new();
        let mut bytes = 0;
        for kv in self.tree.scan_prefix([keys::BLOB]) {
            let (k, v) = kv?;
            let (Ok(id), Some(ptr)) = (BlobId::try_from(&k[1..]), BodyPtr::decode(&v)) else {
                continue;
            };
            if wanted.contains(&ptr.seg) {
                found.push((id, ptr));
                bytes += ptr.len;
                if bytes >= COMPACT_BYTES {
                    break;
                }
            }
        }
        let mut moved = 0;
        let mut rest = &found[..];
        while !rest.is_empty() {
            let mut n = 0;
            let mut size = 0;
            while n < rest.len() && (n == 0 || size < COMPACT_BATCH_BYTES) {
                size += rest[n].1.len;
                n += 1;
            }
            let (chunk, after) = rest.split_at(n);
            rest = after;
            // Read without the lock: the bytes at a pointer never change.
            let bodies: Vec<_> = chunk
                .iter()
                .filter_map(|(id, ptr)| self.journal.read(ptr).ok().map(|b| (*id, *ptr, b)))
                .collect();
            let _w = self.lock();
            let mut ws = WriteSet::default();
            let mut released = Vec::new();
            for (id, ptr, body) in &bodies {
                // Still there, still in the old place (not removed or moved meanwhile).
                if self.tree.get(keys::blob(id))?.and_then(|v| BodyPtr::decode(&v)) == Some(*ptr) {
                    ws.body(id, body);
                    released.push(*ptr);
                    moved += ptr.len;
                }
            }
            if !released.is_empty() {
                self.apply_as(ws, released, true)?;
            }
        }
        if moved > 0 {
            tracing::info!(bytes = moved, segments = wanted.len(), "journal compacted");
        }
        Ok(moved)
    }

    /// Flushes sled up to a consistent journal position and drops dead journal segments
    /// (compacting mostly dead ones first).
    async fn checkpoint_now(self: Arc<Inner>) -> Result<()> {
        if self.sled_failed.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "a change set failed part-way in sled: not checkpointing, so the next start replays it".into(),
            ));
        }
        // A compaction that fails (no room for the moved bodies, say) leaves everything as
        // it was; the checkpoint goes on, since deleting dead segments is what frees space.
        // Looked for every [`COMPACT_EVERY`] (it scans every body pointer when a segment
        // qualifies), at once again while a compaction had more than its share to move.
        let now = now_secs().max(0) as u64;
        if now >= self.compact_at.load(Ordering::Relaxed) {
            let me = self.clone();
            let compacted = tokio::task::spawn_blocking(move || me.compact(COMPACT_MIN_DEAD))
                .await
                .unwrap_or_else(|e| Err(StoreError::Backend(e.to_string())));
            let more = compacted
                .inspect_err(|e| tracing::warn!("journal compaction: {e}"))
                .is_ok_and(|moved| moved >= COMPACT_BYTES);
            let wait = if more { 0 } else { COMPACT_EVERY.as_secs() };
            self.compact_at.store(now + wait, Ordering::Relaxed);
        }
        let (pos, seq, live) = {
            let _w = self.lock();
            let (pos, live) = self.journal.checkpoint_begin();
            (pos, self.seq.load(Ordering::SeqCst), live)
        };
        tokio::task::spawn_blocking(move || self.journal.checkpoint_finish(&self.db, &self.tree, pos, seq, &live))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .map_err(|e| StoreError::Backend(format!("journal checkpoint: {e}")))
    }
}

/// Checkpoints the journal every [`CHECKPOINT_EVERY`] while the store lives.
async fn checkpoints(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.checkpoint_now().await {
            tracing::error!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {

    /// Opens a store a dropped one used. sled's flusher thread lets go of the file lock a
    /// moment after the last handle is dropped, so the first tries may find it still held.
    fn reopen(path: &std::path::Path) -> SledStore {
        let mut tries = 0;
        loop {
            match SledStore::open_with(path, 16, false) {
                Ok(s) => return s,
                Err(e) if tries < 200 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
    }
    use super::kv::{LARGE_CHUNK, large_chunk_key};
    use super::*;
    use crate::store::{Directory, KeyValue, Mailboxes, Messages};

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("store"), 16).unwrap();
        (dir, s)
    }

    /// A large value goes in small chunks: it reads back whole, shrinking it drops the chunks
    /// it no longer needs, a value stored whole reads back too, a lost chunk is an error, and
    /// overwriting megabytes across reopenings leaves no sled blob files behind (the whole
    /// value did: one 8 MB file per `spam train`).
    #[test]
    fn large_values_round_trip_in_chunks_without_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let value = |n: usize, seed: u8| -> Vec<u8> { (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect() };
        let chunks = |s: &SledStore| s.large.scan_prefix(b"big\xff").count();
        for round in 0..3u8 {
            let s = SledStore::open(&path, 16).unwrap();
            let v = value(1 << 20, round);
            s.kv_set_large("big", Some(&v)).unwrap();
            assert_eq!(s.kv_get_large("big").unwrap().as_deref(), Some(&v[..]));
            assert_eq!(chunks(&s), (1 << 20) / LARGE_CHUNK);
            s.db.flush().unwrap();
        }
        let blobs = std::fs::read_dir(path.join("blobs")).map_or(0, |d| d.count());
        assert_eq!(blobs, 0, "sled blob files");
        let s = SledStore::open(&path, 16).unwrap();
        let small = value(LARGE_CHUNK + 1, 9);
        s.kv_set_large("big", Some(&small)).unwrap();
        assert_eq!(s.kv_get_large("big").unwrap(), Some(small));
        assert_eq!(chunks(&s), 2, "the chunks past the new length are gone");
        s.kv_set_large("big", Some(b"")).unwrap();
        assert_eq!(s.kv_get_large("big").unwrap(), Some(Vec::new()));
        s.kv_set_large("big", None).unwrap();
        assert_eq!((s.kv_get_large("big").unwrap(), chunks(&s)), (None, 0));
        // Stored whole (as before chunking): read as it is, and replaced by the chunks.
        s.kv_set("old", Some(b"whole value")).unwrap();
        assert_eq!(s.kv_get_large("old").unwrap().as_deref(), Some(&b"whole value"[..]));
        s.kv_set_large("old", Some(b"chunked")).unwrap();
        assert_eq!(s.kv_get_large("old").unwrap().as_deref(), Some(&b"chunked"[..]));
        assert_eq!(s.kv_get("old").unwrap(), None);
        // A chunk gone missing is an error, not a short value.
        s.kv_set_large("cut", Some(&value(3 * LARGE_CHUNK, 1))).unwrap();
        s.large.remove(large_chunk_key("cut", 1)).unwrap();
        assert!(s.kv_get_large("cut").is_err());
    }

    /// The record cache answers what the tree holds through creates, updates, renames and
    /// deletes, and a value read before a change set cannot be cached after it.
    #[test]
    fn record_cache_follows_every_change() {
        let (_d, s) = store();
        assert!(
            s.account("bob@localhost").unwrap().is_none(),
            "absent, and now cached as absent"
        );
        assert!(s.alias("x@localhost").unwrap().is_none());
        s.create_account("bob@localhost", "h").unwrap();
        assert!(
            s.account("bob@localhost").unwrap().is_some(),
            "a cached absence is replaced"
        );
        s.set_alias("x@localhost", &["bob@localhost".into()]).unwrap();
        assert_eq!(s.alias("x@localhost").unwrap().unwrap(), ["bob@localhost"]);
        s.set_alias("x@localhost", &["carol@localhost".into()]).unwrap();
        assert_eq!(s.alias("x@localhost").unwrap().unwrap(), ["carol@localhost"]);
        s.delete_alias("x@localhost").unwrap();
        assert!(s.alias("x@localhost").unwrap().is_none());
        let inbox = s.mailbox("bob@localhost", "INBOX").unwrap().unwrap();
        let uids = s
            .deliver_to(
                b"Subject: a\r\n\r\nbody\r\n",
                0,
                &[Target {
                    mailbox: inbox.id,
                    flags: Default::default(),
                    keywords: Vec::new(),
                }],
            )
            .unwrap();
        let after = s.mailbox("bob@localhost", "INBOX").unwrap().unwrap();
        assert_eq!(
            after.uidnext,
            uids[0] + 1,
            "the mailbox record written by a delivery is seen"
        );
        s.create_mailbox("bob@localhost", "Work", None).unwrap();
        s.rename_mailbox("bob@localhost", "Work", "Play", '/').unwrap();
        assert!(s.mailbox("bob@localhost", "Work").unwrap().is_none());
        assert!(s.mailbox("bob@localhost", "Play").unwrap().is_some());
        s.delete_account("bob@localhost").unwrap();
        assert!(s.account("bob@localhost").unwrap().is_none());
        assert!(s.mailbox("bob@localhost", "INBOX").unwrap().is_none());
        // A reader that missed, then lost the race to a change set, does not cache.
        let key = keys::alias("race@localhost");
        let generation = s.records.get(&key).unwrap_err();
        s.set_alias("race@localhost", &["a@localhost".into()]).unwrap();
        s.records.fill(&key, &None, generation);
        assert!(
            s.alias("race@localhost").unwrap().is_some(),
            "the stale read was dropped"
        );
    }

    /// The store's newest journal segment that holds anything.
    fn newest_segment(store: &std::path::Path) -> std::path::PathBuf {
        std::fs::read_dir(store.with_extension("journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
            .max()
            .unwrap()
    }

    /// sled flushes itself every second, so after a power cut it may hold a delivery whose
    /// journal record never reached the disk. The next open removes what refers to such a
    /// body (as an expunge); acknowledged mail, and a lost message's twin whose body was
    /// flushed before, stay readable.
    #[test]
    fn what_a_power_cut_took_from_the_journal_is_removed_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (segment, flushed, modseq) = {
            let s = SledStore::open_with(&path, 16, false).unwrap();
            s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
            s.deliver(b"acknowledged", 1, &[inbox.id]).unwrap();
            s.flush_blocking().unwrap();
            let segment = newest_segment(&path);
            let flushed = std::fs::metadata(&segment).unwrap().len();
            // Written but not flushed when the power goes: two deliveries, one of them a
            // body already stored, and a queued message.
            s.deliver(b"lost in the cut", 2, &[inbox.id]).unwrap();
            s.deliver(b"acknowledged", 3, &[inbox.id]).unwrap();
            s.enqueue(b"queued, lost too", crate::store::contract_tests::queued(&["b@y.test"]))
                .unwrap();
            s.db.flush().unwrap(); // sled's own timer
            let modseq = s.mailbox("a@x.test", "INBOX").unwrap().unwrap().highestmodseq;
            (segment, flushed, modseq)
        };
        // The cut: what was not flushed is gone from the journal, sled kept it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(flushed)
            .unwrap();
        let s = reopen(&path);
        assert_eq!(s.journal.lost().len(), 2, "the lost delivery's and the queued body");
        let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
        let msgs = s.messages(inbox.id).unwrap();
        assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 3]);
        for m in &msgs {
            assert_eq!(s.blob(&m.meta.blob).unwrap().unwrap(), b"acknowledged");
        }
        assert!(inbox.highestmodseq > modseq, "removed as an expunge");
        assert!(s.queued().unwrap().is_empty());
        assert_eq!(s.blob_count().unwrap(), 1);
        // What it wrote is itself replayed correctly: nothing is lost the second time.
        drop(s);
        let s = reopen(&path);
        assert!(s.journal.lost().is_empty());
        assert_eq!(s.messages(inbox.id).unwrap().len(), 2);
    }

    /// A damaged record stops the journal's parsing, but bodies further on whose bytes
    /// survived are not taken for lost: nothing is removed.
    #[test]
    fn bodies_past_a_damaged_record_that_survived_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let segment = {
            let s = SledStore::open_with(&path, 16, false).unwrap();
            s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
            s.deliver(b"first", 1, &[inbox.id]).unwrap();
            s.deliver(b"second", 2, &[inbox.id]).unwrap();
            s.flush_blocking().unwrap();
            s.db.flush().unwrap();
            newest_segment(&path)
        };
        // The first record's magic damaged: nothing in the segment parses any more.
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&segment, bytes).unwrap();
        let s = reopen(&path);
        assert!(s.journal.lost().is_empty());
        let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
        let bodies: Vec<Vec<u8>> = s
            .messages(inbox.id)
            .unwrap()
            .iter()
            .map(|m| s.blob(&m.meta.blob).unwrap().unwrap())
            .collect();
        assert_eq!(bodies, [b"first".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn journal_replays_what_sled_lacks_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        {
            let s = SledStore::open(&a, 16).unwrap();
            s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
            s.deliver(b"one", 1, &[inbox.id]).unwrap();
            s.deliver(b"two", 2, &[inbox.id]).unwrap();
            s.flush_blocking().unwrap();
            // A second store whose sled has nothing: only the journal survives.
            let b = dir.path().join("b");
            std::fs::create_dir_all(b.with_extension("journal")).unwrap();
            for e in std::fs::read_dir(a.with_extension("journal")).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), b.with_extension("journal").join(e.file_name())).unwrap();
            }
        }
        let b = SledStore::open(&dir.path().join("b"), 16).unwrap();
        let inbox = b.mailbox("a@x.test", "INBOX").unwrap().expect("account replayed");
        let msgs = b.messages(inbox.id).unwrap();
        assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(b.blob(&msgs[1].meta.blob).unwrap().unwrap(), b"two");
        assert_eq!(inbox.uidnext, 3);
        // Reopening the original replays nothing twice.
        let a = SledStore::open(&a, 16).unwrap();
        let inbox = a.mailbox("a@x.test", "INBOX").unwrap().unwrap();
        assert_eq!(a.messages(inbox.id).unwrap().len(), 2);
        assert_eq!(a.deliver(b"three", 3, &[inbox.id]).unwrap(), vec![3]);
    }

    /// The `applied` mark moves only at checkpoints, so a restart replays change sets sled
    /// already holds: that must leave the same state (counts, uids, refcounts), and the
    /// sequence and uids must go on from there.
    #[tokio::test]
    async fn replaying_what_sled_already_has_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let body = b"Subject: x\r\n\r\nsame body twice\r\n";
        // No checkpoint task: the replay counts below assume only the explicit checkpoint.
        {
            let s = SledStore::open_with(&path, 16, false).unwrap();
            s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
            s.deliver(b"one", 1, &[inbox.id]).unwrap();
            s.sync().await.unwrap();
            s.checkpoint().await.unwrap();
            // After the checkpoint: sled gets these, the mark stays at "one".
            s.deliver(body, 2, &[inbox.id]).unwrap();
            s.deliver(body, 3, &[inbox.id]).unwrap();
            let first = s.messages(inbox.id).unwrap()[0].clone();
            s.expunge(inbox.id, &[first.uid]).unwrap();
            s.sync().await.unwrap();
        } // dropped without a checkpoint: the next open replays the last three change sets
        let s = reopen(&path);
        assert_eq!(s.journal.replayed(), 3, "the change sets after the checkpoint, again");
        let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
        let msgs = s.messages(inbox.id).unwrap();
        assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(msgs[0].meta.blob, msgs[1].meta.blob, "one stored copy");
        assert_eq!(s.blob(&msgs[0].meta.blob).unwrap().unwrap(), body);
        assert_eq!(inbox.uidnext, 4);
        // The refcount was replayed as a value, not added again: two expunges free the body.
        s.expunge(inbox.id, &[2, 3]).unwrap();
        assert!(s.blob(&msgs[0].meta.blob).unwrap().is_none(), "refcount was 2, not 4");
        assert_eq!(s.deliver(b"four", 4, &[inbox.id]).unwrap(), vec![4]);
        s.sync().await.unwrap();
        drop(s);
        let s = reopen(&path);
        // Replay marked what it re-applied: only the two change sets since (the expunge and
        // "four") are re-applied now.
        assert_eq!(s.journal.replayed(), 2);
        let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
        let uids: Vec<u32> = s.messages(inbox.id).unwrap().iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![4], "change sets after the restart replay too, in order");
    }

    fn wal_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("s.journal")).unwrap().count()
    }

    #[tokio::test]
    async fn dead_segments_go_at_checkpoint_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        // No checkpoint task: one that woke on a loaded machine held the store (and sled's
        // lock) past the drop, and the reopening failed.
        {
            let s = SledStore::open_with(&path, 16, false).unwrap();
            s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
            s.deliver(b"kept until the account goes", 1, &[inbox.id]).unwrap();
            s.sync().await.unwrap();
        }
        let s = reopen(&path);
        assert_eq!(wal_files(dir.path()), 2, "a new segment after reopening");
        s.checkpoint().await.unwrap();
        assert_eq!(wal_files(dir.path()), 2, "segment 1 holds a live body");
        let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
        let m = &s.messages(inbox.id).unwrap()[0];
        assert_eq!(s.blob(&m.meta.blob).unwrap().unwrap(), b"kept until the account goes");
        s.delete_account("a@x.test").unwrap();
        s.sync().await.unwrap();
        s.checkpoint().await.unwrap();
        assert_eq!(wal_files(dir.path()), 1, "segment 1 is dead and deleted");
    }

    /// A segment that is mostly dead gives up its few live bodies (written again, durably)
    /// and goes at the next checkpoint; what is stored reads back the same, before and
    /// after reopening, and a segment mostly alive stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mostly_dead_segments_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let body =
            |i: u32| -> Vec<u8> { format!("Subject: {i}\r\n\r\n{}", "x".repeat(20_000 + i as usize)).into_bytes() };
        let inbox = {
            let s = SledStore::open_with(&path, 16, false).unwrap();
            s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap().id;
            for i in 0..40 {
                s.deliver(&body(i), i64::from(i), &[inbox]).unwrap();
            }
            s.sync().await.unwrap();
            inbox
        };
        let s = reopen(&path);
        // Segment 1: 40 bodies. Keep 3 of them (uids 5, 17, 40), expunge the rest.
        let gone: Vec<u32> = (1..=40).filter(|u| ![5, 17, 40].contains(u)).collect();
        s.expunge(inbox, &gone).unwrap();
        s.sync().await.unwrap();
        // Segment 2: 10 bodies, all kept (it stays: mostly alive).
        for i in 100..110 {
            s.deliver(&body(i), 0, &[inbox]).unwrap();
        }
        s.sync().await.unwrap();
        drop(s);
        let s = reopen(&path);
        assert_eq!(wal_files(dir.path()), 3);
        // Blocking, as in the checkpoint task's blocking thread.
        let compact = |s: &SledStore| tokio::task::block_in_place(|| s.compact(0).unwrap());
        let moved = compact(&s);
        assert_eq!(
            moved,
            [5u32, 17, 40].iter().map(|&u| body(u - 1).len() as u64).sum::<u64>()
        );
        s.checkpoint().await.unwrap();
        assert_eq!(wal_files(dir.path()), 2, "segment 1 deleted, segment 2 kept");
        assert_eq!(compact(&s), 0, "nothing left to move");
        let check = |s: &SledStore| {
            let msgs = s.messages(inbox).unwrap();
            assert_eq!(msgs.len(), 13);
            for m in &msgs {
                let want = if m.uid <= 40 {
                    body(m.uid - 1)
                } else {
                    body(m.uid - 41 + 100)
                };
                assert!(s.blob(&m.meta.blob).unwrap().unwrap() == want, "uid {}", m.uid);
            }
        };
        check(&s);
        drop(s);
        let s = reopen(&path);
        check(&s);
    }
}
