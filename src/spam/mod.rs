//! Spam analyzers the policies call (the `mailgate` host table), the Bayes model's life
//! cycle (train, persist in the store, swap live), learning from users' Junk moves, and the
//! corpus tools behind `mailgate spam train|classify|eval`.

pub mod bayes;
pub mod keywords;
pub mod letters;
pub mod origin;
pub mod tokens;

use crate::hooks::contract::Message;
use crate::store::{BlobId, MailStore};

/// A user's judgement of a message, from where they moved it (IMAP COPY/MOVE/APPEND into or
/// out of a `\\Junk` mailbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnEvent {
    pub account: String,
    pub blob: BlobId,
    /// `true`: into Junk (spam); `false`: out of Junk into a folder other than Trash (ham).
    pub spam: bool,
}

/// Where learn events go; receivers subscribe (events are dropped when no one listens).
pub type LearnSink = tokio::sync::broadcast::Sender<LearnEvent>;

pub fn learn_sink() -> LearnSink {
    tokio::sync::broadcast::channel(1024).0
}
use arc_swap::ArcSwapOption;
use bayes::{Counts, Model};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the model's counts live in the store's key-value tree.
pub const MODEL_KEY: &str = "spam/bayes/counts";

fn learned_key(blob: &BlobId) -> String {
    let hex: String = blob.iter().map(|b| format!("{b:02x}")).collect();
    format!("spam/bayes/learned/{hex}")
}

/// The live spam state shared by every policy.
#[derive(Default)]
pub struct Spam {
    model: ArcSwapOption<Model>,
    /// Counts user judgements handled (learned or found already learned), for anyone who
    /// waits for the learner.
    handled: tokio::sync::watch::Sender<u64>,
}

impl Spam {
    /// The model stored in `store`, if one was trained.
    pub fn load(store: &dyn MailStore) -> Spam {
        let spam = Spam::default();
        match store.kv_get_large(MODEL_KEY) {
            Ok(Some(bytes)) => match Counts::decode(&bytes).map(Model::new) {
                Some(Ok(m)) => spam.model.store(Some(Arc::new(m))),
                Some(Err(e)) => tracing::warn!("Bayes model not usable: {e}"),
                None => tracing::warn!("Bayes model in the store is corrupt; ignored"),
            },
            Ok(None) => tracing::info!("no Bayes model trained yet (`mailgate spam train`)"),
            Err(e) => tracing::warn!("reading the Bayes model: {e}"),
        }
        spam
    }

    pub fn handled(&self) -> tokio::sync::watch::Receiver<u64> {
        self.handled.subscribe()
    }

    pub fn model(&self) -> Option<Arc<Model>> {
        self.model.load_full()
    }

    pub fn set_model(&self, m: Option<Model>) {
        self.model.store(m.map(Arc::new));
    }

    /// Learns users' judgements (blob, message, spam: `true` when moved into Junk) with one
    /// rewrite of the counts and one refit of the model (the counts are one value, ~8 MB for
    /// the dev corpus: a user moving a hundred messages into Junk should not rewrite it a
    /// hundred times), keeping at most `max_tokens` tokens. The same message is never learned
    /// twice in one direction; the other direction unlearns it first. Says, per item, whether
    /// it changed the model.
    pub fn learn_batch<R: AsRef<[u8]>>(
        &self,
        store: &dyn MailStore,
        items: &[(BlobId, R, bool)],
        max_tokens: usize,
    ) -> Result<Vec<bool>, String> {
        // The counts are one value every session and node updates: read, change and write
        // them under a lock all of them see, or one batch would lose another's.
        let _model = store.exclusive(MODEL_KEY).map_err(|e| e.to_string())?;
        // Users refine a trained model; a handful of moves is no model of its own.
        let Some(stored) = store.kv_get_large(MODEL_KEY).map_err(|e| e.to_string())? else {
            return Err("no Bayes model trained yet (`mailgate spam train`); judgement not learned".into());
        };
        let mut counts = Counts::decode(&stored).ok_or("stored Bayes model is corrupt")?;
        let class = |spam: bool| if spam { bayes::SPAM } else { bayes::HAM };
        // What each message is now learned as (spam or not), this batch's judgements included.
        let mut now: HashMap<String, bool> = HashMap::new();
        let mut learned = Vec::with_capacity(items.len());
        for (blob, raw, spam) in items {
            let key = learned_key(blob);
            let before = match now.get(&key) {
                Some(&s) => Some(s),
                None => store.kv_get(&key).map_err(|e| e.to_string())?.map(|v| v == b"s"),
            };
            if before == Some(*spam) {
                learned.push(false);
                continue;
            }
            let feats = tokens::features(&crate::mail::parse_message(raw.as_ref()), counts.features);
            if let Some(old) = before {
                counts.learn(class(old), &feats, -1);
            }
            counts.learn(class(*spam), &feats, 1);
            now.insert(key, *spam);
            learned.push(true);
        }
        if now.is_empty() {
            return Ok(learned);
        }
        counts.prune(max_tokens);
        // The counts and the marks of what they learned in one atomic change: after a crash
        // a judgement is either wholly learned or not at all, never counted without its mark
        // (which a repeat of it would count again).
        let marks: Vec<(String, Option<Vec<u8>>)> = now
            .into_iter()
            .map(|(key, spam)| (key, Some(if spam { b"s".to_vec() } else { b"h".to_vec() })))
            .collect();
        store
            .kv_set_large_with(MODEL_KEY, Some(&counts.encode()), &marks)
            .map_err(|e| e.to_string())?;
        match Model::new(counts) {
            Ok(m) => self.set_model(Some(m)),
            Err(e) => tracing::debug!("Bayes model not ready yet: {e}"),
        }
        Ok(learned)
    }
}

