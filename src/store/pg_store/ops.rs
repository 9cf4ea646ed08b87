//! The store contract's operations in SQL: [`Directory`], [`Mailboxes`], [`Messages`],
//! [`Queue`] and [`KeyValue`] for [`PgStore`]. Each writing method is one transaction
//! ([`Inner::write`]); mailbox rows are locked before message rows, and several mailboxes in
//! ascending id order, so concurrent transactions from any node cannot deadlock.

use super::*;
use crate::store::locks::mailbox_list_notice;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// Runs a statement (prepared once per connection) on a transaction or client.
macro_rules! query {
    ($c:expr, $sql:expr, $params:expr) => {{
        let stmt = $c.prepare_cached($sql).await.map_err(pg)?;
        $c.query(&stmt, $params).await.map_err(pg)
    }};
}

macro_rules! execute {
    ($c:expr, $sql:expr, $params:expr) => {{
        let stmt = $c.prepare_cached($sql).await.map_err(pg)?;
        $c.execute(&stmt, $params).await.map_err(pg)
    }};
}

const MAILBOX_COLUMNS: &str = "id, account, name, uidvalidity, uidnext, highestmodseq, special_use";
const MESSAGE_COLUMNS: &str = "uid, blob, size, internal_date, modseq, flags, keywords";

fn mailbox_of(r: &Row) -> MailboxMeta {
    MailboxMeta {
        id: r.get::<_, i64>(0) as u64,
        account: r.get(1),
        name: r.get(2),
        uidvalidity: r.get::<_, i64>(3) as u32,
        uidnext: r.get::<_, i64>(4) as u32,
        highestmodseq: r.get::<_, i64>(5) as u64,
        special_use: r.get(6),
    }
}

fn blob_of(v: &[u8]) -> Result<BlobId> {
    v.try_into().map_err(|_| StoreError::Backend("corrupt blob id".into()))
}

/// `(uid, meta)` of a row selected with [`MESSAGE_COLUMNS`].
fn message_of(r: &Row) -> Result<(u32, MessageMeta)> {
    let keywords: String = r.get(6);
    Ok((
        r.get::<_, i64>(0) as u32,
        MessageMeta {
            blob: blob_of(r.get(1))?,
            size: r.get::<_, i64>(2) as u64,
            internal_date: r.get(3),
            modseq: r.get::<_, i64>(4) as u64,
            flags: Flags(r.get::<_, i16>(5) as u8),
            keywords: keywords
                .split(' ')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect(),
        },
    ))
}

pub(super) fn inbox_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

fn id(v: MailboxId) -> i64 {
    v as i64
}

/// Adds a new mailbox. UIDVALIDITY comes from the clock and the mailbox id, so a name
/// deleted and re-created gets a new one (RFC 3501 §2.3.1.1), as in the sled store.
async fn new_mailbox(t: &Transaction<'_>, account: &str, name: &str, special_use: Option<&str>) -> Result<MailboxMeta> {
    let mid: i64 = query!(t, "SELECT nextval('mailboxes_id_seq')", &[])?[0].get(0);
    let uidvalidity = ((now_secs() as u64).wrapping_add(mid as u64) & 0x7fff_ffff).max(1) as i64;
    let special = special_use.map(str::to_string);
    match t
        .execute(
            "INSERT INTO mailboxes (id, account, name, uidvalidity, uidnext, highestmodseq, special_use) VALUES ($1, $2, $3, $4, 1, 1, $5)",
            &[&mid, &account, &name, &uidvalidity, &special],
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(StoreError::Exists(format!("mailbox {name}"))),
        Err(e) => return Err(pg(e)),
    }
    Ok(MailboxMeta {
        id: mid as u64,
        account: account.to_string(),
        name: name.to_string(),
        uidvalidity: uidvalidity as u32,
        uidnext: 1,
        highestmodseq: 1,
        special_use: special,
    })
}

/// Takes references to a body, storing it when it is new.
async fn add_ref(t: &Transaction<'_>, blob: &BlobId, raw: &[u8], n: i64) -> Result<()> {
    let blob = &blob[..];
    if execute!(t, "UPDATE blobs SET refs = refs + $2 WHERE id = $1", &[&blob, &n])? == 0 {
        execute!(
            t,
            "INSERT INTO blobs (id, body, refs) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET refs = blobs.refs + EXCLUDED.refs",
            &[&blob, &raw, &n]
        )?;
    }
    Ok(())
}

/// Changes the reference counts of bodies already stored (one entry per reference; `sign`
/// +1 or −1) and removes those no longer referenced.
async fn adjust_refs(t: &Transaction<'_>, blobs: &[Vec<u8>], sign: i64) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    execute!(
        t,
        "UPDATE blobs SET refs = refs + $2 * c.n FROM (SELECT b, count(*) AS n FROM unnest($1::bytea[]) AS b GROUP BY b) AS c WHERE id = c.b",
        &[&blobs, &sign]
    )?;
    if sign < 0 {
        execute!(t, "DELETE FROM blobs WHERE id = ANY($1) AND refs <= 0", &[&blobs])?;
    }
    Ok(())
}

