//! Spam policies end to end: the shipped Bayes policy through SMTP, learning from Junk moves
//! over IMAP, greylisting, and the `mailgate spam` CLI. Every message is synthetic.

use crate::common::*;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BAYES_LUA: &str = include_str!("../../policies/50-bayes.lua");
const BAYES_TOML: &str = include_str!("../../policies/50-bayes.toml");
const GREYLIST_LUA: &str = include_str!("../../policies/90-greylist.lua");
const KEYWORDS_LUA: &str = include_str!("../../policies/30-keywords.lua");
const KEYWORDS_TOML: &str = include_str!("../../policies/30-keywords.toml");
const KEYWORDS_RULES: &str = include_str!("../../policies/keywords/00-shipped.toml");
const LETTERS_LUA: &str = include_str!("../../policies/40-letters.lua");
const LETTERS_TOML: &str = include_str!("../../policies/40-letters.toml");

const SPAM_WORDS: [&str; 12] = [
    "cheap",
    "pills",
    "pharmacy",
    "discount",
    "casino",
    "bonus",
    "winner",
    "prize",
    "viagra",
    "mortgage",
    "refinance",
    "unsubscribe",
];
const HAM_WORDS: [&str; 12] = [
    "meeting", "project", "schedule", "review", "lunch", "team", "notes", "agenda", "thursday", "report", "budget",
    "draft",
];

fn synthetic(words: &[&str], i: usize, subject: &str) -> String {
    let pick: Vec<&str> = (0..8).map(|k| words[(i * 7 + k * 5) % words.len()]).collect();
    format!(
        "From: sender{i}@example.org\r\nTo: alice@localhost\r\nSubject: {subject} {}\r\nMessage-ID: <{i}.{subject}@example.org>\r\n\r\n{}\r\n",
        pick[0],
        pick.join(" ")
    )
}

pub(crate) fn spam_msg(i: usize) -> String {
    synthetic(&SPAM_WORDS, i, "Offer")
}

pub(crate) fn ham_msg(i: usize) -> String {
    synthetic(&HAM_WORDS, i, "Hello")
}

/// A corpus of `n` synthetic messages of each kind in `dir/spam` and `dir/ham` (LF endings,
/// one with an mbox From line, as real corpora have).
pub(crate) fn write_corpus(dir: &Path, n: usize) {
    for (kind, make) in [("spam", spam_msg as fn(usize) -> String), ("ham", ham_msg)] {
        std::fs::create_dir_all(dir.join(kind)).unwrap();
        for i in 0..n {
            let mut text = make(i).replace("\r\n", "\n");
            if i == 0 {
                text = format!("From someone@example.org Mon Jan  1 00:00:00 2024\n{text}");
            }
            std::fs::write(dir.join(kind).join(format!("{i:03}.eml")), text).unwrap();
        }
    }
}

/// Trains the server's Bayes model on 30 synthetic messages of each kind and makes it the
/// live one; returns the training report.
pub(crate) fn train_synthetic(s: &TestServer) -> String {
    let corpus = tempfile::tempdir().unwrap();
    write_corpus(corpus.path(), 30);
    let (counts, report) = mailgate::spam::train(
        &**s.store(),
        &[corpus.path().join("spam")],
        &[corpus.path().join("ham")],
        None,
        true,
        None,
        s.running.shared.config.spam.bayes_max_tokens,
    )
    .unwrap();
    let spam_state = s.running.shared.spam.clone();
    spam_state.set_model(Some(mailgate::spam::bayes::Model::new(counts).unwrap()));
    report
}

