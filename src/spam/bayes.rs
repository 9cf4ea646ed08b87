//! The Bayes classifier: per-class token counts (ours, so a message can be unlearned when a
//! user changes their mind) and a linfa-bayes Multinomial naive Bayes model built from them.
//!
//! Counts are the source of truth and what the store keeps: per token (its 64-bit hash;
//! the dev corpus has ~486k distinct ones), the messages of each class that had it. Since a
//! multinomial model's sufficient statistics are per-class feature sums, the linfa model is
//! fitted on a two-row dataset with one column per token training had: each row is one
//! class's summed counts (so the class priors are equal: the filter judges the message, not
//! the mix of mail it was trained on).
//!
//! linfa-bayes 0.7.1 keeps its joint log-likelihood crate-private and `predict` only gives the
//! label, so the fitted model's smoothed log-probabilities are read out of it once (through
//! its serde form) into one weight per token, and a message's score is summed over its few
//! hundred tokens instead of a dot product over every column. A test checks that the plain
//! sum gives linfa's own `predict` label.
//!
//! The score departs from the plain multinomial sum in measured ways (docs/spam.md, nine
//! splits of the dev corpus):
//! - a token no training message had counts for nothing: smoothing gives it a constant
//!   log-odds of ln(ham total / spam total) toward the smaller class, so a newsletter full of
//!   words the model never saw was judged spam for its novelty alone;
//! - each token's log-odds is weighed by its rarity, half its inverse document frequency
//!   (`rarity`);
//! - the body's words count as their mean, scaled to a typical body
//!   (`BODY_SCALE` / words, at most `MAX_WORD_WEIGHT` each): a long message no longer wins
//!   by length, and a few-word body does not hang on one token;
//! - the message's other tokens (Subject, sender, Message-ID, origin, links, structure: the
//!   prefixed ones) weigh `FIELD_WEIGHT` each, since they say more per token than prose.
//! - the body words' letter combinations (`tokens::is_ngram`) are a second multinomial, a
//!   linfa fit of their own (their features carry `tokens::NGRAM_BIT`), counted as their
//!   damped mean (`GRAM_SCALE`, `GRAM_DAMPING`).
//!
//! Tokens used to be hashed into 2^20 buckets; keeping them apart (with the rarity weight:
//! a bucket's document frequency mixes its tokens') took nine-split misses from 91 to 57 at
//! the same false positives. `--features N` still folds a new model into N buckets.

use super::tokens;
use crate::hooks::contract::Message;
use linfa::prelude::*;
use linfa_bayes::MultinomialNb;
use ndarray::{Array1, Array2};
use rustc_hash::FxHashMap;

/// Tokens a judgement names (the strongest, either way).
const TOP_TOKENS: usize = 10;

pub const HAM: usize = 0;
pub const SPAM: usize = 1;

/// Lidstone smoothing; 0.02 with the weights below gave the best F1 over nine splits of the
/// dev corpus (docs/spam.md; 0.1 was best before tokens were kept apart and weighed by rarity).
const ALPHA: f64 = 0.02;

/// The most one body word weighs: in a body of a few words the mean is noise (one random
/// string whose bucket a ham word shared scored a three-word spam −131; docs/spam.md).
const MAX_WORD_WEIGHT: f64 = 10.0;

/// Weight of each prefixed (field, link, structure) token against a body word's.
const FIELD_WEIGHT: f64 = 4.0;

/// The body's words count as their mean log-odds times this (about a typical body's word
/// count, so a typical message scores as the plain sum would).
const BODY_SCALE: f64 = 300.0;

/// The letter combinations count as their mean weight times this, the mean taken over
/// their number plus `GRAM_DAMPING` (so a body of a few words says little through them).
/// Nine splits: 30, 50 or 100 took misses 57 → 53 at the same false positives; 300 cost
/// four false positives (docs/spam.md).
const GRAM_SCALE: f64 = 50.0;
const GRAM_DAMPING: f64 = 30.0;