/// Removes a mailbox's messages (releasing their bodies) and the mailbox.
async fn remove_mailbox(t: &Transaction<'_>, mailbox: MailboxId) -> Result<()> {
    let rows = query!(
        t,
        "DELETE FROM messages WHERE mailbox = $1 RETURNING blob",
        &[&id(mailbox)]
    )?;
    let blobs: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    adjust_refs(t, &blobs, -1).await?;
    execute!(t, "DELETE FROM mailboxes WHERE id = $1", &[&id(mailbox)])?;
    Ok(())
}

/// Locks mailboxes (ascending id) and gives their records; `NotFound` for a missing one.
async fn lock_mailboxes(t: &Transaction<'_>, ids: &[MailboxId]) -> Result<HashMap<MailboxId, MailboxMeta>> {
    let mut sorted: Vec<i64> = ids.iter().map(|&m| id(m)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let rows = query!(t, &sql, &[&sorted])?;
    let found: HashMap<MailboxId, MailboxMeta> = rows.iter().map(mailbox_of).map(|m| (m.id, m)).collect();
    match ids.iter().find(|m| !found.contains_key(m)) {
        Some(missing) => Err(StoreError::NotFound(format!("mailbox {missing}"))),
        None => Ok(found),
    }
}

async fn save_mailbox(t: &Transaction<'_>, m: &MailboxMeta) -> Result<()> {
    execute!(
        t,
        "UPDATE mailboxes SET uidnext = $2, highestmodseq = $3 WHERE id = $1",
        &[&id(m.id), &i64::from(m.uidnext), &(m.highestmodseq as i64)]
    )?;
    Ok(())
}

/// Inserts message rows into one mailbox.
async fn insert_messages(t: &Transaction<'_>, mailbox: MailboxId, rows: &[(u32, &MessageMeta)]) -> Result<()> {
    let uids: Vec<i64> = rows.iter().map(|(u, _)| i64::from(*u)).collect();
    let blobs: Vec<&[u8]> = rows.iter().map(|(_, m)| &m.blob[..]).collect();
    let sizes: Vec<i64> = rows.iter().map(|(_, m)| m.size as i64).collect();
    let dates: Vec<i64> = rows.iter().map(|(_, m)| m.internal_date).collect();
    let modseqs: Vec<i64> = rows.iter().map(|(_, m)| m.modseq as i64).collect();
    let flags: Vec<i16> = rows.iter().map(|(_, m)| i16::from(m.flags.0)).collect();
    let keywords: Vec<String> = rows.iter().map(|(_, m)| m.keywords.join(" ")).collect();
    let params: [&(dyn ToSql + Sync); 8] = [&id(mailbox), &uids, &blobs, &sizes, &dates, &modseqs, &flags, &keywords];
    execute!(
        t,
        "INSERT INTO messages (mailbox, uid, blob, size, internal_date, modseq, flags, keywords) \
         SELECT $1, * FROM unnest($2::bigint[], $3::bytea[], $4::bigint[], $5::bigint[], $6::bigint[], $7::smallint[], $8::text[])",
        &params
    )?;
    Ok(())
}

fn next_uid(m: &mut MailboxMeta) -> Result<u32> {
    let uid = m.uidnext;
    m.uidnext = m
        .uidnext
        .checked_add(1)
        .ok_or_else(|| StoreError::Invalid("uid space exhausted".into()))?;
    Ok(uid)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store records serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T> {
    serde_json::from_str(v).map_err(|e| StoreError::Backend(format!("corrupt {what} record: {e}")))
}

impl Directory for PgStore {
    fn create_account(&self, address: &str, password_hash: &str) -> Result<()> {
        self.inner.write_directory(async |t: &Transaction<'_>| {
            let n = execute!(
                t,
                "INSERT INTO accounts (address, password_hash, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&address, &password_hash, &now_secs()]
            )?;
            if n == 0 {
                return Err(StoreError::Exists(format!("account {address}")));
            }
            for (name, special) in DEFAULT_MAILBOXES {
                new_mailbox(t, address, name, special).await?;
                execute!(
                    t,
                    "INSERT INTO subscriptions (account, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&address, &name]
                )?;
            }
            Ok(((), Vec::new()))
        })
    }

    fn delete_account(&self, address: &str) -> Result<()> {
        self.inner.write_directory(async |t: &Transaction<'_>| {
            if query!(t, "SELECT 1 FROM accounts WHERE address = $1 FOR UPDATE", &[&address])?.is_empty() {
                return Err(StoreError::NotFound(format!("account {address}")));
            }
            let rows = query!(
                t,
                "SELECT id FROM mailboxes WHERE account = $1 ORDER BY id FOR UPDATE",
                &[&address]
            )?;
            let ids: Vec<MailboxId> = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
            for &m in &ids {
                remove_mailbox(t, m).await?;
            }
            execute!(t, "DELETE FROM subscriptions WHERE account = $1", &[&address])?;
            execute!(t, "DELETE FROM accounts WHERE address = $1", &[&address])?;
            Ok(((), ids))
        })
    }

    fn set_password(&self, address: &str, password_hash: &str) -> Result<()> {
        self.inner.write_directory(async |t: &Transaction<'_>| {
            let n = execute!(
                t,
                "UPDATE accounts SET password_hash = $2 WHERE address = $1",
                &[&address, &password_hash]
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("account {address}")));
            }
            Ok(((), Vec::new()))
        })
    }

    fn account(&self, address: &str) -> Result<Option<Account>> {
        self.inner.cached(
            |c| c.accounts.get(address).cloned(),
            || {
                self.inner.read(async |c: &deadpool_postgres::Client| {
                    let rows = query!(
                        c,
                        "SELECT address, password_hash, created FROM accounts WHERE address = $1",
                        &[&address]
                    )?;
                    Ok(rows.first().map(|r| Account {
                        address: r.get(0),
                        password_hash: r.get(1),
                        created: r.get(2),
                    }))
                })
            },
            |c, v| {
                c.accounts.insert(address.to_string(), v);
            },
        )
    }

    fn accounts(&self) -> Result<Vec<Account>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let rows = query!(
                c,
                "SELECT address, password_hash, created FROM accounts ORDER BY address COLLATE \"C\"",
                &[]
            )?;
            Ok(rows
                .iter()
                .map(|r| Account {
                    address: r.get(0),
                    password_hash: r.get(1),
                    created: r.get(2),
                })
                .collect())
        })
    }

    fn add_domain(&self, domain: &str) -> Result<()> {
        self.inner.write_directory(async |t: &Transaction<'_>| {
            if execute!(
                t,
                "INSERT INTO domains (domain) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&domain]
            )? == 0
            {
                return Err(StoreError::Exists(format!("domain {domain}")));
            }
            Ok(((), Vec::new()))
        })
    }

    fn delete_domain(&self, domain: &str) -> Result<()> {
        self.inner.write_directory(async |t: &Transaction<'_>| {
            if execute!(t, "DELETE FROM domains WHERE domain = $1", &[&domain])? == 0 {
                return Err(StoreError::NotFound(format!("domain {domain}")));
            }
            Ok(((), Vec::new()))
        })
    }

    fn domains(&self) -> Result<Vec<String>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let rows = query!(c, "SELECT domain FROM domains ORDER BY domain COLLATE \"C\"", &[])?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        self.inner.cached(
            |c| c.domains.get(domain).copied(),
            || {
                self.inner.read(async |c: &deadpool_postgres::Client| {
                    Ok(!query!(c, "SELECT 1 FROM domains WHERE domain = $1", &[&domain])?.is_empty())
                })
            },
            |c, v| {
                c.domains.insert(domain.to_string(), v);
            },
        )
    }

    fn set_alias(&self, source: &str, targets: &[String]) -> Result<()> {
        if targets.is_empty() {
            return Err(StoreError::Invalid("an alias needs at least one target".into()));
        }
        self.inner.write_directory(async |t: &Transaction<'_>| {
            execute!(
                t,
                "INSERT INTO aliases (source, targets) VALUES ($1, $2) ON CONFLICT (source) DO UPDATE SET targets = EXCLUDED.targets",
                &[&source, &targets]
            )?;
            Ok(((), Vec::new()))
        })
    }

    fn delete_alias(&self, source: &str) -> Result<()> {
        self.inner.write_directory(async |t: &Transaction<'_>| {
            if execute!(t, "DELETE FROM aliases WHERE source = $1", &[&source])? == 0 {
                return Err(StoreError::NotFound(format!("alias {source}")));
            }
            Ok(((), Vec::new()))
        })
    }

    fn alias(&self, source: &str) -> Result<Option<Vec<String>>> {
        self.inner.cached(
            |c| c.aliases.get(source).cloned(),
            || {
                self.inner.read(async |c: &deadpool_postgres::Client| {
                    let rows = query!(c, "SELECT targets FROM aliases WHERE source = $1", &[&source])?;
                    Ok(rows.first().map(|r| r.get(0)))
                })
            },
            |c, v| {
                c.aliases.insert(source.to_string(), v);
            },
        )
    }

    fn aliases(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let rows = query!(
                c,
                "SELECT source, targets FROM aliases ORDER BY source COLLATE \"C\"",
                &[]
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

impl Mailboxes for PgStore {
    fn mailbox(&self, account: &str, name: &str) -> Result<Option<MailboxMeta>> {
        let name = inbox_name(name);
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account = $1 AND name = $2");
            Ok(query!(c, &sql, &[&account, &name])?.first().map(mailbox_of))
        })
    }

    fn mailboxes(&self, account: &str) -> Result<Vec<MailboxMeta>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account = $1 ORDER BY name COLLATE \"C\"");
            Ok(query!(c, &sql, &[&account])?.iter().map(mailbox_of).collect())
        })
    }

    fn mailbox_by_id(&self, mailbox: MailboxId) -> Result<Option<MailboxMeta>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1");
            Ok(query!(c, &sql, &[&id(mailbox)])?.first().map(mailbox_of))
        })
    }

    fn create_mailbox(&self, account: &str, name: &str, special_use: Option<&str>) -> Result<MailboxMeta> {
        if name.is_empty() || name.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::Invalid(format!("cannot create {name:?}")));
        }
        self.inner.write(async |t: &Transaction<'_>| {
            // The account row is share-locked so it cannot be deleted under the new mailbox.
            if query!(t, "SELECT 1 FROM accounts WHERE address = $1 FOR SHARE", &[&account])?.is_empty() {
                return Err(StoreError::NotFound(format!("account {account}")));
            }
            Ok((
                new_mailbox(t, account, name, special_use).await?,
                vec![mailbox_list_notice(account)],
            ))
        })
    }

    fn delete_mailbox(&self, account: &str, name: &str) -> Result<()> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        self.inner.write(async |t: &Transaction<'_>| {
            let rows = query!(
                t,
                "SELECT id FROM mailboxes WHERE account = $1 AND name = $2 FOR UPDATE",
                &[&account, &name]
            )?;
            let Some(row) = rows.first() else {
                return Err(StoreError::NotFound(format!("mailbox {name}")));
            };
            let mailbox = row.get::<_, i64>(0) as u64;
            remove_mailbox(t, mailbox).await?;
            Ok(((), vec![mailbox, mailbox_list_notice(account)]))
        })
    }

    fn rename_mailbox(&self, account: &str, from: &str, to: &str, delimiter: char) -> Result<()> {
        if to.is_empty() || to.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::Invalid(format!("cannot rename to {to:?}")));
        }
        let from = inbox_name(from);
        self.inner.write(async |t: &Transaction<'_>| {
            let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account = $1 AND name = $2 FOR UPDATE");
            let Some(source) = query!(t, &sql, &[&account, &from])?.first().map(mailbox_of) else {
                return Err(StoreError::NotFound(format!("mailbox {from}")));
            };
            if !query!(
                t,
                "SELECT 1 FROM mailboxes WHERE account = $1 AND name = $2",
                &[&account, &to]
            )?
            .is_empty()
            {
                return Err(StoreError::Exists(format!("mailbox {to}")));
            }
            if source.name == "INBOX" {
                // INBOX stays (empty); its messages move to a new mailbox with the new name,
                // numbered from 1 in their order.
                let mut target = new_mailbox(t, account, to, None).await?;
                let moved = query!(
                    t,
                    "WITH moved AS (DELETE FROM messages WHERE mailbox = $1 RETURNING *), \
                     numbered AS (SELECT *, row_number() OVER (ORDER BY uid) AS n FROM moved) \
                     INSERT INTO messages (mailbox, uid, blob, size, internal_date, modseq, flags, keywords) \
                     SELECT $2, n, blob, size, internal_date, 1 + n, flags, keywords FROM numbered RETURNING uid",
                    &[&id(source.id), &id(target.id)]
                )?;
                let n = moved.len() as u64;
                target.uidnext = u32::try_from(n + 1).map_err(|_| StoreError::Invalid("uid space exhausted".into()))?;
                target.highestmodseq = 1 + n;
                save_mailbox(t, &target).await?;
                let mut inbox = source.clone();
                inbox.highestmodseq += 1;
                save_mailbox(t, &inbox).await?;
                return Ok(((), vec![source.id, mailbox_list_notice(account)]));
            }
            let prefix = format!("{}{delimiter}", source.name);
            let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE account = $1 ORDER BY id FOR UPDATE");
            let children: Vec<MailboxMeta> = query!(t, &sql, &[&account])?
                .iter()
                .map(mailbox_of)
                .filter(|m| m.name.starts_with(&prefix))
                .collect();
            for mb in std::iter::once(&source).chain(&children) {
                let new_name = format!("{to}{}", &mb.name[source.name.len()..]);
                match t
                    .execute("UPDATE mailboxes SET name = $2 WHERE id = $1", &[&id(mb.id), &new_name])
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Exists(format!("mailbox {new_name}")));
                    }
                    Err(e) => return Err(pg(e)),
                }
            }
            Ok(((), vec![mailbox_list_notice(account)]))
        })
    }

    fn subscriptions(&self, account: &str) -> Result<Vec<String>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let rows = query!(
                c,
                "SELECT name FROM subscriptions WHERE account = $1 ORDER BY name COLLATE \"C\"",
                &[&account]
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn set_subscribed(&self, account: &str, name: &str, subscribed: bool) -> Result<()> {
        let name = inbox_name(name);
        self.inner.write(async |t: &Transaction<'_>| {
            if subscribed {
                execute!(
                    t,
                    "INSERT INTO subscriptions (account, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&account, &name]
                )?;
            } else {
                execute!(
                    t,
                    "DELETE FROM subscriptions WHERE account = $1 AND name = $2",
                    &[&account, &name]
                )?;
            }
            Ok(((), vec![mailbox_list_notice(account)]))
        })
    }

    fn watch(&self, mailbox: MailboxId) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watchers.watch(mailbox)
    }
}