#[tokio::test]
async fn bayes_policy_tags_spam_and_junk_moves_train_it() {
    let s = start_with_policies(&[("50-bayes.lua", BAYES_LUA), ("50-bayes.toml", BAYES_TOML)], |_| {}).await;
    let report = train_synthetic(&s);
    assert!(report.contains("trained on 30 spam and 30 ham"), "{report}");
    let spam_state = s.running.shared.spam.clone();

    // Held-back messages (indices never trained) through a real SMTP session.
    let mut c = greeted(s.smtp).await;
    for (i, m) in [(100, spam_msg(100)), (101, ham_msg(101))] {
        let r = send_mail(&mut c, "x@example.org", &["alice@localhost"], &m).await;
        assert!(r.starts_with("250"), "{i}: {r}");
    }
    let texts = s.texts("alice@localhost", "INBOX");
    assert_eq!(texts.len(), 2);
    assert!(
        texts[0].contains("X-Spam-Flag: YES") && texts[0].contains("BAYES_99"),
        "{}",
        texts[0]
    );
    assert!(
        !texts[1].contains("X-Spam-Flag") && texts[1].contains("BAYES_00"),
        "{}",
        texts[1]
    );

    // The user moves the ham one into Junk: it is learned as spam, once.
    let mut handled = spam_state.handled();
    let tcp = tokio::net::TcpStream::connect(s.imap).await.unwrap();
    let mut imap = BufReader::new(tcp);
    let mut line = String::new();
    imap.read_line(&mut line).await.unwrap();
    for (tag, cmd) in [
        ("a", format!("LOGIN alice@localhost {PASSWORD}")),
        ("b", "SELECT INBOX".into()),
        ("c", "COPY 2 Junk".into()),
        ("d", "COPY 2 Junk".into()),
    ] {
        imap.get_mut()
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await
            .unwrap();
        loop {
            line.clear();
            imap.read_line(&mut line).await.unwrap();
            if line.starts_with(&format!("{tag} ")) {
                assert!(line.starts_with(&format!("{tag} OK")), "{cmd}: {line}");
                break;
            }
        }
    }
    tokio::time::timeout(Duration::from_secs(10), handled.wait_for(|n| *n >= 2))
        .await
        .expect("learner handles both moves")
        .unwrap();
    let counts =
        mailgate::spam::bayes::Counts::decode(&s.store().kv_get_large(mailgate::spam::MODEL_KEY).unwrap().unwrap())
            .unwrap();
    assert_eq!(counts.docs, [30, 31], "learned as spam exactly once");
}

#[tokio::test]
async fn bayes_policy_asks_more_of_mail_linking_to_its_own_domain() {
    // Every log-odds is below this bar, so any message that links to its From domain scores
    // as BAYES_90 however sure the model is.
    let toml = BAYES_TOML.replace("min_log_odds = 150.0", "min_log_odds = 1e9");
    assert_ne!(toml, BAYES_TOML, "the shipped manifest has the own_links table");
    let s = start_with_policies(&[("50-bayes.lua", BAYES_LUA), ("50-bayes.toml", &toml)], |_| {}).await;
    train_synthetic(&s);
    let mut c = greeted(s.smtp).await;
    // From sender10N@example.org: linking to example.org (a subdomain too) is its own
    // domain; example.net is not.
    for (i, link) in [
        (100, "http://www.example.org/offer"),
        (101, "http://shop.example.net/offer"),
        (102, "https://news.example.org/"),
    ] {
        let m = format!("{}see {link}\r\n", spam_msg(i));
        let r = send_mail(&mut c, "x@example.org", &["alice@localhost"], &m).await;
        assert!(r.starts_with("250"), "{i}: {r}");
    }
    let texts = s.texts("alice@localhost", "INBOX");
    assert_eq!(texts.len(), 3);
    for own in [&texts[0], &texts[2]] {
        assert!(
            own.contains("X-Spam-Symbols: BAYES_90(4.00)") && !own.contains("X-Spam-Flag"),
            "{own}"
        );
    }
    assert!(
        texts[1].contains("X-Spam-Flag: YES") && texts[1].contains("BAYES_99"),
        "{}",
        texts[1]
    );
}

/// Delivers a suspect message and a clean one to alice; returns both as stored.
async fn suspect_and_clean(s: &TestServer, subject: &str, body: &str) -> Vec<String> {
    for (subject, body) in [(subject, body), ("Lunch", "see you at noon")] {
        let r = transact(s, "x@example.org", &["alice@localhost"], subject, body).await;
        assert!(r.starts_with("250"), "{r}");
    }
    s.texts("alice@localhost", "INBOX")
}

#[tokio::test]
async fn letters_policy_scores_obfuscation() {
    let s = start_with_policies(
        &[("40-letters.lua", LETTERS_LUA), ("40-letters.toml", LETTERS_TOML)],
        |_| {},
    )
    .await;
    let texts = suspect_and_clean(&s, "Cheap V1@gr@ t0day", "buy c1al1s").await;
    assert!(texts[0].contains("OBFUSCATED_SUBJECT"), "{}", texts[0]);
    assert!(!texts[1].contains("OBFUSCATED"), "{}", texts[1]);
}

