//! The store contract: one test body per behaviour, run against every backend (sled, and
//! PostgreSQL when its binaries are on the machine; `pg_store::harness`). A backend passes
//! only if it behaves as the others do, so the protocols above cannot tell them apart.

use super::*;
use std::sync::Arc;

/// A store under test and the means to open the same store again.
pub struct Fixture {
    pub store: Arc<dyn MailStore>,
    open: Box<dyn Fn() -> Arc<dyn MailStore> + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// Makes everything durable, drops the store (the caller holds no other handle) and
    /// opens it again.
    pub async fn reopen(self) -> Fixture {
        self.store.sync().await.unwrap();
        self.store.checkpoint().await.unwrap();
        let Fixture { store, open, _dir } = self;
        drop(store);
        Fixture {
            store: open(),
            open,
            _dir,
        }
    }

    /// Another handle on the same data: for PostgreSQL a second store (another node); sled
    /// allows one opener, so its second handle is the same store.
    pub fn second(&self) -> Arc<dyn MailStore> {
        (self.open)()
    }
}

pub fn sled() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let first: Arc<dyn MailStore> = Arc::new(SledStore::open(&path, 16).unwrap());
    let shared = std::sync::Mutex::new(Arc::downgrade(&first));
    let open = move || -> Arc<dyn MailStore> {
        if let Some(s) = shared.lock().unwrap().upgrade() {
            return s;
        }
        // sled's flusher lets go of the file lock a moment after the last handle is gone.
        for _ in 0..500 {
            if let Ok(s) = SledStore::open(&path, 16) {
                let s: Arc<dyn MailStore> = Arc::new(s);
                *shared.lock().unwrap() = Arc::downgrade(&s);
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("reopening the sled store");
    };
    Some(Fixture {
        store: first,
        open: Box::new(open),
        _dir: Some(dir),
    })
}

pub fn postgres() -> Option<Fixture> {
    let url = pg_store::harness::database()?;
    let open = move || -> Arc<dyn MailStore> { Arc::new(PgStore::open(&url, 8, 1).unwrap()) };
    Some(Fixture {
        store: open(),
        open: Box::new(open),
        _dir: None,
    })
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sled().unwrap()).await
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(f) = super::postgres() {
                        super::$name(f).await
                    }
                }
            )*
        }
    };
}

contract!(
    accounts_get_special_use_mailboxes,
    one_body_for_many_recipients_counted_by_reference,
    a_recreated_account_gets_a_new_uidvalidity,
    queue_entries_share_bodies_survive_reopening_and_release_them,
    directory_records_round_trip,
    flags_copy_move_and_expunge,
    renames_subscriptions_and_deletions,
    key_value_state,
    watchers_hear_of_every_change,
    concurrent_deliveries_get_distinct_consecutive_uids,
    one_pop3_session_per_maildrop,
    directory_changes_reach_every_node,
    exclusive_locks_keep_read_modify_writes_whole,
    deliveries_by_folder_name_fall_back_to_inbox,
    concurrent_folder_deliveries_from_two_nodes_get_consecutive_uids,
);

/// A store call from a task that has used up tokio's cooperative budget gets its answer
/// (it spun for ever: every tokio resource the blocking call polled said "yield").
#[test]
fn a_task_out_of_budget_still_gets_answers() {
    let Some(f) = postgres() else { return };
    let (done, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            f.store.create_account("a@x.test", "h").unwrap();
            let permits = tokio::sync::Semaphore::new(1 << 20);
            while tokio::task::coop::has_budget_remaining() {
                permits.acquire().await.unwrap().forget();
            }
            let inbox = f.store.mailbox("a@x.test", "INBOX").unwrap();
            done.send(inbox.is_some()).unwrap();
        });
    });
    let found = answered
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the store call came back");
    assert!(found);
}

/// One delivery that fails among many joined into one PostgreSQL transaction fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_delivery_does_not_fail_the_ones_joined_with_it() {
    let Some(f) = postgres() else { return };
    let s = f.store.clone();
    s.create_account("a@x.test", "h").unwrap();
    let deliveries: Vec<_> = (0..40)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let t = FolderTarget {
                    account: "a@x.test".into(),
                    folder: "INBOX".into(),
                    // PostgreSQL's text cannot hold NUL: this one delivery fails there.
                    keywords: if i == 17 { vec!["bad\0".into()] } else { Vec::new() },
                    ..FolderTarget::default()
                };
                s.deliver_to_folders(format!("message {i}").as_bytes(), 0, &[t]).await
            })
        })
        .collect();
    let mut uids = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        match d.await.unwrap() {
            Ok(p) if i != 17 => uids.push(p[0].unwrap().uid),
            Err(StoreError::Backend(_)) if i == 17 => {}
            other => panic!("delivery {i}: {other:?}"),
        }
    }
    uids.sort_unstable();
    assert_eq!(uids, (1..=39).collect::<Vec<u32>>());
    assert_eq!(s.blob_count().unwrap(), 39, "the failed one left no body");
}

