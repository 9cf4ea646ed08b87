//! Analyzers a host offers policies: `mailgate.bayes`, `mailgate.keywords`,
//! `mailgate.letters` in Lua and the WASM imports of the same names.
//!
//! The hook engine knows what they answer (contract types) and nothing of how: the spam
//! filter registers its implementation when the server (or `policy test`, `spam eval`) builds
//! the [`super::host::HostServices`]. Without one, every call answers "nothing found".

use super::contract::{BayesResult, KeywordHit, LetterFinding, Message};
use super::manifest::Manifest;
use std::path::Path;
use std::sync::Arc;

pub trait Analyzers: Send + Sync {
    /// The Bayes judgement of `m`, or `None` while no model is trained.
    fn bayes(&self, m: &Message) -> Option<BayesResult>;
    /// Unusual letter combinations in `m`'s text.
    fn letters(&self, m: &Message) -> Vec<LetterFinding>;
    /// The keyword rules a plugin's manifest names, loaded (and checked) with the plugin.
    fn keywords(&self, plugin: &Path, manifest: &Manifest) -> Result<Arc<dyn KeywordRules>, String>;
}

/// One plugin's keyword rules.
pub trait KeywordRules: Send + Sync {
    fn matches(&self, m: &Message) -> Vec<KeywordHit>;
}

/// No analyzers registered: no model, no findings, no rules.
pub struct NoAnalyzers;

impl Analyzers for NoAnalyzers {
    fn bayes(&self, _: &Message) -> Option<BayesResult> {
        None
    }

    fn letters(&self, _: &Message) -> Vec<LetterFinding> {
        Vec::new()
    }

    fn keywords(&self, _: &Path, _: &Manifest) -> Result<Arc<dyn KeywordRules>, String> {
        Ok(Arc::new(NoAnalyzers))
    }
}

impl KeywordRules for NoAnalyzers {
    fn matches(&self, _: &Message) -> Vec<KeywordHit> {
        Vec::new()
    }
}