/// Learns from users' Junk moves until the sink closes (see [`LearnEvent`]).
pub async fn learner(
    spam: Arc<Spam>,
    store: Arc<dyn MailStore>,
    config: Arc<crate::config::Config>,
    mut events: tokio::sync::broadcast::Receiver<LearnEvent>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    /// Judgements learned together at most (one counts rewrite and refit per batch).
    const BATCH: usize = 256;
    loop {
        // Ends with the server, so the store it holds is released for the final checkpoint.
        let next = tokio::select! {
            r = events.recv() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let mut batch = Vec::new();
        match next {
            Ok(ev) => batch.push(ev),
            Err(RecvError::Lagged(n)) => tracing::warn!("spam learner fell behind; {n} judgements not learned"),
            Err(RecvError::Closed) => return,
        }
        // Whatever else is already waiting joins this batch.
        while batch.len() < BATCH {
            match events.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(TryRecvError::Lagged(n)) => tracing::warn!("spam learner fell behind; {n} judgements not learned"),
                Err(_) => break,
            }
        }
        let handled = batch.len() as u64;
        let cfg = &config.spam;
        batch.retain(|ev| {
            cfg.learn_from_users && !cfg.learn_opt_out.iter().any(|a| a.eq_ignore_ascii_case(&ev.account))
        });
        if !batch.is_empty() {
            let (spam2, store2, max_tokens) = (spam.clone(), store.clone(), cfg.bayes_max_tokens);
            let done = tokio::task::spawn_blocking(move || {
                let mut items = Vec::with_capacity(batch.len());
                let mut kept = Vec::with_capacity(batch.len());
                for ev in batch {
                    match store2.blob(&ev.blob) {
                        Ok(Some(raw)) => {
                            items.push((ev.blob, raw, ev.spam));
                            kept.push(ev);
                        }
                        Ok(None) => tracing::warn!(
                            account = ev.account,
                            "learning from a Junk move: message no longer stored"
                        ),
                        Err(e) => tracing::warn!(account = ev.account, "learning from a Junk move: {e}"),
                    }
                }
                (spam2.learn_batch(&*store2, &items, max_tokens), kept)
            })
            .await;
            // The counts live in the key-value tree: make them durable now (a large value left
            // for sled's drop-time flush can stall a shutdown).
            if let Err(e) = store.checkpoint().await {
                tracing::warn!("saving the learned Bayes model: {e}");
            }
            match done {
                Ok((Ok(learned), kept)) => {
                    for (ev, learned) in kept.iter().zip(learned) {
                        tracing::info!(
                            account = ev.account,
                            spam = ev.spam,
                            learned,
                            "learned from a Junk move"
                        );
                    }
                }
                Ok((Err(e), kept)) => {
                    tracing::warn!(messages = kept.len(), "learning from Junk moves: {e}")
                }
                Err(e) => tracing::error!("spam learner: {e}"),
            }
        }
        spam.handled.send_modify(|n| *n += handled);
    }
}