/// The model's weights: what the constants above give by default, and what `spam eval
/// --nested` chooses on inner folds instead (docs/spam.md, "Nested cross-validation").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Lidstone smoothing.
    pub alpha: f64,
    /// Weight of each prefixed (field) token against a body word's.
    pub field_weight: f64,
    /// The body's words count as their mean log-odds times this.
    pub body_scale: f64,
    /// The letter combinations count as their damped mean weight times this.
    pub gram_scale: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            alpha: ALPHA,
            field_weight: FIELD_WEIGHT,
            body_scale: BODY_SCALE,
            gram_scale: GRAM_SCALE,
        }
    }
}

impl std::fmt::Display for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "alpha {} field_weight {} body_scale {} gram_scale {}",
            self.alpha, self.field_weight, self.body_scale, self.gram_scale
        )
    }
}

/// First bytes of the stored counts (the format before them was dense hashed buckets).
const MAGIC: &[u8; 4] = b"MGB2";

/// Per-class token counts, the model's sufficient statistics and what the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    /// Hash space tokens are folded into: 0 keeps every distinct token apart (its 64-bit
    /// hash); N folds them into N buckets (`spam train --features N`, or a model trained
    /// before tokens were kept apart).
    pub features: u64,
    /// Messages learned per class.
    pub docs: [u64; 2],
    /// Per feature, per class: messages that had it. A feature no message has is absent.
    pub counts: FxHashMap<u64, [u32; 2]>,
}

impl Counts {
    pub fn new(features: u64) -> Counts {
        Counts {
            features,
            docs: [0, 0],
            counts: FxHashMap::default(),
        }
    }

    /// Adds (`+1`) or removes (`-1`) one message's features from a class.
    pub fn learn(&mut self, class: usize, features: &[u64], delta: i32) {
        for &f in features {
            let slot = self.counts.entry(f).or_insert([0, 0]);
            slot[class] = slot[class].saturating_add_signed(delta);
            if *slot == [0, 0] {
                self.counts.remove(&f);
            }
        }
        self.docs[class] = self.docs[class].saturating_add_signed(delta as i64);
    }

    /// Keeps the counts to at most `max` features: past it, the fewest-seen features go
    /// (those a single message had, first) until a tenth of `max` is free again, so that a
    /// model users keep teaching stays bounded without pruning on every lesson. Says how
    /// many went.
    pub fn prune(&mut self, max: usize) -> usize {
        if self.counts.len() <= max {
            return 0;
        }
        // At most every feature (max = 0).
        let drop = self.counts.len() - max + max / 10;
        let mut seen: Vec<(u32, u64)> = self.counts.iter().map(|(&k, c)| (c[HAM] + c[SPAM], k)).collect();
        if drop < seen.len() {
            seen.select_nth_unstable(drop);
        }
        for &(_, k) in &seen[..drop] {
            self.counts.remove(&k);
        }
        drop
    }

    /// Distinct features the counts hold.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// `MGB2`, `features u64, docs 2×u64`, then per feature in ascending order
    /// `feature u64, ham u32, spam u32`; little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut keys: Vec<u64> = self.counts.keys().copied().collect();
        keys.sort_unstable();
        let mut v = Vec::with_capacity(28 + keys.len() * 16);
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&self.features.to_le_bytes());
        for d in self.docs {
            v.extend_from_slice(&d.to_le_bytes());
        }
        for k in keys {
            let c = self.counts[&k];
            v.extend_from_slice(&k.to_le_bytes());
            v.extend_from_slice(&c[HAM].to_le_bytes());
            v.extend_from_slice(&c[SPAM].to_le_bytes());
        }
        v
    }

    /// Reads either format: this one, or the dense buckets an older mailgate stored
    /// (`features u32, docs 2×u64, counts 2×features u32`), which become a folded model of
    /// as many buckets (tokens hash to the same ones, so nothing needs retraining).
    pub fn decode(b: &[u8]) -> Option<Counts> {
        let u64_at = |i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
        let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        if b.starts_with(MAGIC) {
            let (features, docs) = (u64_at(4)?, [u64_at(12)?, u64_at(20)?]);
            let records = b.get(28..)?;
            if records.len() % 16 != 0 {
                return None;
            }
            let mut counts = FxHashMap::default();
            counts.reserve(records.len() / 16);
            for at in (28..b.len()).step_by(16) {
                let c = [u32_at(at + 8)?, u32_at(at + 12)?];
                if c == [0, 0] || counts.insert(u64_at(at)?, c).is_some() {
                    return None;
                }
            }
            return Some(Counts { features, docs, counts });
        }
        let features = u32_at(0)? as usize;
        if features == 0 || b.len() != 4 + 16 + features * 8 {
            return None;
        }
        let mut c = Counts::new(features as u64);
        c.docs = [u64_at(4)?, u64_at(12)?];
        for class in [HAM, SPAM] {
            for f in 0..features {
                let n = u32_at(20 + (class * features + f) * 4)?;
                if n > 0 {
                    c.counts.entry(f as u64).or_insert([0, 0])[class] = n;
                }
            }
        }
        Some(c)
    }
}