impl Messages for PgStore {
    fn deliver_to(&self, raw: &[u8], internal_date: i64, targets: &[Target]) -> Result<Vec<u32>> {
        let blob = blob_id(raw);
        // Per mailbox (ascending id, the lock order), the targets' positions.
        let mut groups: std::collections::BTreeMap<MailboxId, Vec<usize>> = Default::default();
        for (i, t) in targets.iter().enumerate() {
            groups.entry(t.mailbox).or_default().push(i);
        }
        let args: Vec<(i64, Vec<i16>, Vec<String>)> = groups
            .iter()
            .map(|(mb, at)| {
                (
                    id(*mb),
                    at.iter().map(|&i| i16::from(targets[i].flags.0)).collect(),
                    at.iter().map(|&i| targets[i].keywords.join(" ")).collect(),
                )
            })
            .collect();
        let changed: Vec<String> = groups.keys().map(|m| m.to_string()).collect();
        let (size, refs) = (raw.len() as i64, targets.len() as i64);
        let blob_ref = &blob[..];
        // The whole delivery in one round trip: BEGIN, one statement per mailbox, the body,
        // the change notice and COMMIT, pipelined. A failing statement aborts the
        // transaction, and COMMIT then rolls it back.
        let rows = self.inner.block(async |inner: &Inner| {
            let client = inner.pool.get().await.map_err(pg)?;
            let deliver = client
                .prepare_cached("SELECT new_uid FROM mailgate_deliver($1, $2, $3, $4, $5, $6)")
                .await
                .map_err(pg)?;
            let body = client
                .prepare_cached(
                    "INSERT INTO blobs (id, body, refs) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET refs = blobs.refs + EXCLUDED.refs",
                )
                .await
                .map_err(pg)?;
            let notice = client.prepare_cached(NOTICE_SQL).await.map_err(pg)?;
            let params: Vec<[&(dyn ToSql + Sync); 6]> = args
                .iter()
                .map(|(mb, flags, keywords)| -> [&(dyn ToSql + Sync); 6] {
                    [mb, &blob_ref, &size, &internal_date, flags, keywords]
                })
                .collect();
            let body_params: [&(dyn ToSql + Sync); 3] = [&blob_ref, &raw, &refs];
            let notice_params: [&(dyn ToSql + Sync); 3] = [&CHANNEL, &inner.node, &changed];
            let per_mailbox = futures_util::future::join_all(params.iter().map(|p| client.query(&deliver, p)));
            let (begin, delivered, stored, noticed, commit) = futures_util::join!(
                client.batch_execute("BEGIN"),
                per_mailbox,
                client.execute(&body, &body_params),
                client.execute(&notice, &notice_params),
                client.batch_execute("COMMIT"),
            );
            begin.map_err(pg)?;
            let mut rows = Vec::with_capacity(delivered.len());
            for d in delivered {
                rows.push(d.map_err(|e| {
                    match e.code() {
                        Some(c) if *c == tokio_postgres::error::SqlState::NO_DATA_FOUND => StoreError::NotFound(
                            e.as_db_error()
                                .map_or_else(|| e.to_string(), |d| d.message().to_string()),
                        ),
                        Some(c) if *c == tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE => {
                            StoreError::Invalid("uid space exhausted".into())
                        }
                        _ => pg(e),
                    }
                })?);
            }
            stored.map_err(pg)?;
            noticed.map_err(pg)?;
            commit.map_err(pg)?;
            inner.transactions.fetch_add(1, Ordering::Relaxed);
            Ok(rows)
        })?;
        self.inner.notify(&groups.keys().copied().collect::<Vec<_>>());
        let mut uids = vec![0u32; targets.len()];
        for ((_, at), r) in groups.iter().zip(rows) {
            if r.len() != at.len() {
                return Err(StoreError::Backend(
                    "a delivery stored fewer messages than asked".into(),
                ));
            }
            for (&i, row) in at.iter().zip(&r) {
                uids[i] = row.get::<_, i64>(0) as u32;
            }
        }
        Ok(uids)
    }

    fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagResult> {
        self.inner.write(async |t: &Transaction<'_>| {
            let mut meta = lock_mailboxes(t, &[mailbox]).await?.remove(&mailbox).expect("locked");
            let wanted: Vec<i64> = uids.iter().map(|&u| i64::from(u)).collect();
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = $1 AND uid = ANY($2)");
            let mut current: HashMap<u32, MessageMeta> = HashMap::new();
            for r in query!(t, &sql, &[&id(mailbox), &wanted])? {
                let (uid, m) = message_of(&r)?;
                current.insert(uid, m);
            }
            let mut result = FlagResult::default();
            for &uid in uids {
                let Some(m) = current.get_mut(&uid) else { continue };
                result.apply(uid, m, &mut meta.highestmodseq, op, flags, keywords, unchanged_since);
            }
            if result.changed.is_empty() {
                return Ok((result, Vec::new()));
            }
            let c = &result.changed;
            let uids: Vec<i64> = c.iter().map(|(u, _)| i64::from(*u)).collect();
            let flags: Vec<i16> = c.iter().map(|(_, m)| i16::from(m.flags.0)).collect();
            let keywords: Vec<String> = c.iter().map(|(_, m)| m.keywords.join(" ")).collect();
            let modseqs: Vec<i64> = c.iter().map(|(_, m)| m.modseq as i64).collect();
            execute!(
                t,
                "UPDATE messages AS m SET flags = u.f, keywords = u.k, modseq = u.ms \
                 FROM unnest($2::bigint[], $3::smallint[], $4::text[], $5::bigint[]) AS u(uid, f, k, ms) \
                 WHERE m.mailbox = $1 AND m.uid = u.uid",
                &[&id(mailbox), &uids, &flags, &keywords, &modseqs]
            )?;
            save_mailbox(t, &meta).await?;
            Ok((result, vec![mailbox]))
        })
    }

    fn copy_messages(&self, from: MailboxId, uids: &[u32], to: MailboxId, remove: bool) -> Result<Vec<(u32, u32)>> {
        self.inner.write(async |t: &Transaction<'_>| {
            let mut boxes = lock_mailboxes(t, &[from, to]).await?;
            let mut sorted: Vec<i64> = uids.iter().map(|&u| i64::from(u)).collect();
            sorted.sort_unstable();
            sorted.dedup();
            let sql =
                format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = $1 AND uid = ANY($2) ORDER BY uid");
            let found = query!(t, &sql, &[&id(from), &sorted])?;
            if found.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            let dst = boxes.get_mut(&to).expect("locked");
            let mut pairs = Vec::new();
            let mut copies = Vec::new();
            for r in &found {
                let (uid, mut m) = message_of(r)?;
                let new_uid = next_uid(dst)?;
                dst.highestmodseq += 1;
                m.modseq = dst.highestmodseq;
                pairs.push((uid, new_uid));
                copies.push((new_uid, m));
            }
            let dst = dst.clone();
            if remove {
                let gone: Vec<i64> = pairs.iter().map(|(u, _)| i64::from(*u)).collect();
                execute!(
                    t,
                    "DELETE FROM messages WHERE mailbox = $1 AND uid = ANY($2)",
                    &[&id(from), &gone]
                )?;
                // Within one mailbox the destination's record is the one that counts (as in
                // the sled store).
                if from != to {
                    let src = boxes.get_mut(&from).expect("locked");
                    src.highestmodseq += 1;
                    save_mailbox(t, src).await?;
                }
            } else {
                let blobs: Vec<Vec<u8>> = copies.iter().map(|(_, m)| m.blob.to_vec()).collect();
                adjust_refs(t, &blobs, 1).await?;
            }
            let rows: Vec<(u32, &MessageMeta)> = copies.iter().map(|(u, m)| (*u, m)).collect();
            insert_messages(t, to, &rows).await?;
            save_mailbox(t, &dst).await?;
            Ok((pairs, vec![from, to]))
        })
    }

    fn expunge(&self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>> {
        self.inner.write(async |t: &Transaction<'_>| {
            let mut meta = lock_mailboxes(t, &[mailbox]).await?.remove(&mailbox).expect("locked");
            let wanted: Vec<i64> = uids.iter().map(|&u| i64::from(u)).collect();
            let rows = query!(
                t,
                "DELETE FROM messages WHERE mailbox = $1 AND uid = ANY($2) RETURNING uid, blob",
                &[&id(mailbox), &wanted]
            )?;
            if rows.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            let gone: std::collections::HashSet<u32> = rows.iter().map(|r| r.get::<_, i64>(0) as u32).collect();
            let blobs: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1)).collect();
            adjust_refs(t, &blobs, -1).await?;
            meta.highestmodseq += 1;
            save_mailbox(t, &meta).await?;
            // In the order asked, each once.
            let mut removed = Vec::with_capacity(gone.len());
            for &u in uids {
                if gone.contains(&u) && !removed.contains(&u) {
                    removed.push(u);
                }
            }
            Ok((removed, vec![mailbox]))
        })
    }

    fn messages(&self, mailbox: MailboxId) -> Result<Vec<StoredMessage>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = $1 ORDER BY uid");
            query!(c, &sql, &[&id(mailbox)])?
                .iter()
                .map(|r| message_of(r).map(|(uid, meta)| StoredMessage { mailbox, uid, meta }))
                .collect()
        })
    }

    fn message(&self, mailbox: MailboxId, uid: u32) -> Result<Option<StoredMessage>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = $1 AND uid = $2");
            match query!(c, &sql, &[&id(mailbox), &i64::from(uid)])?.first() {
                Some(r) => {
                    let (uid, meta) = message_of(r)?;
                    Ok(Some(StoredMessage { mailbox, uid, meta }))
                }
                None => Ok(None),
            }
        })
    }

    fn blob(&self, blob: &BlobId) -> Result<Option<Vec<u8>>> {
        let blob = &blob[..];
        self.inner.read(async |c: &deadpool_postgres::Client| {
            Ok(query!(c, "SELECT body FROM blobs WHERE id = $1", &[&blob])?
                .first()
                .map(|r| r.get(0)))
        })
    }

    fn blobs(&self, ids: &[BlobId]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<&[u8]> = ids.iter().map(|b| &b[..]).collect();
        let mut found: HashMap<Vec<u8>, Vec<u8>> = self.inner.read(async |c: &deadpool_postgres::Client| {
            Ok(query!(c, "SELECT id, body FROM blobs WHERE id = ANY($1)", &[&keys])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })?;
        // The same body twice (a message copied within the mailbox) is asked for twice.
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if ids[i + 1..].contains(id) {
                    found.get(&id[..]).cloned()
                } else {
                    found.remove(&id[..])
                }
            })
            .collect())
    }

    fn blob_count(&self) -> Result<usize> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            Ok(query!(c, "SELECT count(*) FROM blobs", &[])?[0].get::<_, i64>(0) as usize)
        })
    }
}