/// The Bayes judgement of a message, when a model exists.
pub fn bayes(spam: &Spam, m: &Message) -> Option<bayes::Judgement> {
    spam.model().map(|model| model.judge(m))
}

/// The spam filter's analyzers, as the hook engine offers them to policies.
impl crate::hooks::analyzers::Analyzers for Spam {
    fn bayes(&self, m: &Message) -> Option<crate::hooks::contract::BayesResult> {
        bayes(self, m).map(|j| crate::hooks::contract::BayesResult {
            probability: j.probability,
            log_odds: j.log_odds,
            tokens: j
                .top
                .into_iter()
                .map(|(token, weight)| crate::hooks::contract::TokenWeight { token, weight })
                .collect(),
        })
    }

    fn letters(&self, m: &Message) -> Vec<crate::hooks::contract::LetterFinding> {
        letters::analyze(m)
            .into_iter()
            .map(|f| crate::hooks::contract::LetterFinding {
                name: f.name.to_string(),
                count: f.count,
                example: f.example,
            })
            .collect()
    }

    fn keywords(
        &self,
        plugin: &Path,
        manifest: &crate::hooks::manifest::Manifest,
    ) -> Result<Arc<dyn crate::hooks::analyzers::KeywordRules>, String> {
        Ok(Arc::new(keywords::Rules::for_plugin(plugin, manifest)?))
    }
}

/// The messages of one corpus file ([`messages_in`] of its bytes).
pub fn read_messages(f: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
    Ok(messages_in(&bytes))
}