/// A trained model ready to classify.
pub struct Model {
    pub counts: Counts,
    #[cfg(test)]
    nb: MultinomialNb<f64, usize>,
    /// Per feature training had: its weight, ln P(feature | spam) − ln P(feature | ham) as
    /// linfa fitted them times the feature's rarity (`rarity`). A feature no training
    /// message had is absent and weighs nothing.
    weights: FxHashMap<u64, f32>,
    /// The plain log-odds and linfa's column order, for checking them against its labels.
    #[cfg(test)]
    log_odds: FxHashMap<u64, f64>,
    #[cfg(test)]
    keys: Vec<u64>,
    /// ln P(spam) − ln P(ham).
    prior_odds: f64,
    params: Params,
}

/// Weight of each body word in a body of `n` distinct words.
fn word_weight(n: usize, body_scale: f64) -> f64 {
    (body_scale / (n as f64 + 1.0)).min(MAX_WORD_WEIGHT)
}

/// The three kinds of token, weighed apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Prefixed tokens: Subject, sender, Message-ID, origin, links, structure.
    Field = 0,
    /// Body words.
    Word = 1,
    /// Letter combinations of the body words (their own multinomial).
    Gram = 2,
}

impl Group {
    fn of(token: &str) -> Group {
        if tokens::is_ngram(token) {
            Group::Gram
        } else if tokens::is_body_word(token) {
            Group::Word
        } else {
            Group::Field
        }
    }
}

/// Weight of each token of each group, for a message with these features per group.
fn group_weights(groups: &[Vec<u64>; 3], p: &Params) -> [f64; 3] {
    let grams = groups[Group::Gram as usize].len() as f64;
    [
        p.field_weight,
        word_weight(groups[Group::Word as usize].len(), p.body_scale),
        p.gram_scale / (grams + GRAM_DAMPING),
    ]
}

/// How much a feature that `n` of `docs` training messages had counts: half its inverse
/// document frequency, ln(docs / n) / 2. A word most messages have says little about this
/// one even when its counts lean one way; a rare one, when it leans, says much (measured:
/// nine splits, false positives 26 → 26 and misses 91 → 57 with tokens kept apart, where
/// keeping them apart alone gave 39 and 64; docs/spam.md).
fn rarity(n: u32, docs: u64) -> f64 {
    (docs as f64 / f64::from(n.max(1))).ln().max(0.0) / 2.0
}

/// One multinomial as linfa fitted it.
struct Fitted {
    #[cfg(test)]
    nb: MultinomialNb<f64, usize>,
    /// Per key, ln P(key | spam) − ln P(key | ham).
    odds: Vec<f64>,
    /// ln P(spam) − ln P(ham).
    prior_odds: f64,
}