/// A mailbox whose UID space is used up refuses its deliveries, and only those: the ones
/// joined with them for other mailboxes go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_uid_space_fails_only_its_own_deliveries() {
    let Some(url) = pg_store::harness::database() else {
        return;
    };
    let s: Arc<dyn MailStore> = Arc::new(PgStore::open(&url, 8, 1).unwrap());
    s.create_account("full@x.test", "h").unwrap();
    s.create_account("room@x.test", "h").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE mailboxes SET uidnext = 4294967295 WHERE account = 'full@x.test' AND name = 'INBOX'",
            &[],
        )
        .await
        .unwrap();
    let deliveries: Vec<_> = (0..40)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let to = if i % 2 == 0 { "full@x.test" } else { "room@x.test" };
                s.deliver_to_folders(format!("message {i}").as_bytes(), 0, &[to_folder(to, "INBOX")])
                    .await
            })
        })
        .collect();
    let mut uids = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        match d.await.unwrap() {
            Ok(p) if i % 2 == 1 => uids.push(p[0].unwrap().uid),
            Err(StoreError::Invalid(e)) if i % 2 == 0 => assert_eq!(e, "uid space exhausted"),
            other => panic!("delivery {i}: {other:?}"),
        }
    }
    uids.sort_unstable();
    assert_eq!(uids, (1..=20).collect::<Vec<u32>>());
    let full = s.mailbox("full@x.test", "INBOX").unwrap().unwrap();
    assert_eq!(full.uidnext, 4294967295, "nothing taken");
    assert!(s.messages(full.id).unwrap().is_empty());
    assert_eq!(s.blob_count().unwrap(), 20, "the refused ones left no body");
}

/// Two stores on one PostgreSQL database (two nodes): queue leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_leases_keep_nodes_apart_and_expire() {
    let Some(f) = postgres() else { return };
    let (a, b) = (f.store.clone(), f.second());
    let id1 = a.enqueue(b"one", queued(&["x@remote.example"])).unwrap();
    let id2 = a.enqueue(b"two", queued(&["y@remote.example"])).unwrap();
    let later = now_secs() + 600;
    // Leases the entries (as scanned now) by id; gives the ids granted.
    let lease = |s: &Arc<dyn MailStore>, ids: &[u64], holder: &str, until: i64| -> Vec<u64> {
        let scanned: Vec<QueuedMessage> = ids.iter().filter_map(|&id| s.queued_message(id).unwrap()).collect();
        s.lease_queued(scanned, holder, until)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(lease(&a, &[id1], "node-a", later), [id1]);
    assert_eq!(lease(&b, &[id1, id2], "node-b", later), [id2], "id1 is node-a's");
    assert_eq!(
        lease(&a, &[id1, id2], "node-a", later),
        [id1],
        "renewed; id2 is node-b's"
    );
    // Changing the entry (recording an attempt) keeps the lease.
    a.modify_queued(id1, &mut |q| q.recipients[0].attempts = 1).unwrap();
    assert!(lease(&b, &[id1], "node-b", later).is_empty());
    a.release_queued(&[id1], "node-a").unwrap();
    assert_eq!(lease(&b, &[id1], "node-b", later), [id1]);
    // Granted as it stands, not as it was scanned.
    let mut stale = queued(&["x@remote.example"]);
    stale.id = id1;
    let fresh = b.lease_queued(vec![stale], "node-b", later).unwrap();
    assert_eq!(fresh[0].recipients[0].attempts, 1);
    // A lease whose holder went away runs out and is taken over.
    b.release_queued(&[id1], "node-a").unwrap();
    assert!(lease(&a, &[id1], "node-a", later).is_empty(), "not node-a's to release");
    a.release_queued(&[id2], "node-b").unwrap();
    assert!(lease(&b, &[id2], "node-b", now_secs() - 1) == [id2]);
    assert_eq!(lease(&a, &[id2], "node-a", later), [id2], "an expired lease");
}

fn target(mailbox: MailboxId) -> Target {
    Target {
        mailbox,
        ..Target::default()
    }
}

async fn accounts_get_special_use_mailboxes(f: Fixture) {
    let s = &f.store;
    s.create_account("alice@localhost", "h").unwrap();
    let boxes = s.mailboxes("alice@localhost").unwrap();
    let names: Vec<&str> = boxes.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["Drafts", "INBOX", "Junk", "Sent", "Trash"], "in name order");
    for (name, special) in DEFAULT_MAILBOXES {
        let m = boxes.iter().find(|m| m.name == name).unwrap();
        assert_eq!(m.special_use.as_deref(), special);
        assert_eq!((m.uidnext, m.highestmodseq), (1, 1));
        assert!(m.uidvalidity > 0);
    }
    assert!(matches!(
        s.create_account("alice@localhost", "h"),
        Err(StoreError::Exists(_))
    ));
    assert_eq!(s.mailbox("alice@localhost", "inbox").unwrap().unwrap().name, "INBOX");
    let mut subs = s.subscriptions("alice@localhost").unwrap();
    subs.sort();
    assert_eq!(subs, ["Drafts", "INBOX", "Junk", "Sent", "Trash"]);
}