impl Queue for PgStore {
    fn enqueue(&self, raw: &[u8], mut entry: QueuedMessage) -> Result<u64> {
        let blob = blob_id(raw);
        self.inner.write(async |t: &Transaction<'_>| {
            let qid: i64 = query!(t, "SELECT nextval('queue_id_seq')", &[])?[0].get(0);
            entry.id = qid as u64;
            entry.blob = blob;
            entry.size = raw.len() as u64;
            add_ref(t, &blob, raw, 1).await?;
            execute!(
                t,
                "INSERT INTO queue (id, entry, blob) VALUES ($1, $2, $3)",
                &[&qid, &json(&entry), &&blob[..]]
            )?;
            Ok((entry.id, Vec::new()))
        })
    }

    fn queued(&self) -> Result<Vec<QueuedMessage>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            query!(c, "SELECT entry FROM queue ORDER BY id", &[])?
                .iter()
                .map(|r| from_json("queue", r.get(0)))
                .collect()
        })
    }

    fn queued_message(&self, qid: u64) -> Result<Option<QueuedMessage>> {
        self.inner.read(async |c: &deadpool_postgres::Client| {
            query!(c, "SELECT entry FROM queue WHERE id = $1", &[&(qid as i64)])?
                .first()
                .map(|r| from_json("queue", r.get(0)))
                .transpose()
        })
    }

    fn modify_queued(&self, qid: u64, f: &mut dyn FnMut(&mut QueuedMessage)) -> Result<Option<QueuedMessage>> {
        self.inner.write(async |t: &Transaction<'_>| {
            let rows = query!(t, "SELECT entry FROM queue WHERE id = $1 FOR UPDATE", &[&(qid as i64)])?;
            let Some(row) = rows.first() else {
                return Ok((None, Vec::new()));
            };
            let mut entry: QueuedMessage = from_json("queue", row.get(0))?;
            f(&mut entry);
            if entry.recipients.iter().any(|r| r.state.pending()) {
                execute!(
                    t,
                    "UPDATE queue SET entry = $2 WHERE id = $1",
                    &[&(qid as i64), &json(&entry)]
                )?;
            } else {
                execute!(t, "DELETE FROM queue WHERE id = $1", &[&(qid as i64)])?;
                adjust_refs(t, &[entry.blob.to_vec()], -1).await?;
            }
            Ok((Some(entry), Vec::new()))
        })
    }

    fn lease_queued(&self, entries: Vec<QueuedMessage>, holder: &str, until: i64) -> Result<Vec<QueuedMessage>> {
        let ids: Vec<i64> = entries.iter().map(|e| e.id as i64).collect();
        self.inner.write(async |t: &Transaction<'_>| {
            // Rows another node is leasing right now are skipped, not waited for; what is
            // granted comes back as it stands.
            let rows = query!(
                t,
                "UPDATE queue SET lease_holder = $2, lease_until = $3 WHERE id IN \
                 (SELECT id FROM queue WHERE id = ANY($1) \
                  AND (lease_holder IS NULL OR lease_holder = $2 OR lease_until < $4) \
                  FOR UPDATE SKIP LOCKED) RETURNING entry",
                &[&ids, &holder, &until, &now_secs()]
            )?;
            let mut granted: Vec<QueuedMessage> = rows
                .iter()
                .map(|r| from_json("queue", r.get(0)))
                .collect::<Result<_>>()?;
            granted.sort_unstable_by_key(|e| e.id);
            Ok((granted, Vec::new()))
        })
    }

    fn release_queued(&self, ids: &[u64], holder: &str) -> Result<()> {
        let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        self.inner.write(async |t: &Transaction<'_>| {
            execute!(
                t,
                "UPDATE queue SET lease_holder = NULL, lease_until = NULL WHERE id = ANY($1) AND lease_holder = $2",
                &[&ids, &holder]
            )?;
            Ok(((), Vec::new()))
        })
    }

    fn remove_queued(&self, qid: u64) -> Result<bool> {
        self.inner.write(async |t: &Transaction<'_>| {
            let rows = query!(t, "DELETE FROM queue WHERE id = $1 RETURNING blob", &[&(qid as i64)])?;
            let blobs: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
            adjust_refs(t, &blobs, -1).await?;
            Ok((!blobs.is_empty(), Vec::new()))
        })
    }
}