/// Fits one multinomial over `keys`, a dense column each (linfa smooths over the columns it
/// is given: over the features used, whatever the hash space).
fn fit(counts: &Counts, keys: &[u64], alpha: f64) -> Result<Fitted, String> {
    let mut x = Array2::<f64>::zeros((2, keys.len()));
    for (i, k) in keys.iter().enumerate() {
        let c = counts.counts[k];
        x[[HAM, i]] = f64::from(c[HAM]);
        x[[SPAM, i]] = f64::from(c[SPAM]);
    }
    let y = Array1::from(vec![HAM, SPAM]);
    let nb = MultinomialNb::params()
        .alpha(alpha)
        .fit(&Dataset::new(x, y))
        .map_err(|e| format!("fitting the Bayes model: {e}"))?;
    let v = serde_json::to_value(&nb).map_err(|e| format!("reading the linfa model: {e}"))?;
    let (ham, ham_prior) = class_params(&v, HAM)?;
    let (spam, spam_prior) = class_params(&v, SPAM)?;
    if ham.len() != keys.len() || spam.len() != keys.len() {
        return Err("linfa model has the wrong number of features".into());
    }
    Ok(Fitted {
        #[cfg(test)]
        nb,
        odds: spam.iter().zip(&ham).map(|(s, h)| s - h).collect(),
        prior_odds: spam_prior - ham_prior,
    })
}

/// The fitted parameters of one class, out of linfa's serde form.
fn class_params(v: &serde_json::Value, class: usize) -> Result<(Vec<f64>, f64), String> {
    let info = &v["class_info"][class.to_string()];
    let data = info["feature_log_prob"]["data"]
        .as_array()
        .ok_or("linfa model without feature_log_prob")?;
    let probs: Vec<f64> = data.iter().map(|x| x.as_f64().unwrap_or(f64::MIN)).collect();
    let prior = info["prior"].as_f64().ok_or("linfa model without prior")?;
    Ok((probs, prior.ln()))
}

/// What the classifier says about one message.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// P(spam | message), 0..=1.
    pub probability: f64,
    /// The score it comes from: ln P(spam | message) / P(ham | message) as weighed here
    /// (`probability` is its logistic). Unlike the probability it does not saturate: two
    /// messages both at P = 1.0000 may stand at 40 and at 2,000.
    pub log_odds: f64,
    /// Tokens that pulled hardest, with their weighted spam log-odds (positive = spammy).
    pub top: Vec<(String, f64)>,
}

impl Model {
    /// Fits the linfa model to the counts with the shipped [`Params`]; an error until both
    /// classes have messages.
    pub fn new(counts: Counts) -> Result<Model, String> {
        Model::with_params(counts, Params::default())
    }

    /// [`Model::new`] with other weights (`spam eval --nested` tries several).
    pub fn with_params(counts: Counts, params: Params) -> Result<Model, String> {
        if counts.docs[HAM] == 0 || counts.docs[SPAM] == 0 {
            return Err(format!(
                "the model needs both spam and ham (has {} spam, {} ham)",
                counts.docs[SPAM], counts.docs[HAM]
            ));
        }
        // Letter combinations are a multinomial of their own: in one with the words, their
        // counts (several per word) shifted every word's probability (docs/spam.md).
        let (grams, others): (Vec<u64>, Vec<u64>) = counts.counts.keys().partition(|&&k| k & tokens::NGRAM_BIT != 0);
        let main = fit(&counts, &others, params.alpha)?;
        // (None in a model from before them, or folded from an older mailgate's.)
        let gram_odds = if grams.is_empty() {
            Vec::new()
        } else {
            fit(&counts, &grams, params.alpha)?.odds
        };
        let docs = counts.docs[HAM] + counts.docs[SPAM];
        let mut weights = FxHashMap::default();
        weights.reserve(counts.len());
        for (keys, odds) in [(&others, &main.odds), (&grams, &gram_odds)] {
            for (k, lo) in keys.iter().zip(odds) {
                let c = counts.counts[k];
                weights.insert(*k, (lo * rarity(c[HAM] + c[SPAM], docs)) as f32);
            }
        }
        Ok(Model {
            #[cfg(test)]
            log_odds: others.iter().copied().zip(main.odds).collect(),
            #[cfg(test)]
            keys: others,
            counts,
            #[cfg(test)]
            nb: main.nb,
            weights,
            prior_odds: main.prior_odds,
            params,
        })
    }

    pub fn features(&self) -> u64 {
        self.counts.features
    }

    fn weight(&self, feature: u64) -> f64 {
        self.weights.get(&feature).map_or(0.0, |&w| f64::from(w))
    }