/// Messages of a corpus: every file under `dirs` (recursively), in name order. A file is one
/// `.eml` message or an mbox of several. Hidden files and folders (`.DS_Store`, a maildir's
/// `.Junk`, `.git`) and a maildir's `tmp` (deliveries not yet finished) are not mail of the
/// corpus and are skipped.
pub fn corpus_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in rd {
            let p = entry.map_err(|e| e.to_string())?.path();
            let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            let maildir_tmp = name == "tmp" && dir.join("cur").is_dir() && dir.join("new").is_dir();
            if name.starts_with('.') || maildir_tmp {
                continue;
            }
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.is_file() {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// The messages in one file, in wire form (CRLF, no mbox `From ` separator lines).
pub fn messages_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    let norm = crate::mail::wire::from_file(bytes);
    if !bytes.starts_with(b"From ") {
        return vec![norm];
    }
    // An mbox: further messages start at "\r\n\r\nFrom " (wire::from_file dropped the first).
    let mut out = Vec::new();
    let mut rest: &[u8] = &norm;
    while let Some(i) = memchr::memmem::find(rest, b"\r\n\r\nFrom ") {
        out.push(rest[..i + 2].to_vec());
        let after = &rest[i + 4..];
        rest = memchr::memchr(b'\n', after).map(|j| &after[j + 1..]).unwrap_or(&[]);
    }
    if !rest.is_empty() {
        out.push(rest.to_vec());
    }
    out
}

/// Is this file in the held-out part of a split? Deterministic in (seed, file name): the
/// same corpus gives the same split wherever it is stored (the folder it sits in is not
/// part of the decision).
pub fn held_out(path: &Path, seed: u64, fraction: f64) -> bool {
    key_held_out(&file_key(path), seed, fraction)
}

/// Which of `folds` parts a file is in, for cross-validation (`spam eval --folds`): the
/// same hash as [`held_out`] cut into equal ranges, so part 0 of 10 is exactly what
/// `--holdout 0.1` with the same seed holds out.
pub fn fold_of(path: &Path, seed: u64, folds: u64) -> u64 {
    key_fold(&file_key(path), seed, folds)
}

/// [`held_out`] for a split key: a file name, or a sender's organisation when whole senders
/// are kept together.
pub fn key_held_out(key: &str, seed: u64, fraction: f64) -> bool {
    fraction > 0.0 && (key_point(key, seed) as f64) < fraction * 10_000.0
}

/// [`fold_of`] for a split key.
pub fn key_fold(key: &str, seed: u64, folds: u64) -> u64 {
    key_point(key, seed) * folds / 10_000
}

/// What a file is split by: its name alone, so the split is the same wherever the corpus is
/// stored.
pub fn file_key(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// Where a split key falls in 0..10_000, from the seed and the key only.
fn key_point(key: &str, seed: u64) -> u64 {
    tokens::hash(&format!("{seed}:{key}")) % 10_000
}

/// Which files to use: all, or only those in (`held_out` = true) or out of the split.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Split {
    pub fraction: f64,
    pub seed: u64,
}

pub fn select(files: Vec<PathBuf>, split: Option<Split>, want_held_out: bool) -> Vec<PathBuf> {
    match split {
        None => files,
        Some(s) => files
            .into_iter()
            .filter(|p| held_out(p, s.seed, s.fraction) == want_held_out)
            .collect(),
    }
}

/// Trains on folders of spam and ham (adding to the stored model unless `reset`); returns
/// the new counts and a one-line report.
pub fn train(
    store: &dyn MailStore,
    spam_dirs: &[PathBuf],
    ham_dirs: &[PathBuf],
    split: Option<Split>,
    reset: bool,
    features: Option<u64>,
    max_tokens: usize,
) -> Result<(Counts, String), String> {
    // Users' judgements update the same counts meanwhile ([`Spam::learn_batch`]).
    let _model = store.exclusive(MODEL_KEY).map_err(|e| e.to_string())?;
    let mut counts = match (reset, store.kv_get_large(MODEL_KEY).map_err(|e| e.to_string())?) {
        (false, Some(b)) => Counts::decode(&b).ok_or("stored Bayes model is corrupt; use --reset")?,
        _ => Counts::new(features.unwrap_or(0)),
    };
    let mut n = [0usize; 2];
    for (class, dirs) in [(bayes::SPAM, spam_dirs), (bayes::HAM, ham_dirs)] {
        for f in select(corpus_files(dirs)?, split, false) {
            for raw in read_messages(&f)? {
                let feats = tokens::features(&crate::mail::parse_message(&raw), counts.features);
                counts.learn(class, &feats, 1);
                n[class] += 1;
            }
        }
    }
    let pruned = counts.prune(max_tokens);
    store
        .kv_set_large(MODEL_KEY, Some(&counts.encode()))
        .map_err(|e| e.to_string())?;
    let mut report = format!(
        "trained on {} spam and {} ham; the model now has {} spam and {} ham ({} distinct {})\n",
        n[bayes::SPAM],
        n[bayes::HAM],
        counts.docs[bayes::SPAM],
        counts.docs[bayes::HAM],
        counts.len(),
        match counts.features {
            0 => "tokens".to_string(),
            n => format!("features of {n}"),
        }
    );
    if pruned > 0 {
        report.push_str(&format!(
            "{pruned} of the fewest-seen tokens dropped to stay within spam.bayes_max_tokens = {max_tokens}\n"
        ));
    }
    Ok((counts, report))
}

/// Precision, recall and the rest for a set of verdicts.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Metrics {
    pub messages: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub fpr: f64,
    pub accuracy: f64,
    pub msgs_per_s: f64,
    pub cpu_ms_per_msg: f64,
}

impl Metrics {
    pub fn add(&mut self, is_spam: bool, said_spam: bool) {
        self.messages += 1;
        match (is_spam, said_spam) {
            (true, true) => self.true_positives += 1,
            (false, true) => self.false_positives += 1,
            (false, false) => self.true_negatives += 1,
            (true, false) => self.false_negatives += 1,
        }
    }

    pub fn finish(&mut self, secs: f64, cpu_secs: f64) {
        let (tp, fp, tn, fneg) = (
            self.true_positives as f64,
            self.false_positives as f64,
            self.true_negatives as f64,
            self.false_negatives as f64,
        );
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        self.precision = div(tp, tp + fp);
        self.recall = div(tp, tp + fneg);
        self.f1 = div(2.0 * self.precision * self.recall, self.precision + self.recall);
        self.fpr = div(fp, fp + tn);
        self.accuracy = div(tp + tn, tp + tn + fp + fneg);
        self.msgs_per_s = div(self.messages as f64, secs);
        self.cpu_ms_per_msg = div(cpu_secs * 1000.0, self.messages as f64);
    }
}

