//! Keyword rules (Rspamd-style): named regexes with a score, a group and a description,
//! read from TOML rule files and compiled once per policy load into one `RegexSet` per
//! field (subject, body text, all headers) plus per-header regexes.
//!
//! ```toml
//! [[rule]]
//! name = "PHARMA"                       # symbol
//! pattern = '(?i)\b(viagra|cialis)\b'
//! field = "body"                        # subject | body | headers | header:Reply-To | any
//! score = 2.5
//! group = "pharma"                      # within a group only the highest score counts
//! description = "pharmacy spam words"
//! ```
//!
//! Files are read in name order from each directory given; a rule in a later directory
//! replaces an earlier rule of the same name (operator overrides over shipped defaults;
//! `score = 0` switches one off).

use crate::hooks::contract::Message;
use regex::{Regex, RegexSet};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub name: String,
    pub pattern: String,
    #[serde(default = "default_field")]
    pub field: String,
    pub score: f64,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub description: String,
}

fn default_field() -> String {
    "body".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleDef>,
}

/// A rule that matched (the contract's type: policies see exactly these fields). Its score
/// is 0 when a higher-scoring rule of the same group matched too.
pub type Hit = crate::hooks::contract::KeywordHit;

/// Compiled rules.
pub struct Rules {
    defs: Vec<RuleDef>,
    subject: (RegexSet, Vec<usize>),
    body: (RegexSet, Vec<usize>),
    headers: (RegexSet, Vec<usize>),
    one_header: Vec<(String, Regex, usize)>,
}

impl crate::hooks::analyzers::KeywordRules for Rules {
    fn matches(&self, m: &Message) -> Vec<Hit> {
        Rules::matches(self, m)
    }
}

impl Rules {
    pub fn empty() -> Rules {
        Rules::compile(Vec::new()).expect("no rules compile")
    }

    /// Reads every `*.toml` in `dirs` (in order; later ones override by name).
    /// The rules of the folders a plugin's manifest names in `[config] keyword_dirs`
    /// (relative to the plugin's folder), compiled once per policy load.
    pub fn for_plugin(plugin: &Path, manifest: &crate::hooks::manifest::Manifest) -> Result<Rules, String> {
        let shown = plugin.display();
        let base = plugin.parent().unwrap_or(Path::new("."));
        let dirs: Vec<PathBuf> = match manifest.config.get("keyword_dirs") {
            Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).map(|d| base.join(d)).collect(),
            Some(_) => return Err(format!("{shown}: keyword_dirs must be a list of folder names")),
            None => Vec::new(),
        };
        Rules::load(&dirs).map_err(|e| format!("{shown}: {e}"))
    }

    pub fn load(dirs: &[PathBuf]) -> Result<Rules, String> {
        let mut defs: Vec<RuleDef> = Vec::new();
        for dir in dirs {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            };
            files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
            files.sort();
            for f in files {
                for d in read_file(&f)? {
                    match defs.iter_mut().find(|x| x.name == d.name) {
                        Some(x) => *x = d,
                        None => defs.push(d),
                    }
                }
            }
        }
        Rules::compile(defs)
    }

    fn compile(defs: Vec<RuleDef>) -> Result<Rules, String> {
        let set = |field: &str| -> Result<(RegexSet, Vec<usize>), String> {
            let idx: Vec<usize> = (0..defs.len())
                .filter(|&i| defs[i].field == field || defs[i].field == "any")
                .collect();
            let set = RegexSet::new(idx.iter().map(|&i| defs[i].pattern.as_str()))
                .map_err(|e| format!("keyword rules ({field}): {e}"))?;
            Ok((set, idx))
        };
        let mut one_header = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            if let Some(h) = d.field.strip_prefix("header:") {
                let re = Regex::new(&d.pattern).map_err(|e| format!("rule {}: {e}", d.name))?;
                one_header.push((h.to_ascii_lowercase(), re, i));
            } else if !matches!(d.field.as_str(), "subject" | "body" | "headers" | "any") {
                return Err(format!(
                    "rule {}: field {:?} is not subject, body, headers, header:NAME or any",
                    d.name, d.field
                ));
            }
        }
        Ok(Rules {
            subject: set("subject")?,
            body: set("body")?,
            headers: set("headers")?,
            one_header,
            defs,
        })
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The rules that match a message (each once), group maxima applied.
    pub fn matches(&self, m: &Message) -> Vec<Hit> {
        let mut hit = vec![false; self.defs.len()];
        let mut mark = |(set, idx): &(RegexSet, Vec<usize>), text: &str| {
            for i in set.matches(text).iter() {
                hit[idx[i]] = true;
            }
        };
        mark(&self.subject, &m.subject);
        mark(&self.body, &m.text);
        let all_headers: String = m.headers.iter().map(|h| format!("{}: {}\n", h.name, h.value)).collect();
        mark(&self.headers, &all_headers);
        for (name, re, i) in &self.one_header {
            if m.headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name) && re.is_match(&h.value))
            {
                hit[*i] = true;
            }
        }
        let mut out: Vec<Hit> = (0..self.defs.len())
            .filter(|&i| hit[i] && self.defs[i].score != 0.0)
            .map(|i| {
                let d = &self.defs[i];
                Hit {
                    name: d.name.clone(),
                    score: d.score,
                    group: d.group.clone(),
                    description: d.description.clone(),
                }
            })
            .collect();
        // Within a group only the strongest counts.
        for i in 0..out.len() {
            if out[i].group.is_empty() {
                continue;
            }
            let best = out
                .iter()
                .filter(|h| h.group == out[i].group)
                .map(|h| h.score)
                .fold(f64::MIN, f64::max);
            let first_best = out.iter().position(|h| h.group == out[i].group && h.score == best);
            if out[i].score < best || first_best != Some(i) {
                out[i].score = 0.0;
            }
        }
        out
    }
}

