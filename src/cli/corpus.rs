//! `mailgate spam classify` and `spam eval`: messages judged offline by the decision
//! pipeline ([`crate::pipeline::decide`], the server's own path) with the shipped policies.
//!
//! `eval --folds N` cross-validates: every message is judged by a model trained, in memory,
//! on the other folds (all the counts less the fold's own, the same as N trainings and
//! cheaper); the stored model is neither used nor changed. With `--nested K` the Bayes
//! weights ([`Params`]) are chosen for each outer fold by a K-fold cross-validation of its
//! training part alone, so the outer fold is scored once by choices made without it.
//! `eval --lockbox F` sets a seeded fraction aside, chooses the weights by cross-validating
//! the rest, trains on the rest and scores the lockbox once.

use crate::config::Config;
use crate::hooks::PolicySet;
use crate::hooks::host::Offline;
use crate::mail::Message;
use crate::pipeline::{Context, Envelope, Report, decide};
use crate::spam::bayes::{Counts, HAM, Model, Params, SPAM};
use crate::spam::{
    Metrics, Spam, Split, corpus_files, file_key, key_fold, key_held_out, process_cpu_secs, read_messages, select,
    tokens,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `spam eval` judges, and with which model.
pub enum Parts {
    /// The held-out part of a split (or everything), with the stored model.
    HeldOut(Option<Split>),
    /// Every message, each with a model trained in memory on the other folds; with
    /// `nested`, the weights for each fold chosen by that many inner folds of the others.
    Folds {
        n: u64,
        seed: u64,
        nested: Option<u64>,
        by: Grouping,
    },
    /// A seeded `fraction` set aside; weights chosen by `inner` folds of the rest, a model
    /// trained on the rest, the lockbox scored once.
    Lockbox {
        fraction: f64,
        seed: u64,
        inner: u64,
        by: Grouping,
    },
}

/// What a cross-validation or lockbox keeps together in one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Each file on its own (by its name: part 0 of 10 is what `--holdout 0.1` holds out).
    File,
    /// Every file of one sender (the organisational domain of its first message's From) in
    /// one part, so each part is judged by a model that never saw its senders: what a
    /// newsletter from a sender no training message had meets.
    Sender,
}

impl Grouping {
    /// Said after a part that left a class with nothing to train on.
    fn hint(self) -> &'static str {
        match self {
            Grouping::File => "",
            Grouping::Sender => {
                " (--by-sender cuts the parts as whole senders: one sender holds too much of the corpus for this many parts)"
            }
        }
    }

    /// The key a file is split by.
    fn key(self, path: &Path, first: Option<&Message>) -> String {
        match (self, first.and_then(|m| m.from.rsplit_once('@'))) {
            (Grouping::Sender, Some((_, domain))) => {
                format!("sender:{}", crate::hooks::contract::org_domain(domain))
            }
            _ => file_key(path),
        }
    }
}

impl Parts {
    /// How the parts are cut (the held-out split goes by file).
    fn by(&self) -> Grouping {
        match *self {
            Parts::Folds { by, .. } | Parts::Lockbox { by, .. } => by,
            Parts::HeldOut(_) => Grouping::File,
        }
    }
}

/// What a false positive costs against a missed spam when weights are chosen: a good
/// message junked costs its reader far more than a spam let through.
pub const FP_COST: usize = 10;

/// The Bayes weights nested cross-validation and the lockbox choose among: smoothing and
/// the field tokens' weight, the two that moved the dev-corpus frontier most
/// (docs/spam.md); the shipped values are the grid's centre.
pub fn grid() -> Vec<Params> {
    let mut v = Vec::new();
    for alpha in [0.01, 0.02, 0.05] {
        for field_weight in [3.0, 4.0, 5.0] {
            v.push(Params {
                alpha,
                field_weight,
                ..Params::default()
            });
        }
    }
    v
}

/// The seed inner folds are cut by: not the outer one's, or the inner parts of a training
/// set would be the outer parts it already has.
fn inner_seed(seed: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995
}

