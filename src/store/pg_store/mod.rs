//! [`MailStore`] on PostgreSQL, for several mailgate nodes sharing one mail system
//! (docs/scale-out.md).
//!
//! The store contract is synchronous: its methods are called from protocol sessions in the
//! middle of their work and return at once, and only [`MailStore::sync`] waits for the disk.
//! This backend keeps that contract:
//!
//! - The connections (a deadpool-postgres pool) live on a small runtime of their own
//!   (`mailgate-pg` threads), which drives their sockets. A store method runs its
//!   transaction on the calling thread with `futures_executor::block_on`, so it may borrow
//!   its arguments and never blocks the pool's runtime; the caller waits for loopback or
//!   LAN round trips (tens to hundreds of µs each), as it waits for sled's writer lock.
//! - Every change is one transaction committed with `synchronous_commit = off`: applied and
//!   visible to every node at once, but not yet flushed. [`MailStore::sync`] commits an
//!   empty transaction that holds a transaction id with `synchronous_commit = on`, which
//!   waits until the write-ahead log is flushed past it, and so past every change made
//!   before the call (the log is written in order). That is our journal's group commit,
//!   done by PostgreSQL: concurrent callers' flushes are merged by its WAL writer, and the
//!   waiting happens on the pool's runtime, not the caller's. Incoming mail is the
//!   exception: it is joined into batches that commit with the flush (batch.rs), on
//!   connections of their own.
//! - UIDs and MODSEQs come from the mailbox row, updated in the delivering transaction
//!   (`UPDATE … RETURNING`): the row lock orders concurrent deliveries from any node, and a
//!   transaction that fails gives its numbers back, so there are no gaps and no repeats.
//! - Change notices for IMAP IDLE and session updates: each change sends `NOTIFY
//!   mailgate_mailbox` with the mailbox id, delivered by PostgreSQL at commit to a `LISTEN`
//!   connection on every node; this node's own watchers are told at once as well.
//!
//! Schema: versioned migrations ([`MIGRATIONS`]), run at open under an advisory lock so two
//! nodes starting together do not race, and by `mailgate store migrate`.

mod batch;
mod ops;

use super::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Versioned schema changes, applied in order; a database records the last it has.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE accounts (
    address text PRIMARY KEY,
    password_hash text NOT NULL,
    created bigint NOT NULL
);
CREATE TABLE domains (domain text PRIMARY KEY);
CREATE TABLE aliases (source text PRIMARY KEY, targets text[] NOT NULL);
CREATE TABLE mailboxes (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    name text NOT NULL,
    uidvalidity bigint NOT NULL,
    uidnext bigint NOT NULL,
    highestmodseq bigint NOT NULL,
    special_use text,
    UNIQUE (account, name)
);
CREATE TABLE subscriptions (account text NOT NULL, name text NOT NULL, PRIMARY KEY (account, name));
-- Message bodies, content-addressed (SHA-256): one body for every copy and recipient.
CREATE TABLE blobs (id bytea PRIMARY KEY, body bytea NOT NULL, refs bigint NOT NULL);
CREATE INDEX blobs_unreferenced ON blobs (id) WHERE refs <= 0;
CREATE TABLE messages (
    mailbox bigint NOT NULL,
    uid bigint NOT NULL,
    blob bytea NOT NULL,
    size bigint NOT NULL,
    internal_date bigint NOT NULL,
    modseq bigint NOT NULL,
    flags smallint NOT NULL,
    -- Space-separated, as IMAP keywords are atoms.
    keywords text NOT NULL,
    PRIMARY KEY (mailbox, uid)
);
CREATE TABLE queue (
    id bigserial PRIMARY KEY,
    entry text NOT NULL,
    blob bytea NOT NULL
);
-- Plugin state keys may hold any byte (NUL included), hence bytea.
CREATE TABLE kv (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE kv_large (key bytea PRIMARY KEY, value bytea NOT NULL);
"#,
    ),
    (
        2,
        r#"
-- Who is delivering a queued message, until when (Queue::lease_queued).
ALTER TABLE queue ADD COLUMN lease_holder text, ADD COLUMN lease_until bigint;
"#,
    ),
    (
        3,
        r#"
-- One delivery into one mailbox in one statement (so a whole delivery is one round trip):
-- the mailbox row gives the UIDs and MODSEQs (its lock orders concurrent deliveries), one
-- message row per element of the flag and keyword arrays. A missing mailbox or an
-- exhausted UID space raises, which aborts the delivering transaction.
CREATE FUNCTION mailgate_deliver(p_mailbox bigint, p_blob bytea, p_size bigint, p_date bigint,
                                 p_flags smallint[], p_keywords text[])
RETURNS TABLE (new_uid bigint) LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_flags, 1), 0);
    first_uid bigint;
    base_modseq bigint;