async fn one_body_for_many_recipients_counted_by_reference(f: Fixture) {
    let s = &f.store;
    s.create_account("a@x.test", "h").unwrap();
    s.create_account("b@x.test", "h").unwrap();
    let a = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    let b = s.mailbox("b@x.test", "INBOX").unwrap().unwrap();
    let raw = b"Subject: hi\r\n\r\nbody\r\n";
    assert_eq!(s.deliver(raw, 1, &[a.id, b.id]).unwrap(), vec![1, 1]);
    assert_eq!(
        s.deliver(b"second", 2, &[a.id, a.id]).unwrap(),
        vec![2, 3],
        "the same mailbox twice"
    );
    assert_eq!(s.blob_count().unwrap(), 2);
    let a2 = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    assert_eq!((a2.uidnext, a2.highestmodseq), (4, 4));
    let m = s.message(a.id, 1).unwrap().unwrap();
    assert_eq!(
        (m.meta.size, m.meta.internal_date, m.meta.modseq),
        (raw.len() as u64, 1, 2)
    );
    assert_eq!(s.blob(&m.meta.blob).unwrap().unwrap(), raw);
    assert!(matches!(
        s.deliver(b"x", 3, &[a.id, 999_999]),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.messages(a.id).unwrap().len(), 3, "a failed delivery leaves nothing");
    s.delete_account("a@x.test").unwrap();
    // "second" was only in a's INBOX; the shared body is still referenced by b.
    assert_eq!(s.blob_count().unwrap(), 1);
    assert_eq!(s.messages(b.id).unwrap().len(), 1);
    assert!(s.blob(&blob_id(b"second")).unwrap().is_none());
    s.delete_account("b@x.test").unwrap();
    assert_eq!(s.blob_count().unwrap(), 0);
    assert!(matches!(s.delete_account("b@x.test"), Err(StoreError::NotFound(_))));
}

async fn a_recreated_account_gets_a_new_uidvalidity(f: Fixture) {
    let s = &f.store;
    s.create_account("a@x.test", "h").unwrap();
    let first = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    s.delete_account("a@x.test").unwrap();
    assert!(s.mailbox("a@x.test", "INBOX").unwrap().is_none());
    assert!(s.mailbox_by_id(first.id).unwrap().is_none());
    s.create_account("a@x.test", "h").unwrap();
    let second = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    assert_ne!(first.id, second.id);
    assert_ne!(first.uidvalidity, second.uidvalidity);
}

pub(crate) fn queued(recipients: &[&str]) -> QueuedMessage {
    QueuedMessage {
        id: 0,
        sender: "a@example.org".into(),
        blob: [0; 32],
        size: 0,
        arrival: 7,
        recipients: recipients
            .iter()
            .map(|a| QueuedRecipient {
                address: a.to_string(),
                next_hop: "mx".into(),
                state: RcptState::Queued,
                attempts: 0,
                next_attempt: 0,
                last_reply: String::new(),
                notify: Vec::new(),
                orcpt: None,
                etrn: false,
            })
            .collect(),
        warned: false,
        env_id: None,
        ret: None,
    }
}

async fn queue_entries_share_bodies_survive_reopening_and_release_them(f: Fixture) {
    let raw = b"Subject: out\r\n\r\nbody\r\n";
    let entry = queued(&["x@remote.example", "y@remote.example"]);
    let s = f.store.clone();
    s.create_account("alice@localhost", "h").unwrap();
    let inbox = s.mailbox("alice@localhost", "INBOX").unwrap().unwrap().id;
    s.deliver(raw, 0, &[inbox]).unwrap();
    let id1 = s.enqueue(raw, entry.clone()).unwrap();
    let id2 = s.enqueue(raw, entry.clone()).unwrap();
    assert!(id2 > id1, "ids increase");
    assert_eq!(s.blob_count().unwrap(), 1, "one body for the mailbox and both entries");
    drop(s);
    let f = f.reopen().await;
    let s = &f.store;
    let q = s.queued_message(id1).unwrap().expect("durable across reopening");
    assert_eq!((q.id, q.size, q.blob), (id1, raw.len() as u64, blob_id(raw)));
    assert_eq!(q.recipients, entry.recipients);
    assert_eq!(s.blob(&q.blob).unwrap().unwrap(), raw);
    assert_eq!(s.queued().unwrap().iter().map(|q| q.id).collect::<Vec<_>>(), [id1, id2]);
    let written = s
        .modify_queued(id1, &mut |q| q.recipients[0].state = RcptState::Delivered)
        .unwrap()
        .unwrap();
    assert_eq!(written.recipients[0].state, RcptState::Delivered);
    assert_eq!(
        s.queued_message(id1).unwrap().unwrap().recipients[0].state,
        RcptState::Delivered
    );
    s.modify_queued(id1, &mut |q| q.recipients[1].state = RcptState::Failed)
        .unwrap()
        .unwrap();
    assert!(s.queued_message(id1).unwrap().is_none(), "nothing pending: gone");
    assert!(s.modify_queued(id1, &mut |_| {}).unwrap().is_none());
    assert!(s.remove_queued(id2).unwrap());
    assert!(!s.remove_queued(id2).unwrap());
    assert!(s.queued().unwrap().is_empty());
    assert_eq!(s.blob_count().unwrap(), 1, "the mailbox still holds the body");
    assert_eq!(s.expunge(inbox, &[1]).unwrap(), [1]);
    assert_eq!(s.blob_count().unwrap(), 0);
}

async fn directory_records_round_trip(f: Fixture) {
    let s = f.store.clone();
    for a in ["zed@x.test", "amy@x.test", "Bob@x.test"] {
        s.create_account(a, "hash-1").unwrap();
    }
    let names: Vec<String> = s.accounts().unwrap().into_iter().map(|a| a.address).collect();
    assert_eq!(names, ["Bob@x.test", "amy@x.test", "zed@x.test"], "in byte order");
    s.set_password("amy@x.test", "hash-2").unwrap();
    assert_eq!(s.account("amy@x.test").unwrap().unwrap().password_hash, "hash-2");
    assert!(matches!(
        s.set_password("nobody@x.test", "h"),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.account("nobody@x.test").unwrap().is_none());

    s.add_domain("b.test").unwrap();
    s.add_domain("a.test").unwrap();
    assert!(matches!(s.add_domain("a.test"), Err(StoreError::Exists(_))));
    assert_eq!(s.domains().unwrap(), ["a.test", "b.test"]);
    assert!(s.has_domain("a.test").unwrap() && !s.has_domain("c.test").unwrap());
    s.delete_domain("a.test").unwrap();
    assert!(matches!(s.delete_domain("a.test"), Err(StoreError::NotFound(_))));

    assert!(matches!(s.set_alias("x@a.test", &[]), Err(StoreError::Invalid(_))));
    s.set_alias("x@a.test", &["amy@x.test".into()]).unwrap();
    s.set_alias("@a.test", &["zed@x.test".into(), "amy@x.test".into()])
        .unwrap();
    s.set_alias("x@a.test", &["zed@x.test".into()]).unwrap();
    assert_eq!(s.alias("x@a.test").unwrap().unwrap(), ["zed@x.test"]);
    assert_eq!(
        s.aliases().unwrap(),
        [
            (
                "@a.test".to_string(),
                vec!["zed@x.test".to_string(), "amy@x.test".to_string()]
            ),
            ("x@a.test".to_string(), vec!["zed@x.test".to_string()]),
        ]
    );
    s.delete_alias("x@a.test").unwrap();
    assert!(matches!(s.delete_alias("x@a.test"), Err(StoreError::NotFound(_))));
    drop(s);
    let f = f.reopen().await;
    assert_eq!(f.store.domains().unwrap(), ["b.test"]);
    assert_eq!(f.store.aliases().unwrap().len(), 1);
    assert_eq!(f.store.accounts().unwrap().len(), 3);
}

async fn flags_copy_move_and_expunge(f: Fixture) {
    let s = &f.store;
    s.create_account("a@x.test", "h").unwrap();
    let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap().id;
    let work = s.create_mailbox("a@x.test", "Work", None).unwrap().id;
    let uids = s
        .deliver_to(
            b"one",
            10,
            &[Target {
                mailbox: inbox,
                flags: Flags(Flags::SEEN),
                keywords: vec!["$Label1".into()],
            }],
        )
        .unwrap();
    assert_eq!(uids, [1]);
    s.deliver(b"two", 11, &[inbox]).unwrap();
    s.deliver(b"three", 12, &[inbox]).unwrap();
    let m1 = s.message(inbox, 1).unwrap().unwrap().meta;
    assert_eq!(
        (m1.flags, m1.keywords.clone()),
        (Flags(Flags::SEEN), vec!["$Label1".to_string()])
    );
    let before = s.mailbox_by_id(inbox).unwrap().unwrap().highestmodseq;

    // Add: only messages that change get a new MODSEQ; absent uids are ignored.
    let r = s
        .store_flags(inbox, &[1, 2, 99], FlagOp::Add, Flags(Flags::SEEN), &[], None)
        .unwrap();
    assert_eq!(r.changed.iter().map(|c| c.0).collect::<Vec<_>>(), [2]);
    assert_eq!(r.changed[0].1.modseq, before + 1);
    // Keywords, case-insensitively, in first-seen spelling.
    let r = s
        .store_flags(
            inbox,
            &[1, 3],
            FlagOp::Add,
            Flags(0),
            &["$label1".into(), "Work".into()],
            None,
        )
        .unwrap();
    assert_eq!(r.changed[0].1.keywords, ["$Label1", "Work"]);
    assert_eq!(r.changed[1].1.keywords, ["$label1", "Work"]);
    let r = s
        .store_flags(inbox, &[1], FlagOp::Remove, Flags(Flags::SEEN), &["WORK".into()], None)
        .unwrap();
    assert_eq!(
        (r.changed[0].1.flags, r.changed[0].1.keywords.clone()),
        (Flags(0), vec!["$Label1".to_string()])
    );
    let r = s
        .store_flags(
            inbox,
            &[2],
            FlagOp::Replace,
            Flags(Flags::FLAGGED | Flags::DRAFT),
            &["a".into(), "A".into()],
            None,
        )
        .unwrap();
    assert_eq!(r.changed[0].1.flags, Flags(Flags::FLAGGED | Flags::DRAFT));
    assert_eq!(r.changed[0].1.keywords, ["a"]);
    // UNCHANGEDSINCE: a message modified after it is left alone and reported.
    let m2 = s.message(inbox, 2).unwrap().unwrap().meta.modseq;
    let m3 = s.message(inbox, 3).unwrap().unwrap().meta.modseq;
    let since = m2.min(m3);
    let r = s
        .store_flags(inbox, &[2, 3], FlagOp::Add, Flags(Flags::ANSWERED), &[], Some(since))
        .unwrap();
    assert!(m2 > m3, "uid 2 was changed last");
    assert_eq!(r.modified, [2]);
    assert_eq!(r.changed.iter().map(|c| c.0).collect::<Vec<_>>(), [3]);
    let high = s.mailbox_by_id(inbox).unwrap().unwrap().highestmodseq;
    let stored = s.messages(inbox).unwrap();
    assert_eq!(stored.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(stored.iter().map(|m| m.meta.modseq).max().unwrap(), high);

    // COPY keeps flags and dates, gives new uids and MODSEQs, shares the body.
    let pairs = s.copy_messages(inbox, &[3, 1, 1, 42], work, false).unwrap();
    assert_eq!(pairs, [(1, 1), (3, 2)], "ascending, each once, absent skipped");
    let copied = s.message(work, 1).unwrap().unwrap().meta;
    assert_eq!(
        (copied.internal_date, copied.keywords.clone()),
        (10, vec!["$Label1".to_string()])
    );
    assert_eq!(s.blob_count().unwrap(), 3);
    assert!(s.copy_messages(inbox, &[77], work, false).unwrap().is_empty());
    assert!(matches!(
        s.copy_messages(inbox, &[1], 999_999, false),
        Err(StoreError::NotFound(_))
    ));

    // MOVE: gone from the source (whose MODSEQ moves), present in the destination.
    let src_before = s.mailbox_by_id(inbox).unwrap().unwrap().highestmodseq;
    let pairs = s.copy_messages(inbox, &[2], work, true).unwrap();
    assert_eq!(pairs, [(2, 3)]);
    assert!(s.message(inbox, 2).unwrap().is_none());
    assert_eq!(
        s.message(work, 3).unwrap().unwrap().meta.flags,
        Flags(Flags::FLAGGED | Flags::DRAFT)
    );
    assert!(s.mailbox_by_id(inbox).unwrap().unwrap().highestmodseq > src_before);
    let w = s.mailbox_by_id(work).unwrap().unwrap();
    assert_eq!(w.uidnext, 4);

    // EXPUNGE: the uids removed, in the order asked; bodies released with their last copy.
    assert_eq!(s.expunge(work, &[3, 9, 1]).unwrap(), [3, 1]);
    assert_eq!(s.expunge(work, &[3]).unwrap(), Vec::<u32>::new());
    assert_eq!(s.blob_count().unwrap(), 2, "\"two\" had one copy left after the move");
    assert_eq!(s.expunge(inbox, &[1, 3]).unwrap(), [1, 3]);
    assert_eq!(s.expunge(work, &[2]).unwrap(), [2]);
    assert_eq!(s.blob_count().unwrap(), 0);
    assert!(matches!(s.expunge(999_999, &[1]), Err(StoreError::NotFound(_))));
}

async fn renames_subscriptions_and_deletions(f: Fixture) {
    let s = &f.store;
    s.create_account("a@x.test", "h").unwrap();
    assert!(matches!(
        s.create_mailbox("a@x.test", "inbox", None),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_mailbox("nobody@x.test", "X", None),
        Err(StoreError::NotFound(_))
    ));
    let projects = s.create_mailbox("a@x.test", "Projects", Some("\\Archive")).unwrap();
    assert_eq!(projects.special_use.as_deref(), Some("\\Archive"));
    s.create_mailbox("a@x.test", "Projects/2026", None).unwrap();
    s.create_mailbox("a@x.test", "Projects/2026/Q4", None).unwrap();
    s.create_mailbox("a@x.test", "ProjectsOld", None).unwrap();
    assert!(matches!(
        s.create_mailbox("a@x.test", "Projects", None),
        Err(StoreError::Exists(_))
    ));
    s.deliver(b"kept", 1, &[projects.id]).unwrap();

    assert!(matches!(
        s.rename_mailbox("a@x.test", "Projects", "ProjectsOld", '/'),
        Err(StoreError::Exists(_))
    ));
    assert!(matches!(
        s.rename_mailbox("a@x.test", "Nope", "X", '/'),
        Err(StoreError::NotFound(_))
    ));
    s.rename_mailbox("a@x.test", "Projects", "Archive", '/').unwrap();
    let mut names: Vec<String> = s.mailboxes("a@x.test").unwrap().into_iter().map(|m| m.name).collect();
    names.sort();
    assert!(names.contains(&"Archive/2026/Q4".to_string()) && names.contains(&"ProjectsOld".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("Projects/")));
    let archive = s.mailbox("a@x.test", "Archive").unwrap().unwrap();
    assert_eq!(archive.id, projects.id, "renamed, not re-created");
    assert_eq!(s.messages(archive.id).unwrap().len(), 1);

    // Renaming INBOX moves its messages into a new mailbox, numbered from 1; INBOX stays.
    let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    s.deliver(b"m1", 1, &[inbox.id]).unwrap();
    s.deliver(b"m2", 2, &[inbox.id]).unwrap();
    s.expunge(inbox.id, &[1]).unwrap();
    s.deliver(b"m3", 3, &[inbox.id]).unwrap();
    s.rename_mailbox("a@x.test", "inbox", "Old", '/').unwrap();
    let old = s.mailbox("a@x.test", "Old").unwrap().unwrap();
    let moved = s.messages(old.id).unwrap();
    assert_eq!(moved.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(s.blob(&moved[1].meta.blob).unwrap().unwrap(), b"m3");
    assert_eq!(old.uidnext, 3);
    assert!(old.highestmodseq >= 3);
    let inbox_after = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    assert!(s.messages(inbox.id).unwrap().is_empty());
    assert_eq!(inbox_after.uidnext, inbox.uidnext + 3, "INBOX keeps its uid space");
    assert!(inbox_after.highestmodseq > inbox.highestmodseq);

    // Subscriptions are names, whether or not the mailbox exists.
    s.set_subscribed("a@x.test", "Ghost", true).unwrap();
    s.set_subscribed("a@x.test", "Ghost", true).unwrap();
    s.set_subscribed("a@x.test", "inbox", false).unwrap();
    let subs = s.subscriptions("a@x.test").unwrap();
    assert!(subs.contains(&"Ghost".to_string()) && !subs.contains(&"INBOX".to_string()));
    s.set_subscribed("a@x.test", "Ghost", false).unwrap();
    assert!(!s.subscriptions("a@x.test").unwrap().contains(&"Ghost".to_string()));

    assert!(matches!(
        s.delete_mailbox("a@x.test", "INBOX"),
        Err(StoreError::Invalid(_))
    ));
    s.delete_mailbox("a@x.test", "Archive").unwrap();
    assert!(s.mailbox("a@x.test", "Archive").unwrap().is_none());
    assert!(
        s.mailbox("a@x.test", "Archive/2026").unwrap().is_some(),
        "children stay"
    );
    assert!(matches!(
        s.delete_mailbox("a@x.test", "Archive"),
        Err(StoreError::NotFound(_))
    ));
    assert!(
        s.blob(&blob_id(b"kept")).unwrap().is_none(),
        "its messages' bodies went with it"
    );
}

async fn key_value_state(f: Fixture) {
    let s = f.store.clone();
    assert_eq!(s.kv_get("greylist\0a").unwrap(), None);
    s.kv_set("greylist\0a", Some(b"1")).unwrap();
    s.kv_set("greylist\0b", Some(b"2")).unwrap();
    s.kv_set("plain", Some(b"3")).unwrap();
    s.kv_set("greylist\0a", Some(b"4")).unwrap();
    assert_eq!(s.kv_get("greylist\0a").unwrap().as_deref(), Some(&b"4"[..]));
    let mut seen = Vec::new();
    let gone = s
        .kv_retain(&mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            !k.contains(&0)
        })
        .unwrap();
    assert_eq!((gone, seen.len()), (2, 3));
    assert_eq!(s.kv_get("greylist\0b").unwrap(), None);
    assert_eq!(s.kv_get("plain").unwrap().as_deref(), Some(&b"3"[..]));
    s.kv_set("plain", None).unwrap();
    assert_eq!(s.kv_get("plain").unwrap(), None);

    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    s.kv_set_large("spam/model", Some(&big)).unwrap();
    assert_eq!(s.kv_get_large("spam/model").unwrap().as_deref(), Some(&big[..]));
    assert_eq!(
        s.kv_retain(&mut |_, _| false).unwrap(),
        0,
        "large values are not plugin state"
    );
    // A value stored whole by kv_set reads back through kv_get_large, and kv_set_large
    // takes its place.
    s.kv_set("old", Some(b"whole")).unwrap();
    assert_eq!(s.kv_get_large("old").unwrap().as_deref(), Some(&b"whole"[..]));
    s.kv_set_large("old", Some(b"new")).unwrap();
    assert_eq!(s.kv_get("old").unwrap(), None);
    s.kv_set_large("old", Some(b"")).unwrap();
    assert_eq!(s.kv_get_large("old").unwrap(), Some(Vec::new()));
    s.kv_set_large("old", None).unwrap();
    assert_eq!(s.kv_get_large("old").unwrap(), None);
    // With small entries in the same change: set and removed together with the value.
    s.kv_set("mark/gone", Some(b"x")).unwrap();
    let small = [
        ("mark/a".to_string(), Some(b"s".to_vec())),
        ("mark/gone".to_string(), None),
    ];
    s.kv_set_large_with("counts", Some(&big[..100_000]), &small).unwrap();
    assert_eq!(s.kv_get_large("counts").unwrap().map(|v| v.len()), Some(100_000));
    assert_eq!(s.kv_get("mark/a").unwrap().as_deref(), Some(&b"s"[..]));
    assert_eq!(s.kv_get("mark/gone").unwrap(), None);
    drop(s);
    let f = f.reopen().await;
    assert_eq!(
        f.store.kv_get_large("spam/model").unwrap().map(|v| v.len()),
        Some(big.len())
    );
}

async fn watchers_hear_of_every_change(f: Fixture) {
    let s = &f.store;
    s.create_account("a@x.test", "h").unwrap();
    let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap().id;
    let other = s.mailbox("a@x.test", "Junk").unwrap().unwrap().id;
    let mut rx = s.watch(inbox);
    let second = f.second();
    let mut remote = second.watch(inbox);
    let changed = async |rx: &mut tokio::sync::watch::Receiver<u64>, what: &str| {
        tokio::time::timeout(std::time::Duration::from_secs(20), rx.changed())
            .await
            .unwrap_or_else(|_| panic!("no notice of {what}"))
            .unwrap();
    };
    s.deliver(b"x", 1, &[inbox]).unwrap();
    changed(&mut rx, "a delivery").await;
    changed(&mut remote, "a delivery, on the other handle").await;
    s.add_flags(inbox, &[1], Flags(Flags::SEEN)).unwrap();
    changed(&mut rx, "a flag change").await;
    s.copy_messages(inbox, &[1], other, true).unwrap();
    changed(&mut rx, "a move out").await;
    changed(&mut remote, "a move out, on the other handle").await;
    // A change elsewhere says nothing here.
    s.deliver(b"y", 1, &[other]).unwrap();
    assert!(!rx.has_changed().unwrap());
    // The account's list of mailboxes has its own notice (IMAP NOTIFY's MailboxName and
    // SubscriptionChange), here and on the other handle.
    let list = crate::store::locks::mailbox_list_notice("a@x.test");
    let mut names = s.watch(list);
    let mut remote_names = second.watch(list);
    s.create_mailbox("a@x.test", "Lists", None).unwrap();
    changed(&mut names, "a new mailbox").await;
    changed(&mut remote_names, "a new mailbox, on the other handle").await;
    s.set_subscribed("a@x.test", "Lists", true).unwrap();
    changed(&mut names, "a subscription").await;
    s.rename_mailbox("a@x.test", "Lists", "Groups", '/').unwrap();
    changed(&mut names, "a rename").await;
    s.delete_mailbox("a@x.test", "Groups").unwrap();
    changed(&mut names, "a deletion").await;
    changed(&mut remote_names, "a deletion, on the other handle").await;
    s.deliver(b"z", 1, &[inbox]).unwrap();
    assert!(!names.has_changed().unwrap(), "mail is no change to the list");
}

async fn concurrent_deliveries_get_distinct_consecutive_uids(f: Fixture) {
    let s = f.store.clone();
    s.create_account("a@x.test", "h").unwrap();
    let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap().id;
    // Four writers, two of them through a second handle (another node, for PostgreSQL).
    let handles: Vec<Arc<dyn MailStore>> = vec![s.clone(), s.clone(), f.second(), f.second()];
    let threads: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(w, h)| {
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        h.deliver_to(format!("writer {w} message {i}").as_bytes(), 0, &[target(inbox)])
                            .unwrap()[0]
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut uids: Vec<u32> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    uids.sort_unstable();
    assert_eq!(uids, (1..=100).collect::<Vec<u32>>(), "no gaps, no repeats");
    let meta = s.mailbox_by_id(inbox).unwrap().unwrap();
    assert_eq!((meta.uidnext, meta.highestmodseq), (101, 101));
    let mut modseqs: Vec<u64> = s.messages(inbox).unwrap().into_iter().map(|m| m.meta.modseq).collect();
    modseqs.sort_unstable();
    modseqs.dedup();
    assert_eq!(modseqs.len(), 100, "each delivery its own MODSEQ");
}

fn to_folder(account: &str, folder: &str) -> FolderTarget {
    FolderTarget {
        account: account.into(),
        folder: folder.into(),
        ..FolderTarget::default()
    }
}

async fn deliveries_by_folder_name_fall_back_to_inbox(f: Fixture) {
    let s = f.store.clone();
    s.create_account("a@x.test", "h").unwrap();
    s.create_account("b@x.test", "h").unwrap();
    let work = s.create_mailbox("a@x.test", "Work", None).unwrap();
    let a_inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    let b_inbox = s.mailbox("b@x.test", "INBOX").unwrap().unwrap();
    let targets = [
        FolderTarget {
            flags: Flags(Flags::SEEN),
            ..to_folder("a@x.test", "Work")
        },
        to_folder("a@x.test", "No such folder"),
        to_folder("gone@x.test", "INBOX"),
        FolderTarget {
            keywords: vec!["$Junk".into()],
            ..to_folder("b@x.test", "inbox")
        },
        to_folder("a@x.test", "Work"),
    ];
    let raw = b"Subject: filed\r\n\r\nbody\r\n";
    let placed = s.deliver_to_folders(raw, 7, &targets).await.unwrap();
    let at = |mailbox, uid, inbox_instead| {
        Some(Placed {
            mailbox,
            uid,
            inbox_instead,
        })
    };
    assert_eq!(
        placed,
        [
            at(work.id, 1, false),
            at(a_inbox.id, 1, true),
            None,
            at(b_inbox.id, 1, false),
            at(work.id, 2, false),
        ]
    );
    let f = f.reopen().await;
    let s = &f.store;
    let filed = s.message(work.id, 1).unwrap().unwrap().meta;
    assert_eq!((filed.flags, filed.internal_date), (Flags(Flags::SEEN), 7));
    assert_eq!(s.blob(&filed.blob).unwrap().unwrap(), raw);
    let bodies = s.blobs(&[filed.blob, blob_id(b"never stored"), filed.blob]).unwrap();
    assert_eq!(
        bodies,
        [Some(raw.to_vec()), None, Some(raw.to_vec())],
        "in order, repeats too"
    );
    assert!(s.blobs(&[]).unwrap().is_empty());
    assert_eq!(s.message(b_inbox.id, 1).unwrap().unwrap().meta.keywords, ["$Junk"]);
    let work_now = s.mailbox_by_id(work.id).unwrap().unwrap();
    assert_eq!((work_now.uidnext, work_now.highestmodseq), (3, 3));
    assert_eq!(s.blob_count().unwrap(), 1, "one body for all");
    // Counted once per copy: the body goes with the last of them.
    s.delete_account("a@x.test").unwrap();
    assert_eq!(s.blob_count().unwrap(), 1);
    s.delete_account("b@x.test").unwrap();
    assert_eq!(s.blob_count().unwrap(), 0);
    let nowhere = s
        .deliver_to_folders(b"x", 8, &[to_folder("b@x.test", "INBOX")])
        .await
        .unwrap();
    assert_eq!(nowhere, [None], "an account that has gone");
    assert_eq!(s.blob_count().unwrap(), 0, "and no body kept for it");
    // A large message (written alone on PostgreSQL, from the caller's bytes).
    s.create_account("c@x.test", "h").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 23) as u8).collect();
    let placed = s
        .deliver_to_folders(
            &big,
            9,
            &[to_folder("c@x.test", "INBOX"), to_folder("c@x.test", "Sent")],
        )
        .await
        .unwrap();
    assert_eq!(placed.iter().map(|p| p.unwrap().uid).collect::<Vec<u32>>(), [1, 1]);
    s.sync().await.unwrap();
    let m = s.message(placed[1].unwrap().mailbox, 1).unwrap().unwrap().meta;
    assert_eq!((m.size, m.internal_date), (big.len() as u64, 9));
    assert!(s.blob(&m.blob).unwrap().unwrap() == big);
}

async fn concurrent_folder_deliveries_from_two_nodes_get_consecutive_uids(f: Fixture) {
    let s = f.store.clone();
    s.create_account("a@x.test", "h").unwrap();
    s.create_account("b@x.test", "h").unwrap();
    let nodes = [s.clone(), f.second()];
    // 120 deliveries at once, half through each node, some of them the same body (as a
    // list's copies are), each to a's INBOX and some to b's as well.
    let deliveries: Vec<_> = (0..120)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                let mut targets = vec![to_folder("a@x.test", "INBOX")];
                if i % 3 == 0 {
                    targets.push(to_folder("b@x.test", "INBOX"));
                }
                let raw = format!("message {}", i % 40);
                let placed = node.deliver_to_folders(raw.as_bytes(), 0, &targets).await.unwrap();
                node.sync().await.unwrap();
                placed
            })
        })
        .collect();
    let mut uids: [Vec<u32>; 2] = Default::default();
    for d in deliveries {
        for (k, p) in d.await.unwrap().into_iter().enumerate() {
            uids[k].push(p.unwrap().uid);
        }
    }
    for (k, mut u) in uids.into_iter().enumerate() {
        u.sort_unstable();
        let n = if k == 0 { 120 } else { 40 };
        assert_eq!(u, (1..=n).collect::<Vec<u32>>(), "no gaps, no repeats");
    }
    let inbox = s.mailbox("a@x.test", "INBOX").unwrap().unwrap();
    assert_eq!((inbox.uidnext, inbox.highestmodseq), (121, 121));
    let mut modseqs: Vec<u64> = s
        .messages(inbox.id)
        .unwrap()
        .into_iter()
        .map(|m| m.meta.modseq)
        .collect();
    modseqs.sort_unstable();
    modseqs.dedup();
    assert_eq!(modseqs.len(), 120, "each message its own MODSEQ");
    assert_eq!(s.blob_count().unwrap(), 40, "one body per distinct message");
    // The bodies' counts are right: removing every copy removes every body.
    let uids: Vec<u32> = (1..=120).collect();
    s.expunge(inbox.id, &uids).unwrap();
    assert_eq!(s.blob_count().unwrap(), 40, "b still holds some");
    s.delete_account("b@x.test").unwrap();
    assert_eq!(s.blob_count().unwrap(), 0);
}

