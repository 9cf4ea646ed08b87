//! Deliveries joined into transactions: the intake's group commit on PostgreSQL.
//!
//! [`MailStore::deliver_to_folders`] hands its delivery to a task on the store's runtime
//! and awaits the answer without holding the caller's thread. The task takes whatever
//! deliveries are waiting — many under load, one when idle — and writes them as one
//! transaction in one round trip: one `mailgate_deliver_folders()` call that resolves the
//! folders, takes UIDs, stores the bodies and sends the change notices, outside `BEGIN`
//! (PostgreSQL's implicit transaction), on a writer connection that commits with
//! `synchronous_commit = on`: one flush for the whole batch, and every message in it is
//! durable when its caller hears back. While one batch is written
//! the next gathers, so batches grow with the load (group commit). Under load this turns
//! N transactions, N mailbox-row updates (all on one row when the mail is for one mailbox,
//! which serialised them) and N flushes into one of each. `[store.postgres]
//! delivery_writers` (default 1) lets several batches be written at once, each on its own
//! connection: for a database on more cores than ours; on this two-core machine one
//! writer was fastest (docs/performance.md).
//!
//! A message of [`ALONE_BYTES`] or more is not joined: it is written alone, from the
//! caller's task with the caller's bytes (a batch holds a copy of each of its messages).
//!
//! A batch that fails is not allowed to fail its neighbours: its deliveries are tried
//! again one by one, and one that meets a deadlock or a mailbox deleted under it
//! (serialization failure) is tried again a few times before its error is given.

use super::*;
use std::borrow::Cow;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::types::ToSql;

/// The most deliveries, and about the most message bytes, joined into one transaction.
const MAX_DELIVERIES: usize = 256;
const MAX_BYTES: usize = 8 << 20;

/// Attempts for one delivery that meets a deadlock or a mailbox removed under it.
const ATTEMPTS: usize = 3;

/// Messages at least this large are written alone, from the caller's task with the
/// caller's bytes: joining them saves little, and a batch holds a copy of each message.
pub(super) const ALONE_BYTES: usize = 1 << 20;

/// Writer connections beyond `delivery_writers`, for messages written alone.
pub(super) const ALONE_WRITERS: usize = 4;

/// One delivery: a message and where it goes.
pub(super) struct Delivery<'a> {
    pub raw: Cow<'a, [u8]>,
    pub internal_date: i64,
    pub targets: Cow<'a, [FolderTarget]>,
}

impl Delivery<'_> {
    /// A copy that owns its bytes, to wait in the queue.
    pub fn into_owned(self) -> Delivery<'static> {
        Delivery {
            raw: Cow::Owned(self.raw.into_owned()),
            internal_date: self.internal_date,
            targets: Cow::Owned(self.targets.into_owned()),
        }
    }
}

/// One caller's delivery, waiting to be joined with others.
pub(super) struct Request {
    pub delivery: Delivery<'static>,
    pub reply: oneshot::Sender<Result<Vec<Option<Placed>>>>,
}

/// The queue callers put deliveries on; room for this many before `send` waits.
pub(super) fn channel() -> (mpsc::Sender<Request>, mpsc::Receiver<Request>) {
    mpsc::channel(4 * MAX_DELIVERIES)
}