BEGIN
    UPDATE mailboxes SET uidnext = uidnext + n, highestmodseq = highestmodseq + n
        WHERE id = p_mailbox
        RETURNING uidnext - n, highestmodseq - n INTO first_uid, base_modseq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'mailbox % not found', p_mailbox USING ERRCODE = 'no_data_found';
    END IF;
    IF first_uid + n > 4294967295 THEN
        RAISE EXCEPTION 'uid space exhausted' USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN QUERY
        INSERT INTO messages AS m (mailbox, uid, blob, size, internal_date, modseq, flags, keywords)
        SELECT p_mailbox, first_uid + t.i - 1, p_blob, p_size, p_date, base_modseq + t.i, t.f, t.k
        FROM unnest(p_flags, p_keywords) WITH ORDINALITY AS t(f, k, i)
        RETURNING m.uid;
END
$$;
"#,
    ),
    (
        4,
        r#"
-- Bodies compressed with LZ4 rather than pglz: a fifth of the database's CPU per
-- delivered message went into pglz (docs/performance.md). Servers built without LZ4 (or
-- older than PostgreSQL 14) keep pglz.
DO $lz4$ BEGIN
    ALTER TABLE blobs ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'blobs.body stays with the default compression: %', SQLERRM;
END $lz4$;
-- Several messages' deliveries by account and folder name in one statement (the
-- deliveries joined into one transaction, batch.rs): p_message[n] says which message
-- target n gets (an index into the per-message arrays). Each target goes to its folder,
-- else to its account's INBOX, else nowhere (the account has gone); the result row says
-- where, with its UID, and whether INBOX stood in for a missing folder. Mailbox rows are
-- locked in ascending id order (the store's lock order), then the bodies (one row per
-- distinct body, its reference count raised by the targets that got it), then the
-- message rows are inserted. A mailbox deleted between resolving and locking raises
-- serialization_failure (the caller tries again and resolves anew).
CREATE FUNCTION mailgate_deliver_folders(p_channel text, p_node text,
        p_account text[], p_folder text[], p_message integer[], p_flags smallint[], p_keywords text[],
        p_blob bytea[], p_body bytea[], p_size bigint[], p_date bigint[])
RETURNS TABLE (target integer, mailbox bigint, uid bigint, inbox_instead boolean) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    resolved bigint[];
    instead boolean[];
    mb record;
    first_uid bigint;
    base_modseq bigint;
    a_box bigint[] := '{}';
    a_uid bigint[] := '{}';
    a_modseq bigint[] := '{}';