/// The offline policy set, its host services and the spam state whose model they use.
struct Chain {
    set: Arc<PolicySet>,
    spam: Arc<Spam>,
    _offline: Offline,
}

impl Chain {
    /// With the stored Bayes model (from the running server or the store) when `stored`.
    async fn load(config: &Config, stored: bool) -> Result<Chain, String> {
        let spam = Arc::new(Spam::default());
        if stored {
            match crate::admin::client::run(config, crate::admin::Request::SpamModel).await {
                Ok(bytes) => {
                    let counts = Counts::decode(&bytes).ok_or("the stored Bayes model is corrupt")?;
                    spam.set_model(Some(Model::new(counts)?));
                }
                Err(e) => eprintln!("mailgate: no Bayes model ({e}); scoring without it"),
            }
        }
        let offline = Offline::new(config, spam.clone());
        let set = Arc::new(PolicySet::load(&config.policies.dir, &offline.host, 1)?);
        if set.plugins.is_empty() {
            // Every message would pass unscored: figures of nothing.
            return Err(format!(
                "no policies in {}: messages are judged by the policies (leave [policies] dir unset for the shipped set, or point it at a folder of policies)",
                crate::hooks::absolute(&config.policies.dir).display()
            ));
        }
        Ok(Chain {
            set,
            spam,
            _offline: offline,
        })
    }

    /// One corpus message through the pipeline, as the server would take it from the
    /// sender its headers name ([`envelope_of`]).
    async fn judge(&self, config: &Config, raw: &[u8]) -> Report {
        let ctx = Context {
            policies: &self.set,
            config,
            router: None,
            origin: None,
            chains: None,
            may_relay: false,
        };
        let message = Arc::new(crate::mail::parse_message(raw));
        decide(&ctx, &envelope_of(&message), raw.to_vec(), Some(message)).await
    }
}

/// The envelope a corpus message is judged under: its own envelope sender (the
/// `Return-Path` the receiving server recorded) when it has one, else its From address, so
/// envelope checks see what the original receiver saw rather than a made-up sender.
pub fn envelope_of(m: &Message) -> Envelope {
    let return_path = m
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("return-path"))
        .map(|h| {
            h.value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
                .to_string()
        });
    Envelope {
        client_ip: "192.0.2.1".into(),
        helo: "mail.example.org".into(),
        mail_from: return_path.unwrap_or_else(|| m.from.clone()),
        rcpt_to: vec!["postmaster@localhost".into()],
    }
}

/// `spam classify`: one message from stdin; `spam SCORE` or `ham SCORE`, the verdict, the
/// symbols and the Bayes tokens.
pub async fn classify(config: &Config) -> Result<(), String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let raw = crate::mail::wire::from_file(&bytes);
    let chain = Chain::load(config, true).await?;
    let report = chain.judge(config, &raw).await;
    let message = report
        .message
        .clone()
        .unwrap_or_else(|| Arc::new(crate::mail::parse_message(&raw)));
    let class = if report.score >= config.spam.thresholds.tag {
        "spam"
    } else {
        "ham"
    };
    println!("{class} {:.2}", report.score);
    println!("verdict {}", report.verdict);
    for s in &report.symbols {
        println!("symbol {} {:+.2} {}", s.name, s.score, s.reason);
    }
    if let Some(j) = crate::spam::bayes(&chain.spam, &message) {
        println!("bayes {:.4} log-odds {:.1}", j.probability, j.log_odds);
        for (t, w) in j.top {
            println!("token {w:+.2} {t}");
        }
    }
    Ok(())
}

/// Time kept out of `spam eval`'s rate and CPU figures, which are the judging's: the
/// `--scores` table's second Bayes pass, and cross-validation's reading and training.
#[derive(Default)]
struct Aside {
    wall: std::time::Duration,
    cpu: f64,
}

