//! WASM policies: the example plugins built from `plugins/` for wasm32-wasip2, then driven
//! through real SMTP sessions; the same contract as Lua; misbehaving guests.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Builds the guest workspace once per test run; returns the directory of the `.wasm` files.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let target = root.join("target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            // plugins/.cargo/config.toml (its rustflags) applies to builds started there.
            .current_dir(&root)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building the WASM plugins failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2/release")
    })
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(built().join(format!("{name}.wasm"))).unwrap()
}

async fn server_with(files: Vec<(String, Vec<u8>)>, tweak: impl FnOnce(&mut mailgate::config::Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    std::fs::create_dir_all(&p).unwrap();
    for (name, bytes) in files {
        std::fs::write(p.join(name), bytes).unwrap();
    }
    start_in(dir, tweak).await
}

/// One message from a@example.org to alice.
async fn to_alice(s: &TestServer, subject: &str, body: &str) -> String {
    transact(s, "a@example.org", &["alice@localhost"], subject, body).await
}

const KEYWORDS_TOML: &str = "[config]\nblocked = [\"viagra\"]\nsuspicious = [\"winner\", \"lottery\"]\n";

/// The keyword-block example, written in Lua: the two must agree.
const KEYWORDS_LUA: &str = r#"
local function words(key)
  local out = {}
  for _, w in ipairs(mailgate.config[key] or {}) do table.insert(out, string.lower(w)) end
  return out
end
function on_receive(event)
  local text = string.lower(event.message.subject .. " " .. event.message.text)
  for _, w in ipairs(words("blocked")) do
    if string.find(text, w, 1, true) then
      return { action = "reject", code = 550, enhanced = "5.7.1", text = "Message contains a blocked word (" .. w .. ")" }
    end
  end
  local hits = {}
  for _, w in ipairs(words("suspicious")) do
    if string.find(text, w, 1, true) then table.insert(hits, w) end
  end
  if #hits > 0 then
    return { score = 2.0 * #hits, symbol = "KW_SUSPICIOUS", reason = table.concat(hits, ",") }
  end
end
"#;

#[tokio::test]
async fn example_plugins_through_smtp() {
    let s = server_with(
        vec![
            ("10-stamp.wasm".into(), wasm("header_stamp")),
            ("20-keywords.wasm".into(), wasm("keyword_block")),
            ("20-keywords.toml".into(), KEYWORDS_TOML.as_bytes().to_vec()),
        ],
        |_| {},
    )
    .await;
    let r = to_alice(&s, "hello there", "plain text").await;
    assert!(r.starts_with("250"), "{r}");
    let raw = &s.texts("alice@localhost", "INBOX")[0];
    assert!(raw.contains("X-Stamped-By: header-stamp (wasm)\r\n"), "{raw}");
    assert!(raw.contains("X-Subject-Length: 11\r\n"), "{raw}");
    let r = to_alice(&s, "cheap VIAGRA", "x").await;
    assert!(
        r.starts_with("550 5.7.1 Message contains a blocked word (viagra)"),
        "{r}"
    );
    let r = to_alice(&s, "you are a winner", "claim your lottery prize").await;
    assert!(r.starts_with("250"), "{r}");
    let raw = &s.texts("alice@localhost", "INBOX")[1];
    assert!(raw.contains("X-Spam-Symbols: KW_SUSPICIOUS(4.00)"), "{raw}");
}

#[tokio::test]
async fn lua_and_wasm_give_the_same_results() {
    let lua = server_with(
        vec![
            ("20-keywords.lua".into(), KEYWORDS_LUA.as_bytes().to_vec()),
            ("20-keywords.toml".into(), KEYWORDS_TOML.as_bytes().to_vec()),
        ],
        |_| {},
    )
    .await;
    let wasm = server_with(
        vec![
            ("20-keywords.wasm".into(), wasm("keyword_block")),
            ("20-keywords.toml".into(), KEYWORDS_TOML.as_bytes().to_vec()),
        ],
        |_| {},
    )
    .await;
    let cases = [
        ("hello", "nothing here"),
        ("WINNER", "x"),
        ("lottery", "winner"),
        ("x", "Viagra inside"),
    ];
    for (subject, body) in cases {
        let a = to_alice(&lua, subject, body).await;
        let b = to_alice(&wasm, subject, body).await;
        assert_eq!(
            a.split(" queued as").next(),
            b.split(" queued as").next(),
            "{subject}/{body}"
        );
    }
    let spam = |s: &TestServer| -> Vec<String> {
        s.texts("alice@localhost", "INBOX")
            .iter()
            .map(|t| {
                t.lines()
                    .filter(|l| l.starts_with("X-Spam"))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    };
    assert_eq!(spam(&lua), spam(&wasm));
    assert_eq!(spam(&lua).len(), 3);
}

#[tokio::test]
async fn misbehaving_guests_never_take_the_server_down() {
    let s = server_with(
        vec![
            ("10-mis.wasm".into(), wasm("misbehave")),
            (
                "10-mis.toml".into(),
                b"memory_mb = 8\ntimeout_ms = 500\nfuel = 50000000\n".to_vec(),
            ),
        ],
        |_| {},
    )
    .await;
    for subject in ["loop", "oom", "panic"] {
        let r = to_alice(&s, subject, "x").await;
        assert!(r.starts_with("250"), "{subject}: on_error continue delivers: {r}");
    }
    let texts = s.texts("alice@localhost", "INBOX");
    assert!(
        texts[0].contains("10-mis.wasm@data=continue error(fuel budget exceeded)")
            || texts[0].contains("error(time budget exceeded)"),
        "{}",
        texts[0]
    );
    assert!(texts[1].contains("10-mis.wasm@data=continue error("), "{}", texts[1]);
    assert!(
        texts[2].contains("10-mis.wasm@data=continue error(error: "),
        "{}",
        texts[2]
    );
    // A fresh instance per call: the next message is handled normally.
    assert!(to_alice(&s, "fine", "x").await.starts_with("250"));
    assert!(s.texts("alice@localhost", "INBOX")[3].contains("X-Misbehave: behaved"));
}

#[tokio::test]
async fn on_error_applies_to_wasm_traps() {
    let s = server_with(
        vec![
            ("10-mis.wasm".into(), wasm("misbehave")),
            (
                "10-mis.toml".into(),
                b"on_error = \"tempfail\"\nfuel = 10000000\n".to_vec(),
            ),
        ],
        |_| {},
    )
    .await;
    let r = to_alice(&s, "loop", "x").await;
    assert!(r.starts_with("451 4.3.0"), "{r}");
}

#[tokio::test]
async fn a_broken_wasm_file_is_reported_and_keeps_the_old_set() {
    let s = server_with(vec![("10-stamp.wasm".into(), wasm("header_stamp"))], |_| {}).await;
    std::fs::write(s.policies_dir().join("20-garbage.wasm"), b"\0asm not really").unwrap();
    let err = s.running.shared.engine.reload().unwrap_err();
    assert!(
        err.contains("20-garbage.wasm") && err.contains("not a valid WASM component"),
        "{err}"
    );
    assert!(to_alice(&s, "still", "x").await.starts_with("250"));
    assert!(s.texts("alice@localhost", "INBOX")[0].contains("X-Stamped-By"));
}

/// Multi-threaded, as the server runs: WASM calls then run in place (`block_in_place`) and
/// the DNS host call re-enters the runtime from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_host_calls_from_lua_and_wasm() {
    let dns = crate::dns::start_dns(&[
        ("mx.example.test.", "A", "127.0.0.9"),
        ("example.test.", "MX", "10 mx.example.test."),
    ])
    .await;
    let lua = r#"
function on_receive(e)
  local a = mailgate.dns("A", "mx.example.test")
  local mx = mailgate.dns("MX", "example.test")
  local none = mailgate.dns("A", "nothing.example.test")
  return { add_headers = { { name = "X-Lua-Dns", value = table.concat(a, ",") .. "|" .. table.concat(mx, ",") .. "|" .. #none } } }
end"#;
    let s = server_with(
        vec![
            ("10-dns.lua".into(), lua.as_bytes().to_vec()),
            ("20-mis.wasm".into(), wasm("misbehave")),
            ("20-mis.toml".into(), b"timeout_ms = 2000\n".to_vec()),
        ],
        |c| c.dns.servers = vec![dns],
    )
    .await;
    assert!(to_alice(&s, "dns", "x").await.starts_with("250"));
    let raw = &s.texts("alice@localhost", "INBOX")[0];
    assert!(raw.contains("X-Lua-Dns: 127.0.0.9|10 mx.example.test.|0\r\n"), "{raw}");
    assert!(raw.contains("X-Dns: 127.0.0.9\r\n"), "{raw}");
}

/// The spam analyzers as WASM host imports (the spam-score example): letters, keyword rules
/// from the manifest's folders, the live Bayes model and a DNS blocklist, all over the whole
/// message although the plugin asks for no message fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_analyzers_as_wasm_imports() {
    let dns = crate::dns::start_dns(&[("1.0.0.127.bl.test.", "A", "127.0.0.2")]).await;
    let manifest = "dns_lookups = 2\n[config]\nkeyword_dirs = [\"keywords\"]\ndnsbl_ip = [\"bl.test\"]\nbayes_spam = 0.9\n[config.scores]\nOBFUSCATED_WORD = 2.0\nBAYES_SPAM = 4.0\n";
    let rule = "[[rule]]\nname = \"WASM_RULE\"\npattern = '(?i)\\bcasino\\b'\nfield = \"body\"\nscore = 1.25\ngroup = \"g\"\ndescription = \"casino talk\"\n";
    let s = server_with(
        vec![
            ("60-spam.wasm".into(), wasm("spam_score")),
            ("60-spam.toml".into(), manifest.as_bytes().to_vec()),
        ],
        |c| c.dns.servers = vec![dns],
    )
    .await;
    write_policies(&s.policies_dir().join("keywords"), &[("rules.toml", rule)]);
    // The rules are read when the set loads: reload now that they exist.
    s.running.shared.engine.reload().unwrap();

    // Before any model exists the Bayes import says none.
    assert!(
        to_alice(&s, "hello", "casino tonight? cheap V1agr@ inside")
            .await
            .starts_with("250")
    );
    crate::spam::train_synthetic(&s);
    let mut c = greeted(s.smtp).await;
    let r = send_mail(
        &mut c,
        "x@example.org",
        &["alice@localhost"],
        &crate::spam::spam_msg(100),
    )
    .await;
    assert!(r.starts_with("250"), "{r}");

    let inbox = s.texts("alice@localhost", "INBOX");
    let symbols = |raw: &str| {
        raw.lines()
            .find_map(|l| l.strip_prefix("X-Spam-Symbols: "))
            .unwrap_or("")
            .to_string()
    };
    let first = symbols(&inbox[0]);
    for sym in ["OBFUSCATED_WORD(2.00)", "WASM_RULE(1.25)", "RBL_IP(4.00)"] {
        assert!(first.contains(sym), "{sym} in {first}");
    }
    assert!(!first.contains("BAYES_SPAM"), "{first}");
    let second = symbols(&inbox[1]);
    assert!(
        second.contains("BAYES_SPAM(4.00)") && second.contains("RBL_IP"),
        "{second}"
    );
    assert!(!second.contains("OBFUSCATED"), "{second}");
}