fn read_file(path: &Path) -> Result<Vec<RuleDef>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let f: RuleFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(f.rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::contract::Header;

    #[test]
    fn rules_load_override_and_match_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = dir.path().join("shipped");
        let ours = dir.path().join("ours");
        std::fs::create_dir_all(&shipped).unwrap();
        std::fs::create_dir_all(&ours).unwrap();
        std::fs::write(
            shipped.join("a.toml"),
            r#"
[[rule]]
name = "MONEY"
pattern = '(?i)\bmillion dollars\b'
score = 2.0
group = "money"
[[rule]]
name = "MONEY_SUBJ"
pattern = '(?i)million'
field = "any"
score = 3.0
group = "money"
[[rule]]
name = "FREE_MAIL_REPLY"
pattern = '(?i)@(gmail|yahoo)\.com'
field = "header:Reply-To"
score = 1.0
[[rule]]
name = "OFF_LATER"
pattern = 'x'
field = "subject"
score = 1.0
"#,
        )
        .unwrap();
        std::fs::write(
            ours.join("b.toml"),
            "[[rule]]\nname = \"OFF_LATER\"\npattern = 'x'\nfield = \"subject\"\nscore = 0\n",
        )
        .unwrap();
        let rules = Rules::load(&[shipped.clone(), ours.clone()]).unwrap();
        assert_eq!(rules.len(), 4);
        let m = Message {
            subject: "x marks a million".into(),
            text: "send me one million dollars".into(),
            headers: vec![Header {
                name: "Reply-To".into(),
                value: "a@gmail.com".into(),
            }],
            ..Message::default()
        };
        let hits = rules.matches(&m);
        let score = |n: &str| hits.iter().find(|h| h.name == n).map(|h| h.score);
        assert_eq!(score("MONEY"), Some(0.0), "group max applies: {hits:?}");
        assert_eq!(score("MONEY_SUBJ"), Some(3.0));
        assert_eq!(score("FREE_MAIL_REPLY"), Some(1.0));
        assert_eq!(score("OFF_LATER"), None);
        assert!(rules.matches(&Message::default()).is_empty());
        std::fs::write(
            ours.join("c.toml"),
            "[[rule]]\nname = \"BAD\"\npattern = '('\nscore = 1\n",
        )
        .unwrap();
        let err = Rules::load(&[shipped, ours]).err().expect("a bad pattern is refused");
        assert!(err.contains("keyword rules"), "{err}");
    }
}