impl Aside {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (w0, c0) = (std::time::Instant::now(), process_cpu_secs());
        let out = f();
        self.wall += w0.elapsed();
        self.cpu += process_cpu_secs() - c0;
        out
    }
}

/// The verdicts of one `spam eval` run so far.
#[derive(Default)]
pub struct Run {
    pub metrics: Metrics,
    /// `FN score file symbols` / `FP score file symbols`, one a misjudged message (symbols
    /// as `NAME=+score`, comma-separated).
    pub misses: Vec<String>,
    /// The weights chosen on inner folds (`--nested`, `--lockbox`): one line per outer fold
    /// or for the lockbox, with the inner figures they were chosen by.
    pub chosen: Vec<(String, Params)>,
    /// What the default thresholds did with each message: `[ham, spam]` ×
    /// `[inbox, tagged, junk folder, rejected]`.
    pub actions: [[usize; 4]; 2],
    table: Option<String>,
    aside: Aside,
}

impl Run {
    /// The share of good messages put in the Junk folder or refused: the harm a false
    /// positive does (a tagged message still reaches the inbox).
    pub fn fpr_junked(&self) -> f64 {
        let [ham, _] = &self.actions;
        (ham[2] + ham[3]) as f64 / ham.iter().sum::<usize>().max(1) as f64
    }

    /// Judges the messages of one corpus file with the model the chain holds now.
    async fn judge_messages(
        &mut self,
        chain: &Chain,
        config: &Config,
        path: &Path,
        class: usize,
        messages: &[Vec<u8>],
    ) {
        let is_spam = class == SPAM;
        for raw in messages {
            let r = chain.judge(config, raw).await;
            if let Some(t) = self.table.as_mut() {
                self.aside.time(|| {
                    let m = r
                        .message
                        .clone()
                        .unwrap_or_else(|| Arc::new(crate::mail::parse_message(raw)));
                    let (p, d) =
                        crate::spam::bayes(&chain.spam, &m).map_or((-1.0, 0.0), |j| (j.probability, j.log_odds));
                    let label = if is_spam { "spam" } else { "ham" };
                    t.push_str(&format!(
                        "{label}\t{:.3}\t{p:.6}\t{d:.2}\t{}\t{}\n",
                        r.score,
                        path.display(),
                        symbol_list(&r)
                    ));
                });
            }
            let t = &config.spam.thresholds;
            let action = [t.tag, t.quarantine, t.reject]
                .iter()
                .filter(|&&at| r.score >= at)
                .count();
            self.actions[usize::from(is_spam)][action] += 1;
            let said = action > 0;
            if said != is_spam {
                self.misses.push(format!(
                    "{} {:.2} {} {}",
                    if is_spam { "FN" } else { "FP" },
                    r.score,
                    path.display(),
                    symbol_list(&r)
                ));
            }
            self.metrics.add(is_spam, said);
        }
    }
}

/// The symbols a message scored, as `NAME=+score`, comma-separated (`spam eval`'s misjudged
/// lines and `--scores` table).
fn symbol_list(r: &Report) -> String {
    let symbols: Vec<String> = r.symbols.iter().map(|s| format!("{}={:+}", s.name, s.score)).collect();
    symbols.join(",")
}

/// A corpus file in cross-validation: its messages, read once, and their features.
struct FoldFile {
    path: PathBuf,
    /// What its part is drawn by ([`Grouping::key`]).
    key: String,
    class: usize,
    fold: u64,
    messages: Vec<Vec<u8>>,
    features: Vec<Vec<u64>>,
}