BEGIN
    SELECT array_agg(coalesce(f.id, i.id) ORDER BY u.n), array_agg(f.id IS NULL AND i.id IS NOT NULL ORDER BY u.n)
        INTO resolved, instead
        FROM unnest(p_account, p_folder) WITH ORDINALITY AS u(a, f, n)
        LEFT JOIN mailboxes f ON f.account = u.a AND f.name = u.f
        LEFT JOIN mailboxes i ON i.account = u.a AND i.name = 'INBOX';
    FOR mb IN SELECT x AS id, count(*) AS n FROM unnest(resolved) AS x
               WHERE x IS NOT NULL GROUP BY x ORDER BY x LOOP
        UPDATE mailboxes SET uidnext = uidnext + mb.n, highestmodseq = highestmodseq + mb.n
            WHERE id = mb.id
            RETURNING uidnext - mb.n, highestmodseq - mb.n INTO first_uid, base_modseq;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'mailbox % went away during delivery', mb.id USING ERRCODE = 'serialization_failure';
        END IF;
        IF first_uid + mb.n > 4294967295 THEN
            RAISE EXCEPTION 'uid space exhausted' USING ERRCODE = 'numeric_value_out_of_range';
        END IF;
        a_box := a_box || mb.id;
        a_uid := a_uid || first_uid;
        a_modseq := a_modseq || base_modseq;
        PERFORM pg_notify(p_channel, p_node || ' ' || mb.id);
    END LOOP;
    INSERT INTO blobs AS b (id, body, refs)
        SELECT p_blob[g.m], p_body[g.m], g.refs
        FROM (SELECT min(p_message[n]) AS m, count(*) AS refs
              FROM generate_subscripts(p_message, 1) AS n
              WHERE resolved[n] IS NOT NULL GROUP BY p_blob[p_message[n]]) AS g
        ORDER BY p_blob[g.m]
        ON CONFLICT (id) DO UPDATE SET refs = b.refs + EXCLUDED.refs;
    RETURN QUERY
        WITH r AS (
            SELECT n, resolved[n] AS mbx, row_number() OVER (PARTITION BY resolved[n] ORDER BY n) AS k
            FROM generate_subscripts(p_message, 1) AS n WHERE resolved[n] IS NOT NULL
        ), placed AS (
            SELECT r.n, r.mbx, a.uid0 + r.k - 1 AS uid, a.modseq0 + r.k AS modseq
            FROM r JOIN unnest(a_box, a_uid, a_modseq) AS a(mbx, uid0, modseq0) ON a.mbx = r.mbx
        ), stored AS (
            INSERT INTO messages (mailbox, uid, blob, size, internal_date, modseq, flags, keywords)
            SELECT p.mbx, p.uid, p_blob[p_message[p.n]], p_size[p_message[p.n]], p_date[p_message[p.n]],
                   p.modseq, p_flags[p.n], p_keywords[p.n]
            FROM placed AS p
        )
        SELECT n::integer, p.mbx, p.uid, instead[n] FROM placed AS p
        UNION ALL
        SELECT n::integer, NULL, NULL, false FROM generate_subscripts(p_message, 1) AS n
            WHERE resolved[n] IS NULL;
END
$$;
"#,
    ),
    (
        5,
        r#"
-- mailgate_deliver_folders() again, with a fixed number of statements however many
-- mailboxes a batch reaches: migration 4 locked and advanced each mailbox and sent its
-- notice with statements of their own (three per mailbox), so a batch for ten recipients
-- ran thirty. Now the batch's mailboxes are locked by one statement (ascending id order,
-- the store's lock order, then the bodies as before), advanced by one, and told by one.
-- What each call answers is unchanged.
CREATE OR REPLACE FUNCTION mailgate_deliver_folders(p_channel text, p_node text,
        p_account text[], p_folder text[], p_message integer[], p_flags smallint[], p_keywords text[],
        p_blob bytea[], p_body bytea[], p_size bigint[], p_date bigint[])
RETURNS TABLE (target integer, mailbox bigint, uid bigint, inbox_instead boolean) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    resolved bigint[];
    instead boolean[];
    ids bigint[];
    counts bigint[];
    a_box bigint[];
    a_uid bigint[];
    a_modseq bigint[];
    top bigint;
BEGIN
    SELECT array_agg(coalesce(f.id, i.id) ORDER BY u.n), array_agg(f.id IS NULL AND i.id IS NOT NULL ORDER BY u.n)
        INTO resolved, instead
        FROM unnest(p_account, p_folder) WITH ORDINALITY AS u(a, f, n)
        LEFT JOIN mailboxes f ON f.account = u.a AND f.name = u.f
        LEFT JOIN mailboxes i ON i.account = u.a AND i.name = 'INBOX';
    SELECT array_agg(x ORDER BY x), array_agg(c ORDER BY x) INTO ids, counts
        FROM (SELECT x, count(*) AS c FROM unnest(resolved) AS x WHERE x IS NOT NULL GROUP BY x) AS g;
    IF ids IS NOT NULL THEN
        PERFORM 1 FROM mailboxes WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE;
        WITH advanced AS (
            UPDATE mailboxes AS m SET uidnext = m.uidnext + w.n, highestmodseq = m.highestmodseq + w.n
                FROM unnest(ids, counts) AS w(id, n) WHERE m.id = w.id
                RETURNING m.id, m.uidnext - w.n AS uid0, m.highestmodseq - w.n AS modseq0, m.uidnext AS next
        )
        SELECT array_agg(a.id), array_agg(a.uid0), array_agg(a.modseq0), max(a.next)
            INTO a_box, a_uid, a_modseq, top FROM advanced AS a;
        IF coalesce(cardinality(a_box), 0) < cardinality(ids) THEN
            RAISE EXCEPTION 'a mailbox went away during delivery' USING ERRCODE = 'serialization_failure';
        END IF;
        IF top > 4294967295 THEN
            RAISE EXCEPTION 'uid space exhausted' USING ERRCODE = 'numeric_value_out_of_range';
        END IF;
        PERFORM pg_notify(p_channel, p_node || ' ' || x) FROM unnest(ids) AS x;
    END IF;
    INSERT INTO blobs AS b (id, body, refs)
        SELECT p_blob[g.m], p_body[g.m], g.refs
        FROM (SELECT min(p_message[n]) AS m, count(*) AS refs
              FROM generate_subscripts(p_message, 1) AS n
              WHERE resolved[n] IS NOT NULL GROUP BY p_blob[p_message[n]]) AS g
        ORDER BY p_blob[g.m]
        ON CONFLICT (id) DO UPDATE SET refs = b.refs + EXCLUDED.refs;
    RETURN QUERY
        WITH r AS (
            SELECT n, resolved[n] AS mbx, row_number() OVER (PARTITION BY resolved[n] ORDER BY n) AS k
            FROM generate_subscripts(p_message, 1) AS n WHERE resolved[n] IS NOT NULL
        ), placed AS (
            SELECT r.n, r.mbx, a.uid0 + r.k - 1 AS uid, a.modseq0 + r.k AS modseq
            FROM r JOIN unnest(a_box, a_uid, a_modseq) AS a(mbx, uid0, modseq0) ON a.mbx = r.mbx
        ), stored AS (
            INSERT INTO messages (mailbox, uid, blob, size, internal_date, modseq, flags, keywords)
            SELECT p.mbx, p.uid, p_blob[p_message[p.n]], p_size[p_message[p.n]], p_date[p_message[p.n]],
                   p.modseq, p_flags[p.n], p_keywords[p.n]
            FROM placed AS p
        )
        SELECT n::integer, p.mbx, p.uid, instead[n] FROM placed AS p
        UNION ALL
        SELECT n::integer, NULL, NULL, false FROM generate_subscripts(p_message, 1) AS n
            WHERE resolved[n] IS NULL;
END
$$;
"#,
    ),
];