#[tokio::test]
async fn greylisting_tempfails_a_new_triplet_then_lets_the_retry_through() {
    let toml = "on_error = \"continue\"\n[config]\nenabled = true\ndelay_secs = 0\n";
    let s = start_with_policies(&[("90-greylist.lua", GREYLIST_LUA), ("90-greylist.toml", toml)], |_| {}).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<new@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "451 4.7.1").await;
    c.cmd("RSET", "250").await;
    // The retry (same /24, sender, recipient) passes; another recipient is new again.
    c.cmd("MAIL FROM:<new@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("RCPT TO:<bob@localhost>", "451").await;
}

#[test]
fn spam_cli_trains_evaluates_and_classifies() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_child_config(dir.path());
    write_corpus(&dir.path().join("corpus"), 40);
    let (spam, ham) = (dir.path().join("corpus/spam"), dir.path().join("corpus/ham"));
    let (spam, ham) = (spam.to_str().unwrap(), ham.to_str().unwrap());
    // No policies where the config points: judging would pass every message unscored, so
    // eval refuses, naming the folder it looked in.
    let (code, out, err) = cli(&config, &["spam", "eval", "--spam", spam, "--ham", ham], "");
    assert_ne!(code, 0, "{out}");
    let looked = dir.path().join("policies");
    assert!(err.contains(&format!("no policies in {}", looked.display())), "{err}");
    write_policies(&looked, &[("50-bayes.lua", BAYES_LUA), ("50-bayes.toml", BAYES_TOML)]);
    let split = ["--holdout", "0.25", "--seed", "7"];
    let mut args = vec!["spam", "train", "--spam", spam, "--ham", ham, "--features", "16384"];
    args.extend(split);
    let (code, out, err) = cli(&config, &args, "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("trained on") && !out.contains("trained on 40 spam"),
        "holdout left some out: {out}"
    );
    let scores = dir.path().join("scores.tsv");
    let scores_arg = scores.to_str().unwrap();
    let mut args = vec![
        "spam", "eval", "--spam", spam, "--ham", ham, "--json", "--scores", scores_arg,
    ];
    args.extend(split);
    let (code, out, err) = cli(&config, &args, "");
    assert_eq!(code, 0, "{out}{err}");
    let m: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    for key in ["precision", "recall", "f1", "fpr", "messages", "msgs_per_s"] {
        assert!(m.get(key).is_some(), "{key} in {m}");
    }
    let n = m["messages"].as_u64().unwrap();
    assert!(n > 0 && n < 80, "only the held-out part is scored: {m}");
    assert_eq!(m["f1"].as_f64(), Some(1.0), "{m}");
    // --scores: a header, then one line per judged message with its label, probability,
    // log-odds (the probability's logit, where it has not saturated) and the symbols scored.
    let table = std::fs::read_to_string(&scores).unwrap();
    let mut lines = table.lines();
    assert_eq!(lines.next(), Some("label\tscore\tbayes\tlog_odds\tfile\tsymbols"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len() as u64, n, "{table}");
    for r in &rows {
        let (p, d): (f64, f64) = (r[2].parse().unwrap(), r[3].parse().unwrap());
        match r[0] {
            "spam" => assert!(p > 0.5 && d > 0.0 && r[5].contains("BAYES_99"), "{r:?}"),
            "ham" => assert!(p < 0.5 && d < 0.0 && !r[5].contains("BAYES_9"), "{r:?}"),
            other => panic!("label {other}"),
        }
        let total: f64 = r[1].parse().unwrap();
        let summed: f64 = r[5]
            .split(',')
            .filter_map(|s| s.split_once('=').map(|(_, v)| v.parse::<f64>().unwrap()))
            .sum();
        assert!((total - summed).abs() < 1e-3, "the symbols add up to the score: {r:?}");
        if (0.001..0.999).contains(&p) {
            assert!((1.0 / (1.0 + (-d).exp()) - p).abs() < 1e-3, "{r:?}");
        }
    }
    let (code, before, _) = cli(&config, &["spam", "classify"], &spam_msg(500));
    assert_eq!(code, 0);
    let out = &before;
    assert!(out.lines().next().unwrap().starts_with("spam "), "{out}");
    assert!(out.contains("symbol BAYES_99"), "{out}");
    let (_, out, _) = cli(&config, &["spam", "classify"], &ham_msg(501));
    assert!(out.lines().next().unwrap().starts_with("ham "), "{out}");
    assert!(out.contains("token "), "{out}");
    // --folds: every message is judged once, by a model trained on the other folds; the
    // stored model is neither used nor changed, so classify answers as before.
    let (code, out, err) = cli(
        &config,
        &[
            "spam", "eval", "--spam", spam, "--ham", ham, "--json", "--folds", "4", "--seed", "3",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    let m: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(m["folds"].as_u64(), Some(4), "{m}");
    assert_eq!(m["messages"].as_u64(), Some(80), "{m}");
    assert_eq!(m["f1"].as_f64(), Some(1.0), "{m}");
    let (_, after, _) = cli(&config, &["spam", "classify"], &spam_msg(500));
    assert_eq!(after, before, "the stored model is untouched by --folds");
    // `spam eval` of the corpus with more arguments.
    let eval = |more: &[&str]| {
        let args: Vec<&str> = ["spam", "eval", "--spam", spam, "--ham", ham]
            .iter()
            .chain(more)
            .copied()
            .collect();
        cli(&config, &args, "")
    };
    let (code, _, err) = eval(&["--folds", "4", "--holdout", "0.2"]);
    assert_ne!(code, 0, "--folds with --holdout is refused: {err}");
    // --by-sender: the parts are cut by sender. Every message here is from example.org, so
    // one part holds all of them and the others have nothing to train on: refused, saying so.
    let by_sender = ["--json", "--folds", "4", "--by-sender"];
    let (code, out, err) = eval(&by_sender);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("fold") && err.contains("whole senders"), "{err}");
    // Eight sender organisations: each judged by a model that never saw it; the output says so.
    for dir in [spam, ham] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let i: usize = text
                .split("From: sender")
                .nth(1)
                .unwrap()
                .split('@')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let moved = text.replacen(
                &format!("sender{i}@example.org"),
                &format!("sender{i}@org{}.test", i % 8),
                1,
            );
            std::fs::write(&path, moved).unwrap();
        }
    }
    let (code, out, err) = eval(&by_sender);
    assert_eq!(code, 0, "{out}{err}");
    let m: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        (m["by_sender"].as_bool(), m["messages"].as_u64()),
        (Some(true), Some(80)),
        "{m}"
    );
    let (code, _, err) = eval(&["--by-sender"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--folds or --lockbox"), "{err}");
}

#[tokio::test]
async fn keyword_rules_fire_with_operator_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    write_policies(
        &p,
        &[("30-keywords.lua", KEYWORDS_LUA), ("30-keywords.toml", KEYWORDS_TOML)],
    );
    write_policies(&p.join("keywords"), &[("00-shipped.toml", KEYWORDS_RULES)]);
    // The operator switches one shipped rule off.
    write_policies(
        &p.join("keywords.local"),
        &[(
            "10-mine.toml",
            "[[rule]]\nname = \"REMOVE_ME_LIST\"\npattern = 'x'\nscore = 0\n",
        )],
    );
    let s = start_in(dir, |_| {}).await;
    let body = "Order from our online pharmacy. To be removed from this list reply STOP.";
    let texts = suspect_and_clean(&s, "deal", body).await;
    assert!(texts[0].contains("PHARMA_WORDS"), "{}", texts[0]);
    assert!(!texts[0].contains("REMOVE_ME_LIST"), "overridden off: {}", texts[0]);
    assert!(!texts[1].contains("PHARMA_WORDS"), "{}", texts[1]);
}