/// Takes waiting deliveries in batches for as long as the store lives.
pub(super) async fn run(inner: std::sync::Weak<Inner>, mut waiting: mpsc::Receiver<Request>, parallel: usize) {
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    loop {
        // A free slot first, then the deliveries: while every slot is busy they gather,
        // and the next batch takes them all.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else { return };
        let mut bytes = first.delivery.raw.len();
        let mut batch = vec![first];
        while batch.len() < MAX_DELIVERIES && bytes < MAX_BYTES {
            match waiting.try_recv() {
                Ok(r) => {
                    bytes += r.delivery.raw.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        tokio::spawn(async move {
            write(&inner, batch).await;
            drop(slot);
        });
    }
}

/// Writes a batch and answers its callers.
async fn write(inner: &Inner, batch: Vec<Request>) {
    if batch.len() > 1 {
        let deliveries: Vec<&Delivery<'_>> = batch.iter().map(|r| &r.delivery).collect();
        if let Ok(placed) = transaction(inner, &deliveries).await {
            for (r, p) in batch.into_iter().zip(placed) {
                let _ = r.reply.send(Ok(p));
            }
            return;
        }
    }
    // Alone (or again alone, after its batch failed).
    for r in batch {
        let out = alone(inner, &r.delivery).await;
        let _ = r.reply.send(out);
    }
}

/// Writes one delivery in a transaction of its own, trying again after a deadlock or a
/// mailbox deleted under it. Callable from any runtime.
pub(super) async fn alone(inner: &Inner, delivery: &Delivery<'_>) -> Result<Vec<Option<Placed>>> {
    let mut attempt = 1;
    loop {
        match transaction(inner, &[delivery]).await {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => attempt += 1,
            Err(e) => return Err(e.into_store()),
            Ok(mut placed) => return Ok(placed.pop().unwrap_or_default()),
        }
    }
}

/// Why a batch's transaction failed.
enum Failed {
    Pool(deadpool_postgres::PoolError),
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl Failed {
    fn into_store(self) -> StoreError {
        match self {
            Failed::Pool(e) => pg(e),
            Failed::Db(e) => match e.code() {
                Some(c) if *c == tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE => {
                    StoreError::Invalid("uid space exhausted".into())
                }
                _ => pg(e),
            },
            Failed::Store(e) => e,
        }
    }
}

fn retryable(e: &Failed) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(e, Failed::Db(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
}

/// Writes `requests` as one transaction in one round trip, committed with a flush; gives
/// where each request's targets went.
async fn transaction(
    inner: &Inner,
    requests: &[&Delivery<'_>],
) -> std::result::Result<Vec<Vec<Option<Placed>>>, Failed> {
    // The arrays of `mailgate_deliver_folders`: per target, then per message.
    let (mut account, mut folder, mut message, mut flags, mut keywords) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut blob, mut body, mut size, mut date) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, r) in requests.iter().enumerate() {
        for t in r.targets.iter() {
            account.push(t.account.as_str());
            folder.push(ops::inbox_name(&t.folder));
            message.push(i as i32 + 1);
            flags.push(i16::from(t.flags.0));
            keywords.push(t.keywords.join(" "));
        }
        blob.push(blob_id(&r.raw).to_vec());
        body.push(&r.raw[..]);
        size.push(r.raw.len() as i64);
        date.push(r.internal_date);
    }
    // Taken on the pool's runtime, where a new connection's task must run.
    let pool = inner.writers.clone();
    let client = inner
        .handle
        .spawn(async move { pool.get().await })
        .await
        .map_err(|e| Failed::Store(pg(e)))?
        .map_err(Failed::Pool)?;
    let deliver = client
        .prepare_cached("SELECT target, mailbox, uid, inbox_instead FROM mailgate_deliver_folders($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        .await
        .map_err(Failed::Db)?;
    let params: [&(dyn ToSql + Sync); 11] = [
        &CHANNEL,
        &inner.node,
        &account,
        &folder,
        &message,
        &flags,
        &keywords,
        &blob,
        &body,
        &size,
        &date,
    ];
    // Every change committed before this one is flushed with it (the log is written in
    // order), so `sync` callers need not flush those again.
    let before = inner.transactions.load(Ordering::SeqCst);
    // One statement outside `BEGIN`: PostgreSQL runs it as a transaction of its own and
    // commits it (on this connection, with the flush) before it says it is ready, which
    // is when the rows are handed over. One message each way, one flush of the answer:
    // `BEGIN`/`COMMIT` around it cost a third of a batch's database time (pgbench,
    // docs/performance.md).
    let rows = client.query(&deliver, &params).await.map_err(Failed::Db)?;
    inner.durable.fetch_max(before, Ordering::SeqCst);
    inner.batches.fetch_add(1, Ordering::Relaxed);
    inner.batched.fetch_add(requests.len() as u64, Ordering::Relaxed);
    let mut placed: Vec<Vec<Option<Placed>>> = requests.iter().map(|r| vec![None; r.targets.len()]).collect();
    // Target n (1-based, in request order) back to its request and position.
    let mut at = Vec::with_capacity(account.len());
    for (i, r) in requests.iter().enumerate() {
        at.extend((0..r.targets.len()).map(|k| (i, k)));
    }
    let mut changed = Vec::new();
    for row in &rows {
        let n: i32 = row.get(0);
        let Some(&(i, k)) = usize::try_from(n - 1).ok().and_then(|n| at.get(n)) else {
            return Err(Failed::Store(StoreError::Backend(
                "a delivery answered for an unknown target".into(),
            )));
        };
        if let (Some(mailbox), Some(uid)) = (row.get::<_, Option<i64>>(1), row.get::<_, Option<i64>>(2)) {
            let mailbox = mailbox as MailboxId;
            changed.push(mailbox);
            placed[i][k] = Some(Placed {
                mailbox,
                uid: uid as u32,
                inbox_instead: row.get(3),
            });
        }
    }
    changed.sort_unstable();
    changed.dedup();
    inner.notify(&changed);
    Ok(placed)
}