/// The advisory lock migrations run under (any fixed number; "mailgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d61_696c_6761_7465;

/// The channel change notices travel on.
const CHANNEL: &str = "mailgate_mailbox";

/// Sends one change notice per mailbox id in `$3`, signed with the sending node (`$2`)
/// so that its own listener skips what it has already told its watchers.
const NOTICE_SQL: &str = "SELECT pg_notify($1, $2 || ' ' || id) FROM unnest($3::text[]) AS id";

/// The channel that says accounts, domains or aliases changed (nodes drop their
/// [`Directory`] cache).
const DIRECTORY_CHANNEL: &str = "mailgate_directory";

/// Entries the directory cache holds before it starts over.
const MAX_CACHED: usize = 100_000;

/// The directory records every delivery and login reads (accounts, aliases, domains),
/// absent ones too, kept per node. Dropped whole by any directory change: this node's at
/// once, another node's when its notice arrives (milliseconds). A reader that missed fills
/// the cache only if nothing was dropped meanwhile (`generation`), so a value read before a
/// change can never outlive it.
#[derive(Default)]
struct DirectoryCache {
    generation: u64,
    accounts: HashMap<String, Option<Account>>,
    aliases: HashMap<String, Option<Vec<String>>>,
    domains: HashMap<String, bool>,
}

impl DirectoryCache {
    fn clear(&mut self) {
        self.generation += 1;
        self.accounts.clear();
        self.aliases.clear();
        self.domains.clear();
    }

    fn full(&self) -> bool {
        self.accounts.len() + self.aliases.len() + self.domains.len() >= MAX_CACHED
    }
}

pub struct PgStore {
    inner: Arc<Inner>,
    /// Schema versions this opening applied.
    applied: Vec<i32>,
    /// The pool's runtime; shut down in the background on drop (a runtime may not be
    /// dropped where blocking is not allowed, as in a server task).
    rt: Option<tokio::runtime::Runtime>,
}