/// The shipped policies on a real corpus: `MAILGATE_CORPUS` (a folder with `spam/` and
/// `ham/`; `.ci/run` sets `../shared/corpus/dev`), ten-fold cross-validation with a fixed
/// seed (each message judged by a model trained on the other nine tenths: the nearest to
/// training on all of it and judging unseen mail). Fails below F1 0.97 or above a
/// false-positive rate of 0.5 %, and when the variable names no corpus; without the
/// variable it is skipped, saying so.
#[test]
fn shipped_policies_on_the_dev_corpus() {
    let Some(corpus) = std::env::var_os("MAILGATE_CORPUS") else {
        eprintln!("skipped: MAILGATE_CORPUS is not set (.ci/run sets it to ../shared/corpus/dev)");
        return;
    };
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus);
    assert!(
        corpus.join("spam").is_dir() && corpus.join("ham").is_dir(),
        "MAILGATE_CORPUS={}: no spam/ and ham/ folders there",
        corpus.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_child_config(dir.path());
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.path().join("policies").display().to_string(),
        &policies.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let (spam, ham) = (corpus.join("spam"), corpus.join("ham"));
    let (spam, ham) = (spam.to_str().unwrap(), ham.to_str().unwrap());
    let args = [
        "spam", "eval", "--spam", spam, "--ham", ham, "--json", "--folds", "10", "--seed", "1",
    ];
    let (code, out, err) = cli(&config, &args, "");
    assert_eq!(code, 0, "{out}{err}");
    let m: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    eprintln!("{}, ten folds, seed 1: {m}", corpus.display());
    assert!(m["f1"].as_f64().unwrap() >= 0.97, "{m}");
    assert!(m["fpr"].as_f64().unwrap() <= 0.005, "{m}");
    if m["messages"].as_u64() == Some(3508) {
        // The dev corpus, shipped, seed 1 (docs/spam.md): F1 0.987, 4 false positives of
        // 2466 (0.16 %), 23 misses of 1042. The model before 2026-12-05 made 6 and 18 here:
        // a floor a message or two under the measured figures catches a broken tokenizer,
        // model or policy.
        assert!(m["f1"].as_f64().unwrap() >= 0.983, "{m}");
        assert!(m["false_positives"].as_u64().unwrap() <= 5, "{m}");
    }
}

