//! The crate's layers point one way (docs/architecture.md, "Layers"): each top-level module
//! imports only the modules below it in this table. A new `crate::x` path that breaks it
//! fails here, naming the file.

/// Module → what it may import (of ours).
const ALLOWED: &[(&str, &[&str])] = &[
    ("mail", &[]),
    ("metrics", &[]),
    ("net", &[]),
    ("store", &["metrics"]),
    ("config", &["mail"]),
    ("auth", &["config", "mail", "metrics", "store"]),
    ("hooks", &["config", "mail", "metrics", "store"]),
    ("spam", &["config", "hooks", "mail", "store"]),
    ("route", &["config", "mail", "store"]),
    ("pipeline", &["config", "hooks", "mail", "route", "spam", "store"]),
    ("queue", &["config", "mail", "metrics", "net", "route", "store"]),
    ("deliver", &["hooks", "mail", "metrics", "pipeline", "queue", "store"]),
    (
        "context",
        &["auth", "config", "hooks", "queue", "route", "spam", "store"],
    ),
    (
        "smtp",
        &[
            "auth", "config", "context", "deliver", "hooks", "mail", "metrics", "net", "pipeline", "queue", "route",
            "store",
        ],
    ),
    ("pop3", &["auth", "config", "context", "hooks", "mail", "net", "store"]),
    (
        "imap",
        &["auth", "config", "context", "hooks", "mail", "net", "spam", "store"],
    ),
    (
        "admin",
        &[
            "auth", "config", "context", "deliver", "hooks", "mail", "pipeline", "queue", "route", "spam", "store",
        ],
    ),
    (
        "server",
        &[
            "admin", "auth", "config", "context", "hooks", "imap", "mail", "metrics", "net", "pop3", "queue", "route",
            "smtp", "spam", "store",
        ],
    ),
    (
        "cli",
        &[
            "admin", "auth", "config", "hooks", "mail", "pipeline", "server", "spam", "store",
        ],
    ),
];

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn modules_import_only_the_layers_below_them() {
    // Each module may import only modules listed before it: no circle is possible.
    for (i, (m, allowed)) in ALLOWED.iter().enumerate() {
        for a in *allowed {
            assert!(
                ALLOWED[..i].iter().any(|(b, _)| b == a),
                "{m} may import {a}, which is not below it"
            );
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let re = regex::Regex::new(r"crate::([a-z_0-9]+)").unwrap();
    let mut wrong = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_str().unwrap().trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let allowed = ALLOWED
            .iter()
            .find(|(m, _)| *m == top)
            .unwrap_or_else(|| panic!("src/{top} is not in the layer table (tests/it/layers.rs, docs/architecture.md)"))
            .1;
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for c in re.captures_iter(code) {
            let used = &c[1];
            if used != top && !allowed.contains(&used) {
                wrong.push(format!("src/{}: {top} imports {used}", rel.display()));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}