    /// Classifies a message.
    pub fn judge(&self, m: &Message) -> Judgement {
        // Each token hashed once; its feature serves the score and the explanation.
        let toks: Vec<(String, u64, Group)> = tokens::tokens(m)
            .into_iter()
            .map(|t| {
                let f = tokens::feature(&t, self.features());
                let group = Group::of(&t);
                (t, f, group)
            })
            .collect();
        let pick = |g: Group| tokens::distinct(toks.iter().filter(|t| t.2 == g).map(|t| t.1).collect());
        let groups = [pick(Group::Field), pick(Group::Word), pick(Group::Gram)];
        let weight_of = group_weights(&groups, &self.params);
        let log_odds = self.log_odds(&groups, weight_of);
        let mut top: Vec<(String, f64)> = toks
            .into_iter()
            .map(|(t, f, g)| (t, weight_of[g as usize] * self.weight(f)))
            .collect();
        // Ties (tokens with the same counts weigh the same) in name order: the explanation
        // of one message under one model is always the same.
        let by_strength =
            |a: &(String, f64), b: &(String, f64)| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(&b.0));
        if top.len() > TOP_TOKENS {
            top.select_nth_unstable_by(TOP_TOKENS, by_strength);
            top.truncate(TOP_TOKENS);
        }
        top.sort_by(by_strength);
        Judgement {
            probability: 1.0 / (1.0 + (-log_odds).exp()),
            log_odds,
            top,
        }
    }

    /// The log-odds of spam for a message's features by `Group` (each sorted and distinct)
    /// and the groups' weights (`group_weights`): the weighted sum.
    fn log_odds(&self, groups: &[Vec<u64>; 3], weights: [f64; 3]) -> f64 {
        let sum = |feats: &[u64]| feats.iter().map(|&f| self.weight(f)).sum::<f64>();
        self.prior_odds + groups.iter().zip(weights).map(|(g, w)| w * sum(g)).sum::<f64>()
    }

    /// The plain multinomial label (every feature weighing one, as linfa's `predict` sums).
    #[cfg(test)]
    fn plain_label(&self, feats: &[u64]) -> usize {
        let d = self.prior_odds
            + feats
                .iter()
                .map(|f| self.log_odds.get(f).copied().unwrap_or(0.0))
                .sum::<f64>();
        usize::from(d > 0.0)
    }

    /// linfa's own label for a feature set (dense; for checks, not the hot path).
    #[cfg(test)]
    fn linfa_label(&self, feats: &[u64]) -> usize {
        let mut x = Array2::<f64>::zeros((1, self.keys.len()));
        for (i, k) in self.keys.iter().enumerate() {
            if feats.contains(k) {
                x[[0, i]] = 1.0;
            }
        }
        self.nb.predict(&x)[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &str, text: &str) -> Message {
        Message {
            subject: subject.into(),
            text: text.into(),
            ..Message::default()
        }
    }

    #[test]
    fn learns_classifies_unlearns_and_round_trips() {
        // Unfolded, as `spam train` makes them, and folded into few buckets.
        for f in [0, 1 << 12] {
            learns_classifies_unlearns_and_round_trips_with(f);
        }
    }

    fn learns_classifies_unlearns_and_round_trips_with(f: u64) {
        let mut c = Counts::new(f);
        let spam = [
            "cheap pills online pharmacy discount",
            "win money now casino bonus",
            "discount pills casino money",
        ];
        let ham = [
            "meeting notes for the project review",
            "lunch on thursday with the team",
            "project schedule and review notes",
        ];
        for s in spam {
            c.learn(SPAM, &tokens::features(&msg("offer", s), f), 1);
        }
        for h in ham {
            c.learn(HAM, &tokens::features(&msg("hello", h), f), 1);
        }
        assert_eq!(Counts::decode(&c.encode()), Some(c.clone()));
        let m = Model::new(c.clone()).unwrap();
        let held_spam = msg("offer", "cheap casino discount pills");
        let held_ham = msg("hello", "review the project notes at lunch");
        let ps = m.judge(&held_spam).probability;
        let ph = m.judge(&held_ham).probability;
        assert!(ps > 0.9 && ph < 0.1, "spam {ps} ham {ph}");
        // The fitted parameters read out of linfa give its own labels (on trained messages,
        // whose features are all known).
        for (texts, subject, want) in [(&spam, "offer", SPAM), (&ham, "hello", HAM)] {
            for t in texts.iter() {
                let feats = tokens::features(&msg(subject, t), f);
                assert_eq!(m.linfa_label(&feats), want, "linfa on {t}");
                assert_eq!(m.plain_label(&feats), want, "ours on {t}");
            }
        }
        // Kept apart (folded, an unseen token may share a seen one's bucket): tokens no
        // training message had say nothing either way (words whose letter combinations are
        // unseen too)...
        if f == 0 {
            let few = m.judge(&msg("hello", "zzqx qqjv")).probability;
            let many = m.judge(&msg("hello", "zzqx qqjv xxjw kkvq wwfz vvxk")).probability;
            assert!(
                (few - many).abs() < 1e-12,
                "novel words moved the score: {few} vs {many}"
            );
            // ...but an unseen word is judged by its letters: a spam word's kin leans spam, a
            // ham word's ham.
            let kin = |word: &str| m.judge(&msg("", word)).probability;
            assert!(
                kin("pharmacies") > 0.5 && kin("meetings") < 0.5,
                "pharmacies {} meetings {}",
                kin("pharmacies"),
                kin("meetings")
            );
        }
        assert!(m.judge(&held_spam).top.iter().any(|(t, w)| t == "casino" && *w > 0.0));
        // Unlearning everything spam leaves a model that cannot be built.
        for s in spam {
            c.learn(SPAM, &tokens::features(&msg("offer", s), f), -1);
        }
        assert_eq!(c.docs[SPAM], 0);
        assert!(c.counts.values().all(|x| x[SPAM] == 0 && x[HAM] > 0), "{c:?}");
        assert!(Model::new(c).is_err());
    }

    #[test]
    fn pruning_drops_the_fewest_seen_features_first() {
        // Feature k seen in k messages, k = 1..=20.
        let mut c = Counts::new(0);
        for k in 1..=20u64 {
            for class in 0..k {
                c.learn(class as usize % 2, &[k], 1);
            }
        }
        assert_eq!(c.prune(20), 0, "within the bound: nothing goes");
        // Past it, down to 90 % of the bound: 20 − 10 + 1 go.
        assert_eq!(c.prune(10), 11);
        let mut left: Vec<u64> = c.counts.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, (12..=20).collect::<Vec<_>>());
        assert_eq!(c.counts[&12], [6, 6]);
        assert_eq!(c.prune(0), 9);
        assert!(c.is_empty());
    }

    #[test]
    fn a_dense_model_of_an_older_mailgate_reads_as_a_folded_one() {
        // features 4, docs (ham 2, spam 1), ham counts [0, 2, 0, 1], spam counts [1, 0, 0, 1].
        let mut old = 4u32.to_le_bytes().to_vec();
        for d in [2u64, 1] {
            old.extend_from_slice(&d.to_le_bytes());
        }
        for n in [0u32, 2, 0, 1, 1, 0, 0, 1] {
            old.extend_from_slice(&n.to_le_bytes());
        }
        let c = Counts::decode(&old).unwrap();
        assert_eq!((c.features, c.docs), (4, [2, 1]));
        let mut want = FxHashMap::default();
        want.insert(0, [0, 1]);
        want.insert(1, [2, 0]);
        want.insert(3, [1, 1]);
        assert_eq!(c.counts, want);
        assert_eq!(Counts::decode(&c.encode()), Some(c));
        // Truncated or inconsistent bytes are refused, in either format.
        assert_eq!(Counts::decode(&old[..old.len() - 1]), None);
        let mut new = Counts::new(0);
        new.learn(SPAM, &[7, 9], 1);
        let bytes = new.encode();
        assert_eq!(Counts::decode(&bytes[..bytes.len() - 3]), None);
        let mut zero = bytes.clone();
        zero[28 + 12..28 + 16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Counts::decode(&zero), None, "a record counting nothing");
    }
}
