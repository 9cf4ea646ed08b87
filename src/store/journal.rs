//! The journal: write-ahead log **and** message-body store.
//!
//! Why not sled alone: with 5 KB bodies as sled values, sled's log rewrites and syncs
//! (`sync_file_range`, which does not even flush the disk cache) capped intake near
//! 2,700 msgs/s on this machine with no fsync of ours at all. One file per body (Maildir-style)
//! cost 130 µs per file here and made every `fdatasync` wait for ext4's metadata journal.
//!
//! So every change set is appended, as one checksummed record, to the current segment file
//! (`NNNN.wal`) with a plain `write` under the store's writer lock: it is in the page cache at
//! once (safe against `kill -9`) and readable. [`Journal::sync`] `fdatasync`s the segment; all
//! sessions that wrote before share that one flush (group commit), and only then is anything
//! acknowledged. Message bodies are written only here: sled keeps a pointer
//! `(segment, offset, length)` to the bytes inside the record.
//!
//! sled gets each change set's ops one by one; at each checkpoint the key `V applied` = the
//! sequence number of the last change set before the checkpoint position, so after a crash
//! [`Journal::open`] re-applies, from the last checkpoint position, every change set sled
//! may lack (or have only part of); ones it already has are re-applied harmlessly. A checkpoint flushes sled, records the position, and deletes old
//! segments that hold no live body. Segments are rotated at [`SEGMENT_SIZE`]. An old
//! segment that is mostly dead is compacted first: the store writes its few live bodies
//! again (as new records, made durable before anything is deleted), so that it holds none
//! and the checkpoint can delete it (`SledStore`'s `compact`).
//!
//! Record: `magic "MGJ1" | len u32 | crc32(payload) u32 | payload`, payload:
//! `seq u64 | n u32 | n × (kind u8 | klen u32 | key | [vlen u32 | value])`; kind 1 put, 0 remove,
//! 2 message body (key = blob id; the bytes stay in the journal, sled gets a pointer).
//! Integers are big-endian.

use super::BlobId;
use super::keys;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

const MAGIC: &[u8; 4] = b"MGJ1";
const HEADER: usize = 12;
/// Where ops start inside a record: header, seq, op count.
const OPS_START: u64 = (HEADER + 12) as u64;
/// A new segment is started past this size.
pub const SEGMENT_SIZE: u64 = 64 << 20;

/// Where a message body lives: `len` bytes at `off` in segment `seg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPtr {
    pub seg: u64,
    pub off: u64,
    pub len: u64,
}

impl BodyPtr {
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.seg.to_be_bytes());
        b[8..16].copy_from_slice(&self.off.to_be_bytes());
        b[16..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<BodyPtr> {
        let u = |r: std::ops::Range<usize>| b.get(r).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
        Some(BodyPtr {
            seg: u(0..8)?,
            off: u(8..16)?,
            len: u(16..24)?,
        })
    }
}

/// One change to a sled key: a new value, or removal.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// A set of changes recorded as one journal record and applied to sled.
///
/// Not as a `sled::Batch`: sled 0.34 seals and `sync_file_range`s its log buffer on every
/// `apply_batch`, which alone capped intake near 3,000 msgs/s. The journal gives the
/// atomicity instead: [`apply`] writes the ops one by one and the `applied` mark last, and
/// replay re-applies any change set whose mark did not make it.
#[derive(Default)]
pub struct WriteSet {
    pub(super) batch: Vec<Op>,
    /// The encoded ops, built as they are added (no second pass over large values).
    ops: Vec<u8>,
    count: u32,
    /// Bodies in this set: id, offset of their bytes in `ops`, length.
    bodies: Vec<(BlobId, u64, u64)>,
}