/// Judges the corpus folders as `parts` says; `scores` also gets every message's label,
/// score and Bayes probability (tab-separated).
pub async fn judge(
    config: &Config,
    spam: &[PathBuf],
    ham: &[PathBuf],
    parts: &Parts,
    scores: bool,
) -> Result<(Run, Option<String>), String> {
    let chain = Chain::load(config, matches!(parts, Parts::HeldOut(_))).await?;
    let mut run = Run {
        table: scores.then(|| String::from("label\tscore\tbayes\tlog_odds\tfile\tsymbols\n")),
        ..Run::default()
    };
    let (wall, cpu) = (std::time::Instant::now(), process_cpu_secs());
    match *parts {
        Parts::HeldOut(split) => {
            for (class, dirs) in [(SPAM, spam), (HAM, ham)] {
                for f in select(corpus_files(dirs)?, split, true) {
                    run.judge_messages(&chain, config, &f, class, &read_messages(&f)?).await;
                }
            }
        }
        Parts::Folds { n, seed, nested, by } => {
            let (files, all) = run
                .aside
                .time(|| fold_files(spam, ham, by, |key| key_fold(key, seed, n)))?;
            for fold in 0..n {
                let params = match nested {
                    None => Params::default(),
                    Some(k) => {
                        let (params, why) = run
                            .tune(&chain, config, &files, &all, |f| f.fold != fold, k, seed)
                            .await
                            .map_err(|e| format!("fold {fold} of {n}, {e}{}", by.hint()))?;
                        run.chosen.push((format!("fold {fold}: {why}"), params));
                        params
                    }
                };
                let model = run
                    .aside
                    .time(|| model_without(config, &all, &files, |f| f.fold == fold, params))
                    .map_err(|e| format!("fold {fold} of {n}: {e}{}", by.hint()))?;
                chain.spam.set_model(Some(model));
                for f in files.iter().filter(|f| f.fold == fold) {
                    run.judge_messages(&chain, config, &f.path, f.class, &f.messages).await;
                }
            }
        }
        Parts::Lockbox {
            fraction,
            seed,
            inner,
            by,
        } => {
            // Fold 1: the lockbox; 0: the rest.
            let (files, all) = run
                .aside
                .time(|| fold_files(spam, ham, by, |key| u64::from(key_held_out(key, seed, fraction))))?;
            let (params, why) = run
                .tune(&chain, config, &files, &all, |f| f.fold == 0, inner, seed)
                .await
                .map_err(|e| format!("outside the lockbox, {e}{}", by.hint()))?;
            run.chosen.push((format!("lockbox: {why}"), params));
            let model = run
                .aside
                .time(|| model_without(config, &all, &files, |f| f.fold == 1, params))
                .map_err(|e| format!("outside the lockbox: {e}{}", by.hint()))?;
            chain.spam.set_model(Some(model));
            for f in files.iter().filter(|f| f.fold == 1) {
                run.judge_messages(&chain, config, &f.path, f.class, &f.messages).await;
            }
        }
    }
    let (aside_wall, aside_cpu) = (run.aside.wall, run.aside.cpu);
    run.metrics.finish(
        (wall.elapsed() - aside_wall).as_secs_f64(),
        process_cpu_secs() - cpu - aside_cpu,
    );
    let table = run.table.take();
    Ok((run, table))
}

/// A model trained on `all` less the files `leave_out` picks, pruned as the server prunes.
fn model_without(
    config: &Config,
    all: &Counts,
    files: &[FoldFile],
    leave_out: impl Fn(&FoldFile) -> bool,
    params: Params,
) -> Result<Model, String> {
    Model::with_params(counts_without(config, all, files, leave_out), params)
}

/// `all` less the files `leave_out` picks, pruned as the server prunes.
fn counts_without(config: &Config, all: &Counts, files: &[FoldFile], leave_out: impl Fn(&FoldFile) -> bool) -> Counts {
    let mut counts = counts_less(all, files, leave_out);
    counts.prune(config.spam.bayes_max_tokens);
    counts
}

/// `all` less the files `leave_out` picks.
fn counts_less(all: &Counts, files: &[FoldFile], leave_out: impl Fn(&FoldFile) -> bool) -> Counts {
    let mut counts = all.clone();
    for f in files.iter().filter(|f| leave_out(f)) {
        for x in &f.features {
            counts.learn(f.class, x, -1);
        }
    }
    counts
}