async fn one_pop3_session_per_maildrop(f: Fixture) {
    let (a, b) = (f.store.clone(), f.second());
    let held = a.lock_maildrop("alice@x.test").unwrap().expect("free");
    assert!(a.lock_maildrop("alice@x.test").unwrap().is_none(), "same node");
    assert!(b.lock_maildrop("alice@x.test").unwrap().is_none(), "other node");
    let other = b.lock_maildrop("bob@x.test").unwrap().expect("another account is free");
    drop(held);
    let again = b.lock_maildrop("alice@x.test").unwrap().expect("released on drop");
    assert!(a.lock_maildrop("alice@x.test").unwrap().is_none());
    drop((again, other));
    assert!(a.lock_maildrop("alice@x.test").unwrap().is_some());
}

async fn directory_changes_reach_every_node(f: Fixture) {
    let (a, b) = (f.store.clone(), f.second());
    a.create_account("x@x.test", "h").unwrap();
    let barrier = a.mailbox("x@x.test", "INBOX").unwrap().unwrap().id;
    // Change notices arrive in commit order: once B hears of the delivery that follows a
    // directory change, it has heard of the change.
    let mut heard = b.watch(barrier);
    let mut wait = async || {
        a.deliver(b"barrier", 0, &[barrier]).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(20), heard.changed())
            .await
            .expect("the notice arrives")
            .unwrap();
    };
    // Read (and so cached as absent) on B before A makes them.
    assert!(b.account("new@x.test").unwrap().is_none());
    assert!(b.alias("al@x.test").unwrap().is_none());
    assert!(!b.has_domain("d.test").unwrap());
    a.create_account("new@x.test", "hash-1").unwrap();
    a.set_alias("al@x.test", &["new@x.test".into()]).unwrap();
    a.add_domain("d.test").unwrap();
    wait().await;
    assert_eq!(b.account("new@x.test").unwrap().unwrap().password_hash, "hash-1");
    assert_eq!(b.alias("al@x.test").unwrap().unwrap(), ["new@x.test"]);
    assert!(b.has_domain("d.test").unwrap());
    a.set_password("new@x.test", "hash-2").unwrap();
    a.delete_alias("al@x.test").unwrap();
    a.delete_domain("d.test").unwrap();
    wait().await;
    assert_eq!(b.account("new@x.test").unwrap().unwrap().password_hash, "hash-2");
    assert!(b.alias("al@x.test").unwrap().is_none());
    assert!(!b.has_domain("d.test").unwrap());
    a.delete_account("new@x.test").unwrap();
    wait().await;
    assert!(b.account("new@x.test").unwrap().is_none());
    // On the writing node itself, at once.
    b.create_account("new@x.test", "h").unwrap();
    assert!(b.account("new@x.test").unwrap().is_some());
}

async fn exclusive_locks_keep_read_modify_writes_whole(f: Fixture) {
    // Four writers, two per handle (two nodes, for PostgreSQL), each adding one to a shared
    // counter 25 times by reading and writing it: under the lock no update is lost.
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<Arc<dyn MailStore>> = vec![f.store.clone(), f.store.clone(), f.second(), f.second()];
    let threads: Vec<_> = handles
        .into_iter()
        .map(|h| {
            let inside = inside.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let _held = h.exclusive("counter").unwrap();
                    assert_eq!(
                        inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                        0,
                        "two holders"
                    );
                    let n = h
                        .kv_get_large("counter")
                        .unwrap()
                        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
                    h.kv_set_large("counter", Some(&(n + 1).to_le_bytes())).unwrap();
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = f.store.kv_get_large("counter").unwrap().unwrap();
    assert_eq!(u64::from_le_bytes(n.try_into().unwrap()), 100);
    // Another name is free meanwhile.
    let _a = f.store.exclusive("one").unwrap();
    let _b = f.second().exclusive("two").unwrap();
}