impl WriteSet {
    fn put_bytes(&mut self, b: &[u8]) {
        self.ops.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.ops.extend_from_slice(b);
    }

    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (k, v) = (key.as_ref(), value.as_ref());
        self.ops.push(1);
        self.put_bytes(k);
        self.put_bytes(v);
        self.count += 1;
        self.batch.push((k.to_vec(), Some(v.to_vec())));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        let k = key.as_ref();
        self.ops.push(0);
        self.put_bytes(k);
        self.count += 1;
        self.batch.push((k.to_vec(), None));
    }

    /// Adds a message body; [`Journal::append`] returns where it landed.
    pub fn body(&mut self, id: &BlobId, bytes: &[u8]) {
        self.ops.push(2);
        self.put_bytes(id);
        self.ops.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.bodies.push((*id, self.ops.len() as u64, bytes.len() as u64));
        self.ops.extend_from_slice(bytes);
        self.count += 1;
    }

    fn record(&self, seq: u64) -> Vec<u8> {
        let mut rec = Vec::with_capacity(OPS_START as usize + self.ops.len());
        rec.extend_from_slice(MAGIC);
        rec.extend_from_slice(&((12 + self.ops.len()) as u32).to_be_bytes());
        rec.extend_from_slice(&[0; 4]); // crc, below
        rec.extend_from_slice(&seq.to_be_bytes());
        rec.extend_from_slice(&self.count.to_be_bytes());
        rec.extend_from_slice(&self.ops);
        let crc = crc32fast::hash(&rec[HEADER..]);
        rec[8..12].copy_from_slice(&crc.to_be_bytes());
        rec
    }
}

struct Segment {
    number: u64,
    file: Arc<File>,
    len: u64,
}

pub struct Journal {
    dir: PathBuf,
    current: Mutex<Segment>,
    /// Sequence number of the last record written to the current segment.
    written: AtomicU64,
    durable: AtomicU64,
    /// Set after a failed write: the tail may be torn, so nothing more may be acknowledged.
    failed: AtomicBool,
    /// Held by the one task running a flush (the group commit's leader).
    flush_lock: tokio::sync::Mutex<()>,
    /// Bumped whenever a flush ends (or its leader goes away): followers wait on this, not
    /// on `flush_lock`, so one flush releases all of them at once.
    flushed: tokio::sync::watch::Sender<()>,
    flushes: AtomicU64,
    readers: RwLock<HashMap<u64, Arc<File>>>,
    /// Live body bytes per segment; a segment with none can go once checkpointed.
    live: Mutex<HashMap<u64, u64>>,
    /// Position recorded by the last checkpoint (an idle server then does no I/O at all).
    checkpointed: Mutex<(u64, u64)>,
    /// Change sets re-applied by [`Journal::open`].
    replayed: u64,
    /// Bodies sled pointed at past the journal's end when it was opened.
    lost: Vec<BlobId>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.wal"))
}

fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".wal"))
            .and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn create_segment(dir: &Path, number: u64) -> io::Result<Segment> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, number))?;
    File::open(dir)?.sync_all()?; // the new name must survive a crash too
    Ok(Segment {
        number,
        file: Arc::new(file),
        len: file_len(&segment_path(dir, number))?,
    })
}

fn file_len(p: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(p)?.len())
}

/// The sled key holding the sequence number of the last change set applied.
pub fn applied_key() -> Vec<u8> {
    keys::tagged(keys::VERSION, b"applied")
}

/// The sled key holding the last checkpoint position (segment, offset).
fn checkpoint_key() -> Vec<u8> {
    keys::tagged(keys::VERSION, b"checkpoint")
}

/// Applies a change set's ops in order. The `applied` mark is not moved here (it was, once
/// per change set: a fifth of a delivery's sled inserts) but at checkpoints
/// ([`Journal::checkpoint_finish`], [`set_applied`]): replay starts at the checkpoint and
/// re-applies every later change set, and re-applying one that sled already has is
/// harmless, because ops carry whole values and run in journal order.
pub fn apply_ops(tree: &sled::Tree, ops: Vec<Op>) -> sled::Result<()> {
    for (k, v) in ops {
        match v {
            Some(v) => tree.insert(k, v)?,
            None => tree.remove(k)?,
        };
    }
    Ok(())
}

/// Records that sled holds every change set up to `seq` (the caller knows it does: all of
/// them were applied under the writer lock, and sled makes writes durable in order).
pub fn set_applied(tree: &sled::Tree, seq: u64) -> sled::Result<()> {
    tree.insert(applied_key(), &seq.to_be_bytes())?;
    Ok(())
}

/// Replay: the ops, then the mark, so a crash part-way through replay redoes this one.
fn apply(tree: &sled::Tree, ops: Vec<Op>, seq: u64) -> sled::Result<()> {
    apply_ops(tree, ops)?;
    set_applied(tree, seq)
}

struct Parsed {
    seq: u64,
    batch: Vec<Op>,
    /// Bodies: id, offset of the bytes from the record start, length.
    bodies: Vec<(BlobId, u64, u64)>,
    len: usize,
}