#[test]
fn training_keeps_the_model_within_its_token_bound() {
    let corpus = tempfile::tempdir().unwrap();
    write_corpus(corpus.path(), 30);
    let store = mailgate::store::SledStore::open(&corpus.path().join("store"), 16).unwrap();
    let (spam, ham) = ([corpus.path().join("spam")], [corpus.path().join("ham")]);
    let train = |max| mailgate::spam::train(&store, &spam, &ham, None, true, None, max).unwrap();
    let (full, report) = train(1_000_000);
    assert!(!report.contains("dropped"), "{report}");
    let bound = full.len() / 2;
    let (kept, report) = train(bound);
    assert!(
        report.contains("dropped to stay within spam.bayes_max_tokens"),
        "{report}"
    );
    assert!(
        kept.len() <= bound && kept.len() + 1 >= bound * 9 / 10,
        "{} of {bound}",
        kept.len()
    );
    // The fewest-seen went: no token kept was seen less often than one dropped.
    let seen = |c: &[u32; 2]| c[0] + c[1];
    let least_kept = kept.counts.values().map(seen).min().unwrap();
    let most_dropped = full
        .counts
        .iter()
        .filter(|(k, _)| !kept.counts.contains_key(*k))
        .map(|(_, c)| seen(c))
        .max()
        .unwrap();
    assert!(least_kept >= most_dropped, "kept {least_kept}, dropped {most_dropped}");
    // What the store holds is the bounded model, and it still tells the two apart.
    let stored = mailgate::spam::bayes::Counts::decode(
        &mailgate::store::KeyValue::kv_get_large(&store, mailgate::spam::MODEL_KEY)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, kept);
    let model = mailgate::spam::bayes::Model::new(kept).unwrap();
    let judge = |raw: &str| model.judge(&mailgate::mail::parse_message(raw.as_bytes())).probability;
    assert!(judge(&spam_msg(100)) > 0.5 && judge(&ham_msg(101)) < 0.5);
}

/// Run outside the source tree on the embedded defaults (no ./policies there), the binary
/// judges with the shipped policies it carries, written under the data directory, and
/// leaves the working directory without a policies folder of its own.
#[test]
fn the_shipped_policies_judge_wherever_mailgate_runs() {
    let dir = tempfile::tempdir().unwrap();
    let message = "From: a@example.org\r\nSubject: cheap pills\r\n\r\nBuy viagra and cialis now.\r\n";
    let (code, stdout, stderr) = cli_in(dir.path(), &["spam", "classify"], message);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("PHARMA_WORDS"), "{stdout}");
    let shipped = dir.path().join("mailgate-data/policies.shipped");
    assert_eq!(
        std::fs::read_to_string(shipped.join("30-keywords.lua")).unwrap(),
        include_str!("../../policies/30-keywords.lua")
    );
    assert!(shipped.join("keywords/00-shipped.toml").exists());
    assert!(!dir.path().join("policies").exists());
}