impl KeyValue for PgStore {
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.as_bytes();
        self.inner.read(async |c: &deadpool_postgres::Client| {
            Ok(query!(c, "SELECT value FROM kv WHERE key = $1", &[&key])?
                .first()
                .map(|r| r.get(0)))
        })
    }

    fn kv_set(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        let key = key.as_bytes();
        self.inner.write(async |t: &Transaction<'_>| {
            match value {
                Some(v) => execute!(
                    t,
                    "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&key, &v]
                )?,
                None => execute!(t, "DELETE FROM kv WHERE key = $1", &[&key])?,
            };
            Ok(((), Vec::new()))
        })
    }

    fn kv_retain(&self, keep: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<usize> {
        let all = self.inner.read(async |c: &deadpool_postgres::Client| {
            let rows = query!(c, "SELECT key, value FROM kv", &[])?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                .collect::<Vec<_>>())
        })?;
        let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = all.into_iter().filter(|(k, v)| !keep(k, v)).unzip();
        if keys.is_empty() {
            return Ok(0);
        }
        // Only entries still holding the value judged: one rewritten meanwhile stays.
        self.inner.write(async |t: &Transaction<'_>| {
            let n = execute!(
                t,
                "DELETE FROM kv USING unnest($1::bytea[], $2::bytea[]) AS g(k, v) WHERE kv.key = g.k AND kv.value = g.v",
                &[&keys, &values]
            )?;
            Ok((n as usize, Vec::new()))
        })
    }

    fn kv_get_large(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let k = key.as_bytes();
        let v = self.inner.read(async |c: &deadpool_postgres::Client| {
            Ok(query!(c, "SELECT value FROM kv_large WHERE key = $1", &[&k])?
                .first()
                .map(|r| r.get(0)))
        })?;
        match v {
            Some(v) => Ok(Some(v)),
            None => self.kv_get(key),
        }
    }

    fn kv_set_large_with(&self, key: &str, value: Option<&[u8]>, small: &[(String, Option<Vec<u8>>)]) -> Result<()> {
        let key = key.as_bytes();
        self.inner.write(async |t: &Transaction<'_>| {
            for (k, v) in small {
                let k = k.as_bytes();
                match v {
                    Some(v) => execute!(
                        t,
                        "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        &[&k, v]
                    )?,
                    None => execute!(t, "DELETE FROM kv WHERE key = $1", &[&k])?,
                };
            }
            match value {
                Some(v) => execute!(
                    t,
                    "INSERT INTO kv_large (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&key, &v]
                )?,
                None => execute!(t, "DELETE FROM kv_large WHERE key = $1", &[&key])?,
            };
            execute!(t, "DELETE FROM kv WHERE key = $1", &[&key])?;
            Ok(((), Vec::new()))
        })
    }
}