struct Inner {
    pool: Pool,
    /// Connections that commit with the flush (`synchronous_commit = on`), for the
    /// delivery writers (batch.rs).
    writers: Pool,
    handle: tokio::runtime::Handle,
    /// Through which count of `transactions` the log is known flushed.
    durable: AtomicU64,
    /// Held while a `sync` flush runs, so callers that arrive meanwhile share the next one.
    flushing: tokio::sync::Mutex<()>,
    /// Deliveries waiting to be joined into a transaction (batch.rs).
    deliveries: tokio::sync::mpsc::Sender<batch::Request>,
    /// Change notices per watched mailbox.
    watchers: super::locks::Watchers,
    transactions: AtomicU64,
    syncs: AtomicU64,
    /// Joined-delivery transactions written, and the deliveries in them.
    batches: AtomicU64,
    batched: AtomicU64,
    /// For the connection that holds this node's POP3 maildrop locks.
    config: tokio_postgres::Config,
    /// That connection (session-level advisory locks live as long as it does: a node that
    /// dies lets go of its locks with it).
    lock_client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// This node's maildrop locks (advisory locks are re-entrant within one connection,
    /// so two sessions of one node must be kept apart here).
    maildrops: super::locks::Maildrops,
    directory: Mutex<DirectoryCache>,
    /// This node's [`MailStore::exclusive`] locks.
    names: Arc<super::locks::LocalNames>,
    /// This store's name in its change notices ([`node_name`]).
    node: String,
}

fn pg(e: impl std::error::Error + 'static) -> StoreError {
    // PostgreSQL's "disk full" (53100) may come wrapped, by the pool for instance.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(e) = c.downcast_ref::<tokio_postgres::Error>()
            && e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL)
        {
            return StoreError::NoSpace(format!("postgresql: {e}"));
        }
        cause = c.source();
    }
    StoreError::Backend(format!("postgresql: {e}"))
}