/// One record from the front of `b`, or None if incomplete/corrupt.
fn parse_record(b: &[u8]) -> Option<Parsed> {
    if b.len() < HEADER || &b[..4] != MAGIC {
        return None;
    }
    let len = u32::from_be_bytes(b[4..8].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(b[8..12].try_into().ok()?);
    let payload = b.get(HEADER..HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let seq = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let n = u32::from_be_bytes(payload.get(8..12)?.try_into().ok()?);
    let mut p = 12;
    let mut batch = Vec::new();
    let mut bodies = Vec::new();
    let take = |p: &mut usize| -> Option<(usize, &[u8])> {
        let l = u32::from_be_bytes(payload.get(*p..*p + 4)?.try_into().ok()?) as usize;
        let start = *p + 4;
        let s = payload.get(start..start + l)?;
        *p = start + l;
        Some((start, s))
    };
    for _ in 0..n {
        let kind = *payload.get(p)?;
        p += 1;
        let (_, key) = take(&mut p)?;
        match kind {
            1 => batch.push((key.to_vec(), Some(take(&mut p)?.1.to_vec()))),
            0 => batch.push((key.to_vec(), None)),
            2 => {
                let (start, bytes) = take(&mut p)?;
                bodies.push((key.try_into().ok()?, (HEADER + start) as u64, bytes.len() as u64));
            }
            _ => return None,
        }
    }
    Some(Parsed {
        seq,
        batch,
        bodies,
        len: HEADER + len,
    })
}

/// The group commit's leader: lets go of the flush lock, then wakes the followers, however
/// the flush ended (also when the leading session was dropped mid-flush).
struct Leader<'a> {
    journal: &'a Journal,
    lock: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        drop(self.lock.take());
        self.journal.flushed.send_replace(());
    }
}

/// Whether the body `ptr` points at in `dir` is there, whole: its bytes hash to its id
/// (bodies are content-addressed). For a pointer past where its segment's records stop
/// parsing: torn by a power cut, or after a damaged record that bytes further on survived.
fn intact(dir: &Path, ptr: &BodyPtr, id: &BlobId) -> bool {
    let Ok(file) = File::open(segment_path(dir, ptr.seg)) else {
        return false;
    };
    let whole = file
        .metadata()
        .is_ok_and(|m| ptr.off.checked_add(ptr.len).is_some_and(|end| end <= m.len()));
    let (true, Ok(len)) = (whole, usize::try_from(ptr.len)) else {
        return false;
    };
    let mut body = vec![0; len];
    file.read_exact_at(&mut body, ptr.off).is_ok() && super::blob_id(&body) == *id
}

