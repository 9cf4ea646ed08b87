//! Cost of the policy chain per message at the data stage: 5 Lua and 2 WASM policies.
//!
//! ```text
//! cargo bench --bench hook_chain [-- --iterations 2000 --dir DIR]
//! ```
//!
//! Without `--dir` it writes five Lua policies and the two example WASM plugins (built from
//! `plugins/` for wasm32-wasip2) into a temporary directory, and also prints that directory
//! so `smtp_load --policies DIR` can measure intake with the same set.

use mailgate::hooks::PolicySet;
use mailgate::hooks::contract::{Event, Hook, Stage};
use mailgate::hooks::host::HostServices;
use mailgate::mail::parse_message;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LUA: [(&str, &str); 5] = [
    (
        "10-keywords.lua",
        r#"local words = { "viagra", "lottery", "winner", "bitcoin", "casino" }
function on_receive(e)
  local text = string.lower(e.message.subject .. " " .. e.message.text)
  local n = 0
  for _, w in ipairs(words) do if string.find(text, w, 1, true) then n = n + 1 end end
  if n > 0 then return { score = n, symbol = "KW" } end
end"#,
    ),
    (
        "20-headers.lua",
        r#"function on_receive(e)
  for _, h in ipairs(e.message.headers) do
    if h.name == "X-Mailer" and mailgate.regex_match("(?i)bulk|mass", h.value) then
      return { score = 2, symbol = "BULK_MAILER" }
    end
  end
end"#,
    ),
    (
        "30-from.lua",
        r#"function on_receive(e)
  local from = e.message.from or ""
  local env = e.envelope.mail_from or ""
  if from ~= "" and env ~= "" and string.match(from, "@(.+)$") ~= string.match(env, "@(.+)$") then
    return { score = 0.5, symbol = "FROM_ENV_MISMATCH" }
  end
end"#,
    ),
    (
        "40-caps.lua",
        r#"function on_receive(e)
  local s = e.message.subject
  local caps = select(2, string.gsub(s, "%u", ""))
  if #s > 10 and caps * 2 > #s then return { score = 1, symbol = "SUBJ_ALL_CAPS" } end
end"#,
    ),
    (
        "50-size.lua",
        r#"function on_receive(e)
  if e.message.size > 1000000 then return { score = 0.1, symbol = "BIG" } end
  return { add_headers = { { name = "X-Checked", value = "yes" } } }
end"#,
    ),
];

fn build_wasm() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target"))
        .current_dir(&root) // for plugins/.cargo/config.toml
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building plugins/ for wasm32-wasip2 failed");
    root.join("target/wasm32-wasip2/release")
}

fn message() -> Vec<u8> {
    let mut m = b"From: Alice <alice@example.org>\r\nTo: bob@example.test\r\nSubject: Quarterly numbers\r\nX-Mailer: Thunderbird\r\nMessage-ID: <q@example.org>\r\n\r\n".to_vec();
    while m.len() < 5000 {
        m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem\r\n");
    }
    m
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let iterations: usize = arg("--iterations").and_then(|v| v.parse().ok()).unwrap_or(2000);
    let dir = match arg("--dir") {
        Some(d) => PathBuf::from(d),
        None => {
            let dir = std::env::temp_dir().join("mailgate-bench-policies");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, src) in LUA {
                std::fs::write(dir.join(name), src).unwrap();
            }
            let wasm = build_wasm();
            std::fs::copy(wasm.join("header_stamp.wasm"), dir.join("60-stamp.wasm")).unwrap();
            std::fs::copy(wasm.join("keyword_block.wasm"), dir.join("70-keywords.wasm")).unwrap();
            std::fs::write(
                dir.join("70-keywords.toml"),
                "[config]\nblocked = [\"viagra\"]\nsuspicious = [\"winner\"]\n",
            )
            .unwrap();
            dir
        }
    };
    let set = PolicySet::load(&dir, &HostServices::none(), 2).expect("policies load");
    println!(
        "policies: {} from {} (version {})",
        set.plugins.len(),
        dir.display(),
        set.version
    );
    let raw = message();
    let mut base = Event {
        stage: Some(Stage::Data),
        ..Event::default()
    };
    base.envelope.mail_from = Some("alice@example.org".into());
    base.envelope.rcpt_to = vec!["bob@example.test".into()];
    for _ in 0..50 {
        let mut ev = base.clone();
        ev.message = Some(std::sync::Arc::new(parse_message(&raw)));
        set.run(Hook::Receive, &mut ev).await;
    }
    let mut times = Vec::with_capacity(iterations);
    let mut parse_total = Duration::ZERO;
    let mut per_plugin: Vec<(String, u64)> = set.plugins.iter().map(|p| (p.name.clone(), 0)).collect();
    for _ in 0..iterations {
        let mut ev = base.clone();
        let t = Instant::now();
        ev.message = Some(std::sync::Arc::new(parse_message(&raw)));
        parse_total += t.elapsed();
        let out = set.run(Hook::Receive, &mut ev).await;
        times.push(t.elapsed());
        assert!(out.trace.iter().all(|t| t.error.is_none()), "{:?}", out.trace);
        for t in &out.trace {
            if let Some(p) = per_plugin.iter_mut().find(|(n, _)| *n == t.plugin) {
                p.1 += t.micros;
            }
        }
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / iterations as u32;
    println!(
        "hook chain at data ({} policies, 5 KB message, parse included): mean {:.1?} p50 {:.1?} p99 {:.1?}; parse alone {:.1?}",
        set.plugins.len(),
        mean,
        times[iterations / 2],
        times[iterations * 99 / 100],
        parse_total / iterations as u32
    );
    let each: Vec<String> = per_plugin
        .iter()
        .map(|(n, us)| format!("{n} {:.1}", *us as f64 / iterations as f64))
        .collect();
    println!("mean µs per plugin: {}", each.join(", "));
}