/// Whether an error is a unique-key violation (a row that already exists).
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// A name no other store opening has: process, clock and a counter (tests open several
/// stores in one process).
fn node_name() -> String {
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}.{nanos}.{}",
        std::process::id(),
        OPENED.fetch_add(1, Ordering::Relaxed)
    )
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL or key=value string) with at most `pool_size`
    /// connections, `delivery_writers` of them at a time writing joined deliveries
    /// (batch.rs), and brings the schema up to date.
    pub fn open(url: &str, pool_size: usize, delivery_writers: usize) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("store.postgres.url: {e}")))?;
        // A database that does not answer is an error after a while, not a session stuck
        // in connect(2) for minutes (unless the URL says otherwise).
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        // Every change commits without waiting for the flush; `sync` waits for it. The
        // delivery writers' connections (batch.rs) commit with the flush instead: a joined
        // delivery is one statement in an implicit transaction, answered once durable.
        let with_commit = |mode: &str| {
            let mut c = config.clone();
            c.options(&match config.get_options() {
                Some(o) => format!("{o} -c synchronous_commit={mode}"),
                None => format!("-c synchronous_commit={mode}"),
            });
            c
        };
        let writers_config = with_commit("on");
        config = with_commit("off");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mailgate-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the PostgreSQL runtime: {e}")))?;
        // A pool of at most `size` connections made with `config`.
        let pool = |config: tokio_postgres::Config, size: usize| {
            let recycling_method = RecyclingMethod::Fast;
            let manager = Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method });
            Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(pg)
        };
        let writers = pool(writers_config, delivery_writers.max(1) + batch::ALONE_WRITERS)?;
        let pool = pool(config.clone(), pool_size)?;
        let (deliveries, waiting) = batch::channel();
        let inner = Arc::new(Inner {
            pool,
            writers,
            handle: rt.handle().clone(),
            durable: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            deliveries,
            watchers: Default::default(),
            transactions: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched: AtomicU64::new(0),
            config: config.clone(),
            lock_client: tokio::sync::Mutex::new(None),
            maildrops: Default::default(),
            directory: Mutex::default(),
            names: Default::default(),
            node: node_name(),
        });
        rt.spawn(batch::run(Arc::downgrade(&inner), waiting, delivery_writers));
        let mut store = PgStore {
            inner,
            applied: Vec::new(),
            rt: Some(rt),
        };
        store.applied = store.migrate()?;
        if !store.applied.is_empty() {
            tracing::info!("postgresql: schema migrations applied: {:?}", store.applied);
        }
        // Changes made once `open` returns are heard: it waits (a while) for the LISTEN.
        let (listening, heard) = tokio::sync::oneshot::channel();
        store
            .inner
            .handle
            .spawn(listen(config, Arc::downgrade(&store.inner), listening));
        let waited = store
            .inner
            .block(async |_: &Inner| Ok(tokio::time::timeout(std::time::Duration::from_secs(10), heard).await))?;
        if !matches!(waited, Ok(Ok(()))) {
            tracing::warn!("postgresql: not yet listening for other nodes' changes; IDLE hears them once it is");
        }
        Ok(store)
    }

    /// Schema versions opening this store applied (empty when it was up to date).
    pub fn migrations_applied(&self) -> &[i32] {
        &self.applied
    }

    /// The newest schema version the database has.
    pub fn schema_version(&self) -> Result<i32> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let row = c
                .query_one("SELECT coalesce(max(version), 0) FROM mailgate_schema", &[])
                .await
                .map_err(pg)?;
            Ok(row.get(0))
        })
    }

    /// The newest schema version this mailgate knows.
    pub fn latest_schema() -> i32 {
        MIGRATIONS.last().map_or(0, |m| m.0)
    }

    /// Applies the migrations this database lacks; gives the versions applied.
    pub fn migrate(&self) -> Result<Vec<i32>> {
        self.inner.block(async |inner: &Inner| {
            let mut client = inner.pool.get().await.map_err(pg)?;
            let t = client.transaction().await.map_err(pg)?;
            t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg)?;
            t.batch_execute("CREATE TABLE IF NOT EXISTS mailgate_schema (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
                .await
                .map_err(pg)?;
            let have: i32 = t
                .query_one("SELECT coalesce(max(version), 0) FROM mailgate_schema", &[])
                .await
                .map_err(pg)?
                .get(0);
            let mut applied = Vec::new();
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > have) {
                t.batch_execute(sql)
                    .await
                    .map_err(|e| StoreError::Backend(format!("postgresql: migration {version}: {e}")))?;
                t.execute("INSERT INTO mailgate_schema (version) VALUES ($1)", &[version])
                    .await
                    .map_err(pg)?;
                applied.push(*version);
            }
            if let Some(newest) = MIGRATIONS.last().map(|m| m.0)
                && have > newest
            {
                return Err(StoreError::Backend(format!(
                    "the database's schema version {have} is newer than this mailgate's {newest}"
                )));
            }
            t.commit().await.map_err(pg)?;
            Ok(applied)
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    /// Runs `f` to completion on the calling thread, inside the pool runtime's context (so
    /// new connections are spawned there). Outside tokio's cooperative budget: a caller's
    /// task that has used up its budget would otherwise have every tokio resource `f`
    /// polls answer "yield" and wake at once, and `block_on`, which never yields to the
    /// caller's scheduler to refill it, would spin forever.
    fn block<T>(&self, f: impl AsyncFnOnce(&Inner) -> Result<T>) -> Result<T> {
        let _context = self.handle.enter();
        futures_executor::block_on(tokio::task::unconstrained(f(self)))
    }

    /// Runs `f` in one transaction, committed without waiting for the flush (see the
    /// module's notes), then tells this node's watchers of `changed` mailboxes (`f` returns
    /// them beside its result; other nodes hear through `NOTIFY`).
    fn write<T>(&self, f: impl AsyncFnOnce(&Transaction<'_>) -> Result<(T, Vec<MailboxId>)>) -> Result<T> {
        let (out, changed) = self.block(async |inner: &Inner| {
            let mut client = inner.pool.get().await.map_err(pg)?;
            let t = client.transaction().await.map_err(pg)?;
            let (out, changed) = f(&t).await?;
            if !changed.is_empty() {
                let ids: Vec<String> = changed.iter().map(|id| id.to_string()).collect();
                let stmt = t.prepare_cached(NOTICE_SQL).await.map_err(pg)?;
                t.execute(&stmt, &[&CHANNEL, &inner.node, &ids]).await.map_err(pg)?;
            }
            t.commit().await.map_err(pg)?;
            inner.transactions.fetch_add(1, Ordering::Relaxed);
            Ok((out, changed))
        })?;
        self.notify(&changed);
        Ok(out)
    }

    /// Runs a read-only `f` on a pooled connection.
    fn read<T>(&self, f: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T>) -> Result<T> {
        self.block(async |inner: &Inner| {
            let client = inner.pool.get().await.map_err(pg)?;
            f(&client).await
        })
    }

    fn notify(&self, ids: &[MailboxId]) {
        self.watchers.notify(ids.iter().copied());
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, DirectoryCache> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A directory record through the cache: `get` picks it out of the cache, `read` asks
    /// the database, `put` files the answer.
    fn cached<T: Clone>(
        &self,
        get: impl Fn(&DirectoryCache) -> Option<T>,
        read: impl FnOnce() -> Result<T>,
        put: impl FnOnce(&mut DirectoryCache, T),
    ) -> Result<T> {
        let generation = {
            let c = self.directory();
            if let Some(v) = get(&c) {
                return Ok(v);
            }
            c.generation
        };
        let v = read()?;
        let mut c = self.directory();
        if c.generation == generation {
            if c.full() {
                c.clear();
            }
            put(&mut c, v.clone());
        }
        Ok(v)
    }

    /// [`Inner::write`] for a directory change: other nodes are told to drop their cache,
    /// this node drops its own once committed.
    fn write_directory<T>(&self, f: impl AsyncFnOnce(&Transaction<'_>) -> Result<(T, Vec<MailboxId>)>) -> Result<T> {
        let out = self.write(async |t: &Transaction<'_>| {
            let out = f(t).await?;
            t.execute("SELECT pg_notify($1, '')", &[&DIRECTORY_CHANNEL])
                .await
                .map_err(pg)?;
            Ok(out)
        });
        self.directory().clear();
        out
    }
}

/// Listens for other nodes' change notices for as long as the store lives, reconnecting
/// after a lost connection.
async fn listen(
    config: tokio_postgres::Config,
    inner: std::sync::Weak<Inner>,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    use futures_util::StreamExt;
    let mut first = Some(listening);
    loop {
        if inner.upgrade().is_none() {
            return;
        }
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client
                        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {DIRECTORY_CHANNEL}"))
                        .await?;
                    Ok::<_, tokio_postgres::Error>(())
                };
                // The LISTEN is answered through the connection, which must be polled meanwhile.
                let mut listening = std::pin::pin!(listening);
                let ok = loop {
                    tokio::select! {
                        r = &mut listening => break r.is_ok(),
                        m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                    }
                };
                if ok {
                    match first.take() {
                        Some(tx) => {
                            let _ = tx.send(());
                        }
                        None => {
                            if let Some(i) = inner.upgrade() {
                                i.directory().clear();
                                i.watchers.notify_all();
                            }
                        }
                    }
                    while let Some(Ok(m)) = messages.next().await {
                        let Some(i) = inner.upgrade() else { return };
                        let tokio_postgres::AsyncMessage::Notification(n) = m else {
                            continue;
                        };
                        if n.channel() == DIRECTORY_CHANNEL {
                            i.directory().clear();
                        } else if let Some((node, id)) = n.payload().split_once(' ')
                            && node != i.node
                            && let Ok(id) = id.parse::<MailboxId>()
                        {
                            i.notify(&[id]);
                        }
                    }
                }
                tracing::warn!("postgresql: the change-notice connection was lost; reconnecting");
            }
            Err(e) => tracing::warn!("postgresql: change-notice connection: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

impl MailStore for PgStore {
    fn stats(&self) -> String {
        format!(
            "{} transactions, {} syncs, {} deliveries in {} joined transactions",
            self.inner.transactions.load(Ordering::Relaxed),
            self.inner.syncs.load(Ordering::Relaxed),
            self.inner.batched.load(Ordering::Relaxed),
            self.inner.batches.load(Ordering::Relaxed)
        )
    }

    fn write_turn(&self) -> BoxFuture<'_, WriteTurn<'_>> {
        // PostgreSQL orders concurrent writers itself (row locks).
        Box::pin(std::future::ready(WriteTurn(None)))
    }

    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        let inner = self.inner.clone();
        let want = inner.transactions.load(Ordering::SeqCst);
        if inner.durable.load(Ordering::SeqCst) >= want {
            // Nothing committed since the last flush (deliveries commit with their own).
            return Box::pin(std::future::ready(Ok(())));
        }
        let done = self.inner.handle.spawn(async move {
            let _flushing = inner.flushing.lock().await;
            if inner.durable.load(Ordering::SeqCst) >= want {
                return Ok(()); // a flush that started after our changes has covered them
            }
            let upto = inner.transactions.load(Ordering::SeqCst);
            let client = inner.pool.get().await.map_err(pg)?;
            // A transaction id makes the commit write a record; with synchronous_commit on
            // it returns once the log is flushed past that record, so past every change
            // committed before. One round trip.
            client
                .batch_execute("BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_current_xact_id(); COMMIT")
                .await
                .map_err(pg)?;
            inner.durable.fetch_max(upto, Ordering::SeqCst);
            inner.syncs.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        Box::pin(async move { done.await.map_err(pg)? })
    }

    fn deliver_to_folders<'a>(
        &'a self,
        raw: &'a [u8],
        internal_date: i64,
        targets: &'a [FolderTarget],
    ) -> BoxFuture<'a, Result<Vec<Option<Placed>>>> {
        let delivery = batch::Delivery {
            raw: raw.into(),
            internal_date,
            targets: targets.into(),
        };
        if raw.len() >= batch::ALONE_BYTES {
            let inner = self.inner.clone();
            return Box::pin(async move { batch::alone(&inner, &delivery).await });
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = batch::Request {
            delivery: delivery.into_owned(),
            reply,
        };
        let waiting = self.inner.deliveries.clone();
        Box::pin(async move {
            let gone = || StoreError::Backend("postgresql: the delivery writer has stopped".into());
            waiting.send(request).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<()>> {
        // PostgreSQL checkpoints itself; there is no journal of ours to trim.
        Box::pin(std::future::ready(Ok(())))
    }

    fn exclusive(&self, name: &str) -> Result<super::locks::Exclusive> {
        // Within this node first (callers on one connection would not exclude each other),
        // then a session-level advisory lock on a connection of its own, held by the guard:
        // closing it (the guard dropped, or the node gone) lets the lock go.
        let local = self.inner.names.lock(name);
        let key = format!("mailgate exclusive {name}");
        let (client, connection) = self.inner.block(async |inner: &Inner| {
            let (client, connection) = inner.config.connect(tokio_postgres::NoTls).await.map_err(pg)?;
            let connection = tokio::spawn(connection);
            client
                .query_one("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
                .await
                .map_err(pg)?;
            Ok((client, connection))
        })?;
        Ok(super::locks::Exclusive::new(HeldConnection {
            _client: client,
            connection,
            _local: local,
        }))
    }

    fn lock_maildrop(&self, account: &str) -> Result<Option<super::locks::MaildropLock>> {
        let Some(local) = super::locks::LocalMaildrop::try_new(&self.inner.maildrops, account) else {
            return Ok(None);
        };
        let key = format!("mailgate pop3 {account}");
        let got = self.inner.block(async |inner: &Inner| {
            let mut slot = inner.lock_client.lock().await;
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                let (client, connection) = inner.config.connect(tokio_postgres::NoTls).await.map_err(pg)?;
                tokio::spawn(connection);
                *slot = Some(client);
            }
            let client = slot.as_ref().expect("connected above");
            let row = client
                .query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key])
                .await
                .map_err(pg)?;
            Ok(row.get::<_, bool>(0))
        })?;
        if !got {
            return Ok(None);
        }
        Ok(Some(super::locks::MaildropLock::new(AdvisoryLock {
            inner: self.inner.clone(),
            key,
            _local: local,
        })))
    }
}

/// A connection kept open for the session-level advisory lock it holds.
struct HeldConnection {
    _client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>,
    _local: super::locks::LocalName,
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        // Closing the socket ends the session, and its advisory locks with it.
        self.connection.abort();
    }
}

/// A POP3 maildrop lock other nodes see; released on drop (one round trip), before this
/// node's own hold on it.
struct AdvisoryLock {
    inner: Arc<Inner>,
    key: String,
    _local: super::locks::LocalMaildrop,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        let released = self.inner.block(async |inner: &Inner| {
            if let Some(c) = inner.lock_client.lock().await.as_ref() {
                c.query_one("SELECT pg_advisory_unlock(hashtextextended($1, 0))", &[&key])
                    .await
                    .map_err(pg)?;
            }
            Ok(())
        });
        if let Err(e) = released {
            tracing::warn!("releasing a maildrop lock: {e}");
        }
    }
}

/// A PostgreSQL server for tests (unit and integration); not used by the server itself.
#[doc(hidden)]
pub mod harness;