impl Journal {
    /// Opens the journal in `dir`: re-applies to `tree` every record newer than sled's
    /// `applied` mark, counts live bodies, and starts a fresh segment (a torn tail stays behind
    /// in the old one). Returns the journal and the last sequence number in use.
    pub fn open(dir: &Path, db: &sled::Db, tree: &sled::Tree) -> io::Result<(Journal, u64)> {
        std::fs::create_dir_all(dir)?;
        let sled_err = io::Error::other;
        let applied = tree
            .get(applied_key())
            .map_err(sled_err)?
            .map(|v| keys::u64_value(&v))
            .unwrap_or(0);
        let (ck_seg, ck_off) = tree
            .get(checkpoint_key())
            .map_err(sled_err)?
            .and_then(|v| Some((keys::u64_value(v.get(..8)?), keys::u64_value(v.get(8..16)?))))
            .unwrap_or((0, 0));
        let mut last = applied;
        let existing = segments(dir)?;
        let mut replayed = 0u64;
        // How far each segment holds whole records: all of it before the checkpoint's
        // segment (flushed before the checkpoint was taken), up to where parsing stopped from
        // there on.
        let mut readable: HashMap<u64, u64> = HashMap::new();
        for &n in existing.iter().filter(|n| **n < ck_seg) {
            readable.insert(n, file_len(&segment_path(dir, n))?);
        }
        for (i, &n) in existing.iter().enumerate().filter(|(_, n)| **n >= ck_seg) {
            let mut bytes = Vec::new();
            File::open(segment_path(dir, n))?.read_to_end(&mut bytes)?;
            let mut off = if n == ck_seg { ck_off as usize } else { 0 };
            while let Some(rec) = bytes.get(off..).and_then(parse_record) {
                if rec.seq > last {
                    let mut batch = rec.batch;
                    for (id, at, len) in &rec.bodies {
                        let ptr = BodyPtr {
                            seg: n,
                            off: off as u64 + at,
                            len: *len,
                        };
                        batch.insert(0, (keys::blob(id), Some(ptr.encode().to_vec())));
                    }
                    apply(tree, batch, rec.seq).map_err(sled_err)?;
                    last = rec.seq;
                    replayed += 1;
                }
                off += rec.len;
            }
            readable.insert(n, off as u64);
            if off < bytes.len() {
                let tail = bytes.len() - off;
                if i + 1 < existing.len() {
                    tracing::error!(
                        segment = n,
                        "journal segment has {tail} unreadable bytes before a later segment"
                    );
                } else {
                    tracing::warn!(
                        segment = n,
                        "journal ends with {tail} bytes of a torn write (never acknowledged)"
                    );
                }
            }
        }
        if replayed > 0 {
            tracing::info!("journal: re-applied {replayed} change sets after an unclean stop");
            db.flush().map_err(sled_err)?;
        }
        // sled flushes itself every second, so after a power cut it may hold a change set
        // whose journal record never reached the disk (a journal record is flushed before
        // its change is acknowledged, but sled may write first): a body pointer past what
        // the journal holds. Such bodies, unless their bytes are there whole after all, are
        // lost; the store removes what refers to them.
        let mut live: HashMap<u64, u64> = HashMap::new();
        let mut lost = Vec::new();
        for item in tree.scan_prefix([keys::BLOB]) {
            let (k, v) = item.map_err(sled_err)?;
            if let Some(p) = BodyPtr::decode(&v) {
                *live.entry(p.seg).or_default() += p.len;
                if readable
                    .get(&p.seg)
                    .is_none_or(|&end| p.off.saturating_add(p.len) > end)
                    && let Ok(id) = BlobId::try_from(&k[1..])
                    && !intact(dir, &p, &id)
                {
                    lost.push(id);
                }
            }
        }
        if !lost.is_empty() {
            tracing::error!(
                "journal: {} message bodies that sled points at are not in the journal (a power cut before they were flushed; never acknowledged)",
                lost.len()
            );
        }
        // Never append after a possibly torn tail: continue in a new segment, unless the last
        // one is empty.
        let next = match existing.last() {
            Some(&n) if file_len(&segment_path(dir, n))? == 0 => n,
            Some(&n) => n + 1,
            None => 1,
        };
        let segment = create_segment(dir, next)?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            current: Mutex::new(segment),
            written: AtomicU64::new(last),
            durable: AtomicU64::new(last),
            failed: AtomicBool::new(false),
            flush_lock: tokio::sync::Mutex::new(()),
            flushed: tokio::sync::watch::Sender::new(()),
            flushes: AtomicU64::new(0),
            readers: RwLock::new(HashMap::new()),
            live: Mutex::new(live),
            checkpointed: Mutex::new((0, 0)),
            replayed,
            lost,
        };
        Ok((journal, last))
    }

    /// Where the segments are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn segment(&self) -> std::sync::MutexGuard<'_, Segment> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> io::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(io::Error::other("journal failed earlier; restart needed"));
        }
        Ok(())
    }

    fn fail(&self, e: io::Error) -> io::Error {
        tracing::error!("journal write failed; refusing further writes: {e}");
        self.failed.store(true, Ordering::SeqCst);
        e
    }

    /// Writes change set `seq` (caller holds the store's writer lock, so journal order is
    /// apply order) and returns where its bodies landed. Not durable until [`Journal::sync`].
    pub fn append(&self, seq: u64, ws: &WriteSet) -> io::Result<Vec<(BlobId, BodyPtr)>> {
        self.check()?;
        let rec = ws.record(seq);
        let mut seg = self.segment();
        if seg.len > 0 && seg.len + rec.len() as u64 > SEGMENT_SIZE {
            self.rotate(&mut seg)?;
        }
        let start = seg.len;
        if let Err(e) = (&*seg.file).write_all(&rec) {
            // A write that failed (the disk filled up, say) may have left part of the
            // record: cut it off, so the segment ends where the last whole record ends and
            // the next append can follow it once space returns. Only if that fails too is
            // the journal given up on (replay would stop at the torn part).
            // (A file system turned read-only refuses the write whole: nothing to cut.)
            let untouched = seg.file.metadata().is_ok_and(|m| m.len() == start);
            match if untouched { Ok(()) } else { seg.file.set_len(start) } {
                Ok(()) => tracing::warn!("journal write failed, change set not written: {e}"),
                Err(cut) => {
                    self.fail(io::Error::other(format!(
                        "{e}; cutting the torn record off failed: {cut}"
                    )));
                }
            }
            return Err(e);
        }
        seg.len += rec.len() as u64;
        self.written.store(seq, Ordering::SeqCst);
        let ptrs: Vec<_> = ws
            .bodies
            .iter()
            .map(|(id, at, len)| {
                let ptr = BodyPtr {
                    seg: seg.number,
                    off: start + OPS_START + at,
                    len: *len,
                };
                (*id, ptr)
            })
            .collect();
        drop(seg);
        if !ptrs.is_empty() {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            for (_, p) in &ptrs {
                *live.entry(p.seg).or_default() += p.len;
            }
        }
        Ok(ptrs)
    }

    /// Starts a new segment; the old one is made durable first (sync only covers the current).
    fn rotate(&self, seg: &mut Segment) -> io::Result<()> {
        seg.file.sync_data().map_err(|e| self.fail(e))?;
        // A new segment that cannot be made (no space for it) leaves the current one in use:
        // it is whole and synced, so writing on after a later success is safe.
        *seg = create_segment(&self.dir, seg.number + 1)?;
        Ok(())
    }

    /// Notes that a body's last reference is gone (its bytes become garbage).
    pub fn release(&self, ptr: &BodyPtr) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = live.get_mut(&ptr.seg) {
            *n = n.saturating_sub(ptr.len);
        }
    }

    /// Reads a body.
    pub fn read(&self, ptr: &BodyPtr) -> io::Result<Vec<u8>> {
        let file = {
            let cached = self
                .readers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ptr.seg)
                .cloned();
            match cached {
                Some(f) => f,
                None => {
                    let f = Arc::new(File::open(segment_path(&self.dir, ptr.seg))?);
                    self.readers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(ptr.seg, f.clone());
                    f
                }
            }
        };
        let mut buf = vec![0u8; ptr.len as usize];
        file.read_exact_at(&mut buf, ptr.off)?;
        Ok(buf)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Bodies sled points at that the journal does not hold (see [`Journal::open`]).
    pub fn lost(&self) -> &[BlobId] {
        &self.lost
    }

    /// How many change sets opening the journal re-applied to sled.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Waits until record `target` (and all before it) is on disk.
    ///
    /// Group commit: the first caller to find no flush running becomes the leader and
    /// `fdatasync`s everything written so far; callers arriving meanwhile follow, waiting for
    /// that flush to end, and then return if it covered them or lead the next one. Followers
    /// wait on a broadcast rather than in the lock's queue: queued on the lock they were
    /// released one by one, each only after the previous one had been polled, and under load
    /// every step of that chain waited behind other sessions' work (docs/performance.md).
    pub async fn sync(&self, target: u64) -> io::Result<()> {
        let mut flushed = self.flushed.subscribe();
        loop {
            if self.durable.load(Ordering::SeqCst) >= target {
                return self.check();
            }
            self.check()?;
            let Ok(lock) = self.flush_lock.try_lock() else {
                // A flush is running; whatever it ends with, look again.
                let _ = flushed.changed().await;
                continue;
            };
            let _leader = Leader {
                journal: self,
                lock: Some(lock),
            };
            if self.durable.load(Ordering::SeqCst) >= target {
                return self.check(); // a flush that ended just now covered us
            }
            let (file, covered) = self.flush_target();
            let r = tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
            return self.finish(r, covered);
        }
    }

    /// Blocking version of [`Journal::sync`] for callers without a runtime.
    pub fn sync_blocking(&self, target: u64) -> io::Result<()> {
        let _leader = Leader {
            journal: self,
            lock: Some(self.flush_lock.blocking_lock()),
        };
        if self.durable.load(Ordering::SeqCst) >= target {
            return self.check();
        }
        self.check()?;
        let (file, covered) = self.flush_target();
        let r = file.sync_data();
        self.finish(r, covered)
    }

    /// Flushes the current segment now, on this thread, outside the group commit: for a
    /// writer holding the store's lock, which must not wait for the async flush leader (that
    /// leader may need a runtime worker, and the workers may be waiting for that lock).
    pub fn sync_now(&self) -> io::Result<()> {
        self.check()?;
        let (file, covered) = self.flush_target();
        let r = file.sync_data();
        self.finish(r, covered)
    }

    fn flush_target(&self) -> (Arc<File>, u64) {
        // Read `written` under the segment lock: every record up to it is in this file (a
        // rotation syncs the old file before switching).
        let seg = self.segment();
        (seg.file.clone(), self.written.load(Ordering::SeqCst))
    }

    fn finish(&self, r: io::Result<()>, covered: u64) -> io::Result<()> {
        r.map_err(|e| self.fail(e))?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let before = self.durable.fetch_max(covered, Ordering::SeqCst);
        let m = crate::metrics::get();
        m.journal_fsyncs.inc();
        m.journal_group_size.observe(covered.saturating_sub(before) as f64);
        Ok(())
    }

    /// Current write position; every change set applied before the call is before it.
    pub fn position(&self) -> (u64, u64) {
        let seg = self.segment();
        (seg.number, seg.len)
    }

    /// Segments before `position`'s that hold no live body, given a snapshot of the live
    /// counts taken together with the position.
    fn dead_segments(&self, before: u64, live: &HashMap<u64, u64>) -> io::Result<Vec<u64>> {
        Ok(segments(&self.dir)?
            .into_iter()
            .filter(|n| *n < before && live.get(n).copied().unwrap_or(0) == 0)
            .collect())
    }

    /// The length of each segment file before segment `before`.
    pub fn segment_lengths(&self, before: u64) -> io::Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for n in segments(&self.dir)?.into_iter().filter(|n| *n < before) {
            match std::fs::metadata(segment_path(&self.dir, n)) {
                Ok(m) => out.push((n, m.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Checkpoint, part 1 (caller holds the store's writer lock): the position and a snapshot
    /// of live counts that agree with each other.
    pub fn checkpoint_begin(&self) -> ((u64, u64), HashMap<u64, u64>) {
        let pos = self.position();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (pos, live)
    }

    /// Checkpoint, part 2 (blocking; no lock held): flush sled so everything before `pos` is
    /// durable there, remember `pos` for the next replay, and delete dead segments.
    /// `seq`: the last change set before `pos` (read with `pos`, under the writer lock).
    pub fn checkpoint_finish(
        &self,
        db: &sled::Db,
        tree: &sled::Tree,
        pos: (u64, u64),
        seq: u64,
        live: &HashMap<u64, u64>,
    ) -> io::Result<()> {
        let sled_err = io::Error::other;
        if *self.checkpointed.lock().unwrap_or_else(|p| p.into_inner()) == pos {
            return Ok(()); // nothing written since the last checkpoint
        }
        db.flush().map_err(sled_err)?;
        let mut v = pos.0.to_be_bytes().to_vec();
        v.extend_from_slice(&pos.1.to_be_bytes());
        // Both durable with the next sled flush; until then replay starts at an older, also
        // valid, position and mark (and skips segments deleted meanwhile: they held nothing
        // replay needs). Every change set after `pos` has a sequence number above `seq`.
        set_applied(tree, seq).map_err(sled_err)?;
        tree.insert(checkpoint_key(), v).map_err(sled_err)?;
        for n in self.dead_segments(pos.0, live)? {
            self.readers.write().unwrap_or_else(|p| p.into_inner()).remove(&n);
            self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&n);
            std::fs::remove_file(segment_path(&self.dir, n))?;
            tracing::debug!(segment = n, "journal segment with no live body deleted");
        }
        *self.checkpointed.lock().unwrap_or_else(|p| p.into_inner()) = pos;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_tails_stop_parsing() {
        let mut ws = WriteSet::default();
        ws.insert(b"k1", b"v1");
        ws.remove(b"k2");
        ws.body(&[9; 32], b"body");
        let rec = ws.record(7);
        let r = parse_record(&rec).unwrap();
        assert_eq!((r.seq, r.len), (7, rec.len()));
        let (id, at, len) = r.bodies[0];
        assert_eq!(id, [9; 32]);
        assert_eq!(&rec[at as usize..(at + len) as usize], b"body");
        assert_eq!(ws.bodies[0].1 + OPS_START, at, "append and replay agree on offsets");
        assert!(parse_record(&rec[..rec.len() - 1]).is_none());
        let mut bad = rec.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(parse_record(&bad).is_none());
    }

    /// Group commit: followers wait for the running flush, not in the lock's queue, and a
    /// leader that goes away without finishing (its session dropped) still wakes them: one
    /// of them leads the next flush.
    #[test]
    fn followers_wake_when_a_flush_ends_or_its_leader_goes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let (journal, last) = Journal::open(dir.path(), &db, &tree).unwrap();
        let journal = Arc::new(journal);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for seq in last + 1..=last + 3 {
                let mut ws = WriteSet::default();
                ws.insert(format!("k{seq}").as_bytes(), b"v");
                journal.append(seq, &ws).unwrap();
            }
            let target = last + 3;
            // A flush "runs": its leader holds the lock and has not finished.
            let stalled = Leader {
                journal: &journal,
                lock: Some(journal.flush_lock.try_lock().unwrap()),
            };
            let followers: Vec<_> = (0..20)
                .map(|_| {
                    let j = journal.clone();
                    tokio::spawn(async move { j.sync(target).await })
                })
                .collect();
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            assert!(followers.iter().all(|f| !f.is_finished()), "nothing is durable yet");
            assert!(journal.durable.load(Ordering::SeqCst) < target);
            let flushes = journal.flushes();
            drop(stalled); // gone without a flush: the followers must not be stranded
            for f in followers {
                f.await.unwrap().unwrap();
            }
            assert!(journal.durable.load(Ordering::SeqCst) >= target);
            assert_eq!(journal.flushes() - flushes, 1, "one follower led; the rest rode along");
        });
    }

    /// One op of a generated change set: insert (key, value) or remove key.
    fn op() -> impl proptest::strategy::Strategy<Value = (u8, Option<Vec<u8>>)> {
        use proptest::prelude::*;
        (
            0u8..16,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A record parses back to what was written, and any cut or flipped bit is refused.
        #[test]
        fn a_record_round_trips_and_damage_is_refused(
            ops in proptest::collection::vec(op(), 0..20),
            seq in 1u64..1_000_000,
            flip in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut ws = WriteSet::default();
            for (k, v) in &ops {
                match v {
                    Some(v) => ws.insert([*k], v),
                    None => ws.remove([*k]),
                }
            }
            let rec = ws.record(seq);
            let r = parse_record(&rec).expect("parses");
            proptest::prop_assert_eq!((r.seq, r.len), (seq, rec.len()));
            proptest::prop_assert!(parse_record(&rec[..rec.len() - 1]).is_none());
            let mut bad = rec.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 0x40;
            proptest::prop_assert!(parse_record(&bad).is_none_or(|r| r.seq != seq || r.len != rec.len()));
        }

        /// Change sets appended and flushed, then replayed into a fresh tree, give the same
        /// keys and values as applying them in order.
        #[test]
        fn append_then_replay_gives_the_same_state(
            sets in proptest::collection::vec(proptest::collection::vec(op(), 1..8), 1..12),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut model: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
            {
                let db = sled::Config::new().temporary(true).open().unwrap();
                let tree = db.open_tree("t").unwrap();
                let (journal, last) = Journal::open(dir.path(), &db, &tree).unwrap();
                for (i, set) in sets.iter().enumerate() {
                    let mut ws = WriteSet::default();
                    for (k, v) in set {
                        let key = vec![b'k', *k];
                        match v {
                            Some(v) => {
                                ws.insert(&key, v);
                                model.insert(key, v.clone());
                            }
                            None => {
                                ws.remove(&key);
                                model.remove(&key);
                            }
                        }
                    }
                    journal.append(last + 1 + i as u64, &ws).unwrap();
                }
                journal.sync_blocking(last + sets.len() as u64).unwrap();
            }
            // A new store that never saw the change sets: everything comes from the journal.
            let db = sled::Config::new().temporary(true).open().unwrap();
            let tree = db.open_tree("t").unwrap();
            let (journal, _) = Journal::open(dir.path(), &db, &tree).unwrap();
            proptest::prop_assert_eq!(journal.replayed(), sets.len() as u64);
            let got: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = tree
                .iter()
                .filter_map(|kv| kv.ok())
                .filter(|(k, _)| k.first() == Some(&b'k') && k.len() == 2)
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            proptest::prop_assert_eq!(got, model);
        }
    }

    #[test]
    fn body_pointer_round_trip() {
        let p = BodyPtr {
            seg: 3,
            off: 99,
            len: 5000,
        };
        assert_eq!(BodyPtr::decode(&p.encode()), Some(p));
    }
}