/// CPU time this process has used, in seconds.
pub fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_files_split_into_messages() {
        let mbox = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\n\nFrom c@d Tue Jan  2 00:00:00 2024\nSubject: two\n\nx\n";
        let msgs = messages_in(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], b"Subject: one\r\n\r\nbody\r\n");
        assert_eq!(msgs[1], b"Subject: two\r\n\r\nx\r\n");
        assert_eq!(
            messages_in(b"Subject: x\n\ny\n"),
            vec![b"Subject: x\r\n\r\ny\r\n".to_vec()]
        );
        let p = Path::new("a/b.eml");
        assert_eq!(held_out(p, 1, 0.3), held_out(p, 1, 0.3));
        // Part 0 of ten folds is what a tenth held out is; every part gets its share.
        let mut parts = [0usize; 10];
        for i in 0..1000 {
            let f = PathBuf::from(format!("/c/{i}.eml"));
            let k = fold_of(&f, 9, 10);
            assert_eq!(k == 0, held_out(&f, 9, 0.1), "{f:?}");
            parts[k as usize] += 1;
        }
        assert!(parts.iter().all(|&n| (60..=140).contains(&n)), "{parts:?}");
        // The split follows file names, not where the corpus is stored.
        let names: Vec<String> = (0..200).map(|i| format!("{i:05}.eml")).collect();
        let here: Vec<bool> = names
            .iter()
            .map(|n| held_out(&Path::new("/x/spam").join(n), 42, 0.3))
            .collect();
        let there: Vec<bool> = names
            .iter()
            .map(|n| held_out(&Path::new("../y/spam").join(n), 42, 0.3))
            .collect();
        assert_eq!(here, there);
        let out = here.iter().filter(|h| **h).count();
        assert!((40..=80).contains(&out), "about 30 % held out: {out}");
        // Hidden files and a maildir's tmp are not part of a corpus; cur and new are.
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("spam");
        for sub in ["cur", "new", "tmp", ".git"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        for f in ["a.eml", ".DS_Store", "cur/1:2,S", "new/2", "tmp/3", ".git/HEAD"] {
            std::fs::write(md.join(f), "Subject: x\n\ny\n").unwrap();
        }
        let found: Vec<PathBuf> = corpus_files(std::slice::from_ref(&md))
            .unwrap()
            .into_iter()
            .map(|p| p.strip_prefix(&md).unwrap().to_path_buf())
            .collect();
        assert_eq!(found, ["a.eml", "cur/1:2,S", "new/2"].map(PathBuf::from));
        let mut m = Metrics::default();
        for (s, said) in [(true, true), (true, false), (false, false), (false, true)] {
            m.add(s, said);
        }
        m.finish(1.0, 0.5);
        assert_eq!((m.precision, m.recall, m.fpr), (0.5, 0.5, 0.5));
    }
}

#[cfg(test)]
mod learn_tests {
    use super::*;
    use crate::store::{KeyValue, SledStore};

    #[test]
    fn a_batch_learns_each_judgement_once_and_relearning_flips_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store"), 16).unwrap();
        let spam = Spam::load(&store);
        let msg = |s: &str| format!("Subject: {s}\r\n\r\n{s} body words\r\n").into_bytes();
        let (a, b, c) = (msg("cheap pills"), msg("team lunch"), msg("project notes"));
        // No trained model: users' judgements alone do not make one.
        assert!(spam.learn_batch(&store, &[([1; 32], &a, true)], 1000).is_err());
        let mut counts = Counts::new(1 << 12);
        for (class, m) in [(bayes::SPAM, &a), (bayes::HAM, &b)] {
            counts.learn(class, &tokens::features(&crate::mail::parse_message(m), 1 << 12), 1);
        }
        store.kv_set_large(MODEL_KEY, Some(&counts.encode())).unwrap();
        let learned = spam
            .learn_batch(
                &store,
                &[
                    ([1; 32], &a, true),
                    ([1; 32], &a, true),
                    ([2; 32], &c, false),
                    ([1; 32], &a, false),
                ],
                1000,
            )
            .unwrap();
        assert_eq!(learned, [true, false, true, true]);
        let stored = Counts::decode(&store.kv_get_large(MODEL_KEY).unwrap().unwrap()).unwrap();
        // a: learned spam then flipped to ham; c: ham.
        assert_eq!(stored.docs, [3, 1]);
        assert!(spam.model().is_some(), "the model was refitted");
        // The flip is remembered across batches.
        assert_eq!(
            spam.learn_batch(&store, &[([1; 32], &a, false)], 1000).unwrap(),
            [false]
        );
        assert_eq!(spam.learn_batch(&store, &[([1; 32], &a, true)], 1000).unwrap(), [true]);
    }
}