impl Run {
    /// Chooses the Bayes weights from the files `inside` picks alone: each [`grid`] entry
    /// cross-validated over `k` inner folds of them, the cheapest (`FP_COST` per false
    /// positive, one per miss; ties to the earlier entry) wins. Nothing outside `inside` is
    /// trained on or judged. Gives the weights and a line of what they scored; the time it
    /// takes is kept out of the run's rate.
    #[allow(clippy::too_many_arguments)]
    async fn tune(
        &mut self,
        chain: &Chain,
        config: &Config,
        files: &[FoldFile],
        all: &Counts,
        inside: impl Fn(&FoldFile) -> bool,
        k: u64,
        seed: u64,
    ) -> Result<(Params, String), String> {
        let (w0, c0) = (std::time::Instant::now(), process_cpu_secs());
        let inner_fold = |f: &FoldFile| key_fold(&f.key, inner_seed(seed), k);
        // The counts of the inside files alone: `all` less everything outside.
        let base = counts_less(all, files, |f| !inside(f));
        // Per inner fold, its files and the counts without them: the same for every grid
        // entry, so worked out once.
        let folds: Vec<(Vec<&FoldFile>, Counts)> = (0..k)
            .map(|j| {
                let part = |f: &FoldFile| inside(f) && inner_fold(f) == j;
                let counts = counts_without(config, &base, files, part);
                (files.iter().filter(|f| part(f)).collect(), counts)
            })
            .collect();
        let mut best: Option<(usize, Params, Metrics)> = None;
        for params in grid() {
            let mut trial = Run::default();
            for (j, (part, counts)) in folds.iter().enumerate() {
                let model =
                    Model::with_params(counts.clone(), params).map_err(|e| format!("inner fold {j} of {k}: {e}"))?;
                chain.spam.set_model(Some(model));
                for f in part {
                    trial.judge_messages(chain, config, &f.path, f.class, &f.messages).await;
                }
            }
            let m = trial.metrics;
            let cost = FP_COST * m.false_positives + m.false_negatives;
            if best.as_ref().is_none_or(|b| cost < b.0) {
                best = Some((cost, params, m));
            }
        }
        self.aside.wall += w0.elapsed();
        self.aside.cpu += process_cpu_secs() - c0;
        let (cost, params, m) = best.ok_or("no weights to choose from")?;
        let why = format!(
            "{params} (inner {k}-fold: {} false positives, {} misses of {} messages, cost {cost})",
            m.false_positives, m.false_negatives, m.messages
        );
        Ok((params, why))
    }
}

/// Every corpus file's messages and features once, each file's part (`part_of`), and the
/// counts of all of them.
fn fold_files(
    spam: &[PathBuf],
    ham: &[PathBuf],
    by: Grouping,
    part_of: impl Fn(&str) -> u64,
) -> Result<(Vec<FoldFile>, Counts), String> {
    let (mut files, mut all) = (Vec::new(), Counts::new(0));
    for (class, dirs) in [(SPAM, spam), (HAM, ham)] {
        for path in corpus_files(dirs)? {
            let messages = read_messages(&path)?;
            // Each message parsed once, for its features; the first also for its sender.
            let mut key = None;
            let mut features = Vec::with_capacity(messages.len());
            for raw in &messages {
                let m = crate::mail::parse_message(raw);
                key.get_or_insert_with(|| by.key(&path, Some(&m)));
                features.push(tokens::features(&m, 0));
            }
            for x in &features {
                all.learn(class, x, 1);
            }
            let key = key.unwrap_or_else(|| by.key(&path, None));
            let fold = part_of(&key);
            files.push(FoldFile {
                path,
                key,
                class,
                fold,
                messages,
                features,
            });
        }
    }
    Ok((files, all))
}

/// `spam eval`: [`judge`], then the figures (text or `--json`).
pub async fn eval(
    config: &Config,
    spam: &[PathBuf],
    ham: &[PathBuf],
    parts: Parts,
    json: bool,
    scores: Option<&Path>,
) -> Result<(), String> {
    let (run, table) = judge(config, spam, ham, &parts, scores.is_some()).await?;
    if let (Some(path), Some(t)) = (scores, table) {
        std::fs::write(path, t).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let folds = match parts {
        Parts::Folds { n, .. } => Some(n),
        Parts::HeldOut(_) | Parts::Lockbox { .. } => None,
    };
    let by_sender = parts.by() == Grouping::Sender;
    let m = &run.metrics;
    if json {
        let mut v = serde_json::to_value(m).map_err(|e| e.to_string())?;
        if let Some(n) = folds {
            v["folds"] = n.into();
        }
        if by_sender {
            v["by_sender"] = true.into();
        }
        let named = |a: &[usize; 4]| serde_json::json!({"inbox": a[0], "tagged": a[1], "junk": a[2], "rejected": a[3]});
        v["actions"] = serde_json::json!({"ham": named(&run.actions[0]), "spam": named(&run.actions[1])});
        v["fpr_junked"] = run.fpr_junked().into();
        if !run.chosen.is_empty() {
            v["chosen"] = run
                .chosen
                .iter()
                .map(|(line, _)| line.clone())
                .collect::<Vec<_>>()
                .into();
        }
        println!("{v}");
        return Ok(());
    }
    if by_sender {
        println!("parts by sender (each sender organisation's mail in one part)");
    }
    match parts {
        Parts::Folds { n, nested: None, .. } => {
            println!("folds {n} (each message judged by a model trained on the other folds)")
        }
        Parts::Folds { n, nested: Some(k), .. } => println!(
            "folds {n}, nested {k} (each message judged by a model trained on the other folds, with weights chosen on inner folds of those)"
        ),
        Parts::Lockbox { fraction, .. } => {
            println!("lockbox {fraction} (judged once, by weights chosen and a model trained on the rest)")
        }
        Parts::HeldOut(_) => {}
    }
    for (line, _) in &run.chosen {
        println!("chosen {line}");
    }
    println!(
        "messages {}\nprecision {:.4}\nrecall {:.4}\nf1 {:.4}\nfpr {:.4}\naccuracy {:.4}",
        m.messages, m.precision, m.recall, m.f1, m.fpr, m.accuracy
    );
    println!(
        "confusion: spam->spam {} spam->ham {} ham->spam {} ham->ham {}",
        m.true_positives, m.false_negatives, m.false_positives, m.true_negatives
    );
    for (class, a) in ["ham", "spam"].iter().zip(&run.actions) {
        println!(
            "actions: {class} inbox {} tagged {} junk {} rejected {}",
            a[0], a[1], a[2], a[3]
        );
    }
    println!("fpr_junked {:.4}", run.fpr_junked());
    println!("msgs_per_s {:.0}\ncpu_ms_per_msg {:.3}", m.msgs_per_s, m.cpu_ms_per_msg);
    for x in &run.misses {
        println!("{x}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spam::{fold_of, held_out};

    #[test]
    fn corpus_messages_are_judged_under_their_own_envelope_sender() {
        let with =
            crate::mail::parse_message(b"Return-Path: <bounce@lists.example>\r\nFrom: a@example.org\r\n\r\nx\r\n");
        assert_eq!(envelope_of(&with).mail_from, "bounce@lists.example");
        let without = crate::mail::parse_message(b"From: A <a@example.org>\r\n\r\nx\r\n");
        assert_eq!(envelope_of(&without).mail_from, "a@example.org");
        assert_eq!(envelope_of(&without).rcpt_to, ["postmaster@localhost"]);
    }

    /// A small corpus (12 spam, 12 ham) and a config whose only policy is the Bayes one.
    fn tiny_corpus(dir: &Path) -> (Config, PathBuf, PathBuf) {
        let (spam, ham) = (dir.join("spam"), dir.join("ham"));
        std::fs::create_dir_all(&spam).unwrap();
        std::fs::create_dir_all(&ham).unwrap();
        for i in 0..12 {
            let s = format!(
                "From: s{i}@spam.example\r\nSubject: cheap pills offer\r\n\r\ncheap pills viagra offer buy now unique{i}\r\n"
            );
            std::fs::write(spam.join(format!("{i}.eml")), s).unwrap();
            let h = format!(
                "From: h{i}@work.example\r\nSubject: meeting notes\r\n\r\nthe meeting notes agenda for tuesday item{i}\r\n"
            );
            std::fs::write(ham.join(format!("{i}.eml")), h).unwrap();
        }
        let mut config = Config::default();
        // The Bayes policy alone decides (and no DNS is asked).
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("bayes.lua"),
            "function on_receive(event)\n  if event.stage ~= 'data' then return end\n  local b = mailgate.bayes(event.message)\n  if b and b.probability > 0.9 then return { score = 10, symbol = 'BAYES' } end\nend\n",
        )
        .unwrap();
        config.policies.dir = policies;
        config.server.data_dir = dir.join("data");
        (config, spam, ham)
    }

    /// `--by-sender` keeps every file of one sender organisation in one part (a subdomain's
    /// mail with its parent's), where by file name the same sender's mail spreads over the
    /// parts; a file with no From address is its own key.
    #[test]
    fn sender_grouping_keeps_each_sender_in_one_part() {
        let dir = tempfile::tempdir().unwrap();
        let (_, spam, ham) = tiny_corpus(dir.path());
        let news = "From: News <letter@news.work.example>\r\nSubject: weekly\r\n\r\nthe week\r\n";
        std::fs::write(ham.join("news.eml"), news).unwrap();
        std::fs::write(ham.join("nofrom.eml"), "Subject: no sender\r\n\r\nhello\r\n").unwrap();
        let parts = |by| {
            let (files, _) = fold_files(std::slice::from_ref(&spam), std::slice::from_ref(&ham), by, |key| {
                key_fold(key, 7, 5)
            })
            .unwrap();
            let mut parts: std::collections::BTreeMap<String, std::collections::BTreeSet<u64>> = Default::default();
            for f in files {
                parts.entry(f.key).or_default().insert(f.fold);
            }
            parts
        };
        let by_sender = parts(Grouping::Sender);
        assert_eq!(
            by_sender.keys().collect::<Vec<_>>(),
            ["nofrom.eml", "sender:spam.example", "sender:work.example"]
        );
        assert!(by_sender.values().all(|folds| folds.len() == 1), "{by_sender:?}");
        let by_file = parts(Grouping::File);
        // By file name, as `--holdout` splits: spam/3.eml and ham/3.eml share a key.
        assert_eq!(by_file.len(), 14, "{by_file:?}");
        let spam_folds: std::collections::BTreeSet<u64> = (0..12)
            .flat_map(|i| by_file[&format!("{i}.eml")].iter().copied())
            .collect();
        assert!(
            spam_folds.len() > 1,
            "by file, one sender's mail spreads over the parts"
        );
    }

    /// Cross-validation judges every message exactly once, each fold with a model trained on
    /// the others, through the same pipeline as the server.
    #[tokio::test]
    async fn cross_validation_judges_each_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let (config, spam, ham) = tiny_corpus(dir.path());
        let parts = Parts::Folds {
            n: 4,
            seed: 7,
            nested: None,
            by: Grouping::File,
        };
        let (run, table) = judge(&config, &[spam], &[ham], &parts, true).await.unwrap();
        assert_eq!(run.metrics.messages, 24, "each message judged exactly once");
        let table = table.unwrap();
        assert_eq!(table.lines().count(), 25, "a header and one line a message");
        assert!(
            run.metrics.recall > 0.9,
            "the shared spam words carry it: {:?}",
            run.misses
        );
        assert_eq!(run.metrics.false_positives, 0, "{:?}", run.misses);
        // What the thresholds did agrees with the verdicts, and with each score in the table.
        let [ham, spam] = run.actions;
        assert_eq!((ham.iter().sum::<usize>(), spam.iter().sum::<usize>()), (12, 12));
        assert_eq!(ham[0], run.metrics.true_negatives);
        assert_eq!(spam[1] + spam[2] + spam[3], run.metrics.true_positives);
        let t = &config.spam.thresholds;
        let junked = table
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("spam\t"))
            .filter(|l| l.split('\t').nth(1).unwrap().parse::<f64>().unwrap() >= t.quarantine)
            .count();
        assert_eq!(spam[2] + spam[3], junked);
    }

    /// Nested cross-validation chooses each outer fold's weights without that fold: turning
    /// fold 0's spam into ham and its ham into spam changes nothing fold 0's choice saw, while
    /// the other folds' choices (which train on fold 0) see it. The lockbox likewise.
    #[tokio::test]
    async fn nested_choices_never_see_the_fold_they_score() {
        let dir = tempfile::tempdir().unwrap();
        let (config, spam, ham) = tiny_corpus(dir.path());
        let dirs = (vec![spam.clone()], vec![ham.clone()]);
        let parts = Parts::Folds {
            n: 3,
            seed: 7,
            nested: Some(2),
            by: Grouping::File,
        };
        let (before, _) = judge(&config, &dirs.0, &dirs.1, &parts, false).await.unwrap();
        assert_eq!(before.metrics.messages, 24);
        assert_eq!(before.chosen.len(), 3, "one choice per outer fold");
        let lockbox = Parts::Lockbox {
            fraction: 0.3,
            seed: 7,
            inner: 2,
            by: Grouping::File,
        };
        let (boxed, _) = judge(&config, &dirs.0, &dirs.1, &lockbox, false).await.unwrap();
        let boxed_files = |d: &Path| {
            corpus_files(&[d.to_path_buf()])
                .unwrap()
                .into_iter()
                .filter(|p| held_out(p, 7, 0.3))
                .count()
        };
        assert_eq!(boxed.metrics.messages, boxed_files(&spam) + boxed_files(&ham));
        assert_eq!(boxed.chosen.len(), 1);

        // Swap the contents of fold 0's files (and of the lockbox's) between the classes.
        let swap = |pick: &dyn Fn(&Path) -> bool| {
            for i in 0..12 {
                let (s, h) = (spam.join(format!("{i}.eml")), ham.join(format!("{i}.eml")));
                let (sb, hb) = (std::fs::read(&s).unwrap(), std::fs::read(&h).unwrap());
                if pick(&s) {
                    std::fs::write(&s, &hb).unwrap();
                }
                if pick(&h) {
                    std::fs::write(&h, &sb).unwrap();
                }
            }
        };
        swap(&|p| fold_of(p, 7, 3) == 0);
        let (after, _) = judge(&config, &dirs.0, &dirs.1, &parts, false).await.unwrap();
        assert_eq!(after.chosen[0].0, before.chosen[0].0, "fold 0's choice saw fold 0");
        assert_ne!(
            after.chosen[1..].iter().map(|c| &c.0).collect::<Vec<_>>(),
            before.chosen[1..].iter().map(|c| &c.0).collect::<Vec<_>>(),
            "the other folds train on fold 0 and should have seen the swap"
        );
        swap(&|p| fold_of(p, 7, 3) == 0);
        swap(&|p| held_out(p, 7, 0.3));
        let (boxed_after, _) = judge(&config, &dirs.0, &dirs.1, &lockbox, false).await.unwrap();
        assert_eq!(boxed_after.chosen[0].0, boxed.chosen[0].0, "the choice saw the lockbox");
        assert!(
            boxed_after.metrics.false_positives + boxed_after.metrics.false_negatives
                > boxed.metrics.false_positives + boxed.metrics.false_negatives,
            "the lockbox was scored on what it holds"
        );
    }
}
