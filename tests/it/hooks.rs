//! The hook engine through real SMTP (and POP3) sessions: every verdict path, budgets and
//! failures, reloads.

use crate::common::*;
use std::time::Duration;

const VERDICTS: &str = r#"
stages = { "mail", "rcpt", "data" }

function on_receive(event)
  if event.stage == "mail" and event.envelope.mail_from == "later@example.org" then
    return { action = "tempfail", code = 451, enhanced = "4.7.1", text = "greylisted, come back" }
  end
  if event.stage == "rcpt" and event.recipient == "bob@localhost" and event.envelope.mail_from == "x@spam.test" then
    return { action = "reject", code = 550, enhanced = "5.7.1", text = "bob takes no mail from you" }
  end
  if event.stage == "data" then
    local s = event.message.subject
    if s == "discard me" then return { action = "discard" } end
    if s == "junk" then return { action = "quarantine", score = 1, symbol = "MANUAL_JUNK" } end
    if s == "stamp" then
      return { add_headers = { { name = "X-Stamp", value = "seen by " .. mailgate.plugin } }, remove_headers = { "X-Secret" } }
    end
    if s == "go away" then return { action = "disconnect" } end
  end
end
"#;

#[tokio::test]
async fn each_verdict_through_a_real_session() {
    let s = start_with_policies(&[("10-verdicts.lua", VERDICTS)], |_| {}).await;
    let r = transact(&s, "later@example.org", &["alice@localhost"], "t", "x").await;
    assert!(r.starts_with("451 4.7.1 greylisted, come back"), "{r}");
    let r = transact(&s, "x@spam.test", &["bob@localhost"], "t", "x").await;
    assert!(r.starts_with("550 5.7.1 bob takes no mail from you"), "{r}");
    let r = transact(&s, "a@example.org", &["alice@localhost"], "discard me", "x").await;
    assert!(r.starts_with("250"), "discard still answers 250: {r}");
    assert!(s.inbox("alice@localhost").is_empty(), "discarded message not stored");
    let r = transact(&s, "a@example.org", &["alice@localhost"], "junk", "x").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(s.subjects("alice@localhost", "Junk"), vec!["junk"]);
    let junk = &s.texts("alice@localhost", "Junk")[0];
    assert!(junk.contains("X-Spam-Symbols: MANUAL_JUNK(1.00)"), "{junk}");
    // Header added, header removed, trace header present.
    let mut c = greeted(s.smtp).await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: stamp\r\nX-Secret: hush\r\n\r\nbody\r\n").await;
    assert!(c.cmd(".", "250").await.starts_with("250"));
    let raw = &s.texts("alice@localhost", "INBOX")[0];
    assert!(raw.contains("X-Stamp: seen by 10-verdicts.lua\r\n"), "{raw}");
    assert!(!raw.contains("X-Secret"), "{raw}");
    assert!(raw.contains("X-Mailgate-Trace: v="), "{raw}");
    assert!(raw.contains("10-verdicts.lua@data=continue"), "{raw}");
    // Disconnect: 421 and the connection closes.
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RCPT TO:<alice@localhost>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(message("go away", "x").as_bytes()).await;
    assert!(c.cmd(".", "421").await.starts_with("421"));
    assert!(c.closed().await);
}

const ROUTES: &str = r#"
function on_route(event)
  if event.recipient == "sales@localhost" then
    return { route = "local", mailbox = "bob@localhost" }
  end
  if event.recipient == "alice@localhost" and event.envelope.mail_from == "blocked@example.org" then
    return { route = "reject", code = 550, enhanced = "5.7.1", text = "alice is not for you" }
  end
  if event.recipient == "outside@elsewhere.test" then
    -- a policy cannot turn a rewrite into an open relay
    return { route = "local", mailbox = "victim@elsewhere.test" }
  end
end
"#;

#[tokio::test]
async fn route_policies_rewrite_and_refuse() {
    let s = start_with_policies(&[("20-routes.lua", ROUTES)], |_| {}).await;
    let r = transact(&s, "a@example.org", &["sales@localhost"], "to sales", "x").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(s.subjects("bob@localhost", "INBOX"), vec!["to sales"]);
    let r = transact(&s, "blocked@example.org", &["alice@localhost"], "x", "x").await;
    assert!(r.starts_with("550 5.7.1 alice is not for you"), "{r}");
    let r = transact(&s, "a@example.org", &["outside@elsewhere.test"], "x", "x").await;
    assert!(r.starts_with("550 5.1.1"), "{r}");
    // Without a route answer the built-in routing stands.
    let r = transact(&s, "a@example.org", &["nobody@localhost"], "x", "x").await;
    assert!(r.starts_with("550 5.1.1"), "{r}");
    let r = transact(&s, "a@example.org", &["x@elsewhere.test"], "x", "x").await;
    assert!(r.starts_with("554 5.7.1"), "{r}");
}

const DELIVER: &str = r#"
function on_deliver(event)
  if event.recipient == "bob@localhost" and string.find(event.message.subject, "report") then
    return { folder = "Drafts", flags = { "\\Flagged", "$Report" }, add_headers = { { name = "X-For", value = event.recipient } } }
  end
end
"#;

#[tokio::test]
async fn on_deliver_chooses_folder_flags_and_per_recipient_headers() {
    let s = start_with_policies(&[("30-deliver.lua", DELIVER)], |_| {}).await;
    let r = transact(
        &s,
        "a@example.org",
        &["alice@localhost", "bob@localhost"],
        "weekly report",
        "x",
    )
    .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(s.subjects("alice@localhost", "INBOX"), vec!["weekly report"]);
    assert!(s.subjects("bob@localhost", "INBOX").is_empty());
    let drafts = s.store().mailbox("bob@localhost", "Drafts").unwrap().unwrap();
    let m = &s.store().messages(drafts.id).unwrap()[0];
    assert!(m.meta.flags.contains(mailgate::store::Flags::FLAGGED));
    assert_eq!(m.meta.keywords, vec!["$Report"]);
    assert!(
        String::from_utf8(s.body(m))
            .unwrap()
            .starts_with("X-For: bob@localhost\r\n")
    );
    assert!(
        !s.texts("alice@localhost", "INBOX")[0].contains("X-For"),
        "alice's copy has no X-For"
    );
}

const SCORES: &str = r#"
function on_receive(event)
  local n = tonumber(string.match(event.message.subject, "score (%d+)") or "0")
  if n > 0 then return { score = n, symbol = "TEST_SCORE", reason = "asked for " .. n } end
end
"#;

#[tokio::test]
async fn thresholds_map_scores_to_tag_quarantine_reject() {
    let s = start_with_policies(&[("50-score.lua", SCORES)], |_| {}).await;
    assert!(
        transact(&s, "a@example.org", &["alice@localhost"], "score 1", "x")
            .await
            .starts_with("250")
    );
    assert!(
        transact(&s, "a@example.org", &["alice@localhost"], "score 6", "x")
            .await
            .starts_with("250")
    );
    assert!(
        transact(&s, "a@example.org", &["alice@localhost"], "score 11", "x")
            .await
            .starts_with("250")
    );
    let r = transact(&s, "a@example.org", &["alice@localhost"], "score 20", "x").await;
    assert!(
        r.starts_with("550 5.7.1 Message rejected as spam (score 20.0: TEST_SCORE)"),
        "{r}"
    );
    let inbox = s.texts("alice@localhost", "INBOX");
    assert_eq!(inbox.len(), 2);
    assert!(
        !inbox[0].contains("X-Spam-Flag") && inbox[0].contains("X-Spam-Score: 1.00"),
        "{}",
        inbox[0]
    );
    assert!(
        inbox[1].contains("X-Spam-Flag: YES\r\nX-Spam-Score: 6.00\r\nX-Spam-Symbols: TEST_SCORE(6.00)"),
        "{}",
        inbox[1]
    );
    assert_eq!(s.subjects("alice@localhost", "Junk"), vec!["score 11"]);
}

#[tokio::test]
async fn runaway_plugins_never_take_the_server_down() {
    let looping = "function on_receive(e) while true do end end";
    let bomb = "function on_receive(e) local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end end";
    let erroring = "function on_receive(e) error('boom') end";
    let s = start_with_policies(
        &[
            ("10-loop.lua", looping),
            ("20-bomb.lua", bomb),
            ("20-bomb.toml", "memory_mb = 4\ntimeout_ms = 2000\n"),
            ("30-error.lua", erroring),
        ],
        |_| {},
    )
    .await;
    // on_error = continue (the default): the message is delivered, the trace tells why.
    let r = transact(&s, "a@example.org", &["alice@localhost"], "survives", "x").await;
    assert!(r.starts_with("250"), "{r}");
    let raw = &s.texts("alice@localhost", "INBOX")[0];
    assert!(
        raw.contains("10-loop.lua@data=continue error(time budget exceeded)")
            || raw.contains("10-loop.lua@data=continue error(instruction budget exceeded)"),
        "{raw}"
    );
    assert!(
        raw.contains("20-bomb.lua@data=continue error(memory budget exceeded)"),
        "{raw}"
    );
    assert!(raw.contains("30-error.lua@data=continue error(error: "), "{raw}");
    assert!(raw.contains("boom"), "{raw}");
    // The states stay usable: the same plugins run again on the next message.
    let r = transact(&s, "a@example.org", &["alice@localhost"], "again", "x").await;
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test]
async fn on_error_tempfail_and_reject_are_honoured() {
    let looping = "function on_receive(e) while true do end end";
    let s = start_with_policies(
        &[
            ("10-loop.lua", looping),
            ("10-loop.toml", "on_error = \"tempfail\"\ntimeout_ms = 20\n"),
        ],
        |_| {},
    )
    .await;
    let r = transact(&s, "a@example.org", &["alice@localhost"], "x", "x").await;
    assert!(r.starts_with("451 4.3.0"), "{r}");
    let s = start_with_policies(
        &[
            (
                "10-err.lua",
                "function on_receive(e) return { action = 'nonsense' } end",
            ),
            ("10-err.toml", "on_error = \"reject\"\n"),
        ],
        |_| {},
    )
    .await;
    let r = transact(&s, "a@example.org", &["alice@localhost"], "x", "x").await;
    assert!(r.starts_with("550 5.7.1"), "a bad verdict is an error too: {r}");
    assert!(s.inbox("alice@localhost").is_empty());
}

#[tokio::test]
async fn sandbox_has_no_io_os_or_loading() {
    let probe = r#"
function on_receive(e)
  local missing = {}
  for _, n in ipairs({ "io", "os", "require", "load", "loadfile", "dofile", "package", "debug" }) do
    if _G[n] ~= nil then table.insert(missing, n) end
  end
  return { add_headers = { { name = "X-Present", value = table.concat(missing, ",") .. "." } } }
end"#;
    let s = start_with_policies(&[("10-probe.lua", probe)], |_| {}).await;
    transact(&s, "a@example.org", &["alice@localhost"], "x", "x").await;
    assert!(s.texts("alice@localhost", "INBOX")[0].contains("X-Present: .\r\n"));
}

const KV: &str = r#"
stages = { "rcpt" }
function on_receive(event)
  local key = event.envelope.mail_from .. "|" .. event.recipient
  local seen = mailgate.kv_get(key)
  -- Bounded: an oversized value or a time to live of 0 is an error the script can catch.
  local ok, err = pcall(mailgate.kv_set, "big", string.rep("x", 65537))
  if ok or not string.find(tostring(err), "more than 65536", 1, true) then return { action = "reject", text = "unbounded kv" } end
  if pcall(mailgate.kv_set, "zero", "v", 0) then return { action = "reject", text = "ttl 0 kept" } end
  if seen == nil then
    mailgate.kv_set(key, tostring(mailgate.now()), 3600)
    return { action = "tempfail", text = "first sight" }
  end
  if not mailgate.regex_match("^[0-9]+$", seen) then return { action = "reject", text = "bad kv" } end
end
"#;

#[tokio::test]
async fn key_value_store_and_regex_host_calls() {
    let s = start_with_policies(&[("40-kv.lua", KV)], |_| {}).await;
    let r = transact(&s, "a@example.org", &["alice@localhost"], "x", "x").await;
    assert!(r.starts_with("451 4.7.1 first sight"), "{r}");
    let r = transact(&s, "a@example.org", &["alice@localhost"], "x", "x").await;
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_set() {
    let good = "function on_receive(e) return { add_headers = { { name = 'X-Set', value = 'good' } } } end";
    let s = start_with_policies(&[("10-a.lua", good)], |_| {}).await;
    let engine = s.running.shared.engine.clone();
    let before = engine.status().version;
    write_policies(
        &s.policies_dir(),
        &[("10-a.lua", "function on_receive(e)\n  return {\nend\n")],
    );
    let err = engine.reload().unwrap_err();
    assert!(err.contains("10-a.lua:3:"), "error names file and line: {err}");
    let st = engine.status();
    assert_eq!(st.version, before);
    assert!(st.last_error.unwrap().contains("10-a.lua:3:"));
    transact(&s, "a@example.org", &["alice@localhost"], "x", "x").await;
    assert!(s.texts("alice@localhost", "INBOX")[0].contains("X-Set: good"));
}

fn version_policy(v: &str) -> String {
    format!(
        "stages = {{ \"data\" }}\nfunction on_receive(e) return {{ add_headers = {{ {{ name = 'X-Policy', value = '{v}' }} }} }} end\n"
    )
}

#[tokio::test]
async fn reload_while_twenty_sessions_are_mid_transaction() {
    let s = start_with_policies(&[("10-v.lua", &version_policy("A"))], |_| {}).await;
    let mut sessions = Vec::new();
    for i in 0..20 {
        let mut c = greeted(s.smtp).await;
        c.cmd("MAIL FROM:<a@example.org>", "250").await;
        c.cmd("RCPT TO:<alice@localhost>", "250").await;
        c.cmd("DATA", "354").await;
        c.send(format!("Subject: s{i}\r\n\r\nhalf way").as_bytes()).await;
        sessions.push(c);
    }
    write_policies(&s.policies_dir(), &[("10-v.lua", &version_policy("B"))]);
    s.running.shared.engine.reload().unwrap();
    for c in &mut sessions {
        c.send(b"\r\n.\r\n").await;
        let r = c.reply().await;
        assert!(r.starts_with("250"), "{r}");
    }
    let texts = s.texts("alice@localhost", "INBOX");
    assert_eq!(texts.len(), 20, "all complete");
    assert!(
        texts.iter().all(|t| t.contains("X-Policy: A")),
        "sessions keep the set they started with"
    );
    transact(&s, "a@example.org", &["alice@localhost"], "new", "x").await;
    assert!(
        s.texts("alice@localhost", "INBOX")[20].contains("X-Policy: B"),
        "new sessions see the new set"
    );
}

#[tokio::test]
async fn the_directory_is_watched() {
    let s = start_with_policies(&[("10-v.lua", &version_policy("A"))], |c| {
        c.policies.reload_debounce_ms = 50
    })
    .await;
    let mut versions = s.running.shared.engine.subscribe();
    let before = versions.borrow_and_update().clone();
    write_policies(&s.policies_dir(), &[("10-v.lua", &version_policy("B"))]);
    tokio::time::timeout(Duration::from_secs(20), versions.changed())
        .await
        .expect("reloaded after the change")
        .unwrap();
    assert_ne!(*versions.borrow(), before);
    transact(&s, "a@example.org", &["alice@localhost"], "x", "x").await;
    assert!(s.texts("alice@localhost", "INBOX")[0].contains("X-Policy: B"));
}

#[tokio::test]
async fn connect_and_helo_stages() {
    let p = r#"
stages = { "connect", "helo" }
function on_receive(e)
  if e.stage == "helo" and e.session.helo == "bad.example" then
    return { action = "reject", code = 550, enhanced = "5.7.1", text = "no thanks" }
  end
  if e.stage == "connect" and e.session.client_ip ~= "127.0.0.1" then return { action = "reject" } end
end"#;
    let s = start_with_policies(&[("10-helo.lua", p)], |_| {}).await;
    let mut c = connect(s.smtp).await;
    c.cmd("EHLO bad.example", "550 5.7.1 no thanks").await;
    c.cmd("MAIL FROM:<a@example.org>", "503").await;
    c.cmd("EHLO good.example", "250").await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    let s2 = start_with_policies(
        &[(
            "10-c.lua",
            "stages = { 'connect' }\nfunction on_receive(e) return { action = 'reject', text = 'go' } end",
        )],
        |_| {},
    )
    .await;
    let mut raw = tokio::net::TcpStream::connect(s2.smtp).await.unwrap();
    let mut buf = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut raw, &mut buf)
        .await
        .unwrap();
    assert!(buf.starts_with("554 5.7.1 go"), "{buf}");
}

#[tokio::test]
async fn on_fetch_hides_and_stamps_pop3_reads() {
    let p = r#"
function on_fetch(e)
  if e.message.subject == "secret" then return { action = "hide" } end
  return { add_headers = { { name = "X-Fetched-By", value = e.user } } }
end"#;
    let s = start_with_policies(&[("10-fetch.lua", p)], |_| {}).await;
    transact(&s, "a@example.org", &["alice@localhost"], "secret", "x").await;
    transact(&s, "a@example.org", &["alice@localhost"], "open", "x").await;
    let stream = tokio::net::TcpStream::connect(s.pop3).await.unwrap();
    let mut c = Client {
        io: tokio::io::BufReader::new(stream),
    };
    c.line().await;
    c.pop("USER alice@localhost", "+OK").await;
    c.pop(&format!("PASS {PASSWORD}"), "+OK").await;
    c.pop("RETR 1", "-ERR").await;
    c.pop("RETR 2", "+OK").await;
    let body = String::from_utf8(c.multiline().await).unwrap();
    assert!(body.starts_with("X-Fetched-By: alice@localhost\r\n"), "{body}");
}

#[tokio::test]
async fn a_second_ehlo_does_not_count_helo_scores_twice() {
    let p = "stages = { 'helo' }\nfunction on_receive(e) return { score = 1, symbol = 'HELO_SCORE' } end";
    let s = start_with_policies(&[("10-helo.lua", p)], |_| {}).await;
    let mut c = greeted(s.smtp).await;
    c.cmd("EHLO client.test", "250").await; // as after STARTTLS
    let r = send_mail(&mut c, "a@example.org", &["alice@localhost"], &message("twice", "x")).await;
    assert!(r.starts_with("250"), "{r}");
    let raw = &s.texts("alice@localhost", "INBOX")[0];
    assert!(raw.contains("X-Spam-Score: 1.00\r\n"), "{raw}");
}

/// A state serves message after message: what one call makes of the event (the message view)
/// must not pile up. Lua's incremental collector fell behind such a script and a 1 MiB heap
/// ran out after ~11,000 calls (16 MiB after ~150,000 messages, in production terms).
#[tokio::test]
async fn lua_states_do_not_keep_each_calls_event() {
    let (_dir, set) = policy_set(
        &[
            (
                "10-reads.lua",
                r#"function on_receive(e)
  local m = e.message
  if m.subject == "needle" then return { score = 1, symbol = "NEEDLE" } end
end"#,
            ),
            ("10-reads.toml", "memory_mb = 1\n"),
        ],
        1,
    );
    for i in 0..30_000 {
        let subject = if i % 1000 == 999 { "needle" } else { "hay" };
        let mut ev = data_event(subject);
        let out = set.run(mailgate::hooks::contract::Hook::Receive, &mut ev).await;
        assert!(out.trace[0].error.is_none(), "call {i}: {:?}", out.trace[0].error);
        assert_eq!(out.symbols.len(), usize::from(subject == "needle"), "call {i}");
    }
}

/// `[policies] threads`: a chain run on the chain threads answers as it does inline (the
/// event comes back carrying the chain's score and symbols; a later policy sees an earlier
/// one's score), and the threads go away with their owner inside a runtime.
#[tokio::test]
async fn chains_on_their_own_threads_answer_as_inline() {
    use mailgate::hooks::contract::{Action, Hook};
    use mailgate::hooks::threads::Chains;
    let (_dir, set) = policy_set(
        &[
            (
                "10-score.lua",
                r#"function on_receive(e)
  if e.message.subject == "offer" then return { score = 2.5, symbol = "OFFER" } end
end"#,
            ),
            (
                "20-judge.lua",
                r#"function on_receive(e)
  if e.score >= 2 then return { action = "reject", code = 550, enhanced = "5.7.1", text = "scored " .. e.score } end
end"#,
            ),
        ],
        2,
    );
    let set = std::sync::Arc::new(set);
    let threads = Chains::start(2).unwrap();
    assert!(matches!(threads, Chains::Threads(_)));
    assert!(matches!(Chains::start(0).unwrap(), Chains::Inline));
    for (subject, action) in [
        ("offer", Action::Reject),
        ("hello", Action::Continue),
        ("offer", Action::Reject),
    ] {
        // As the SMTP session calls it: the message parsed where the chain runs, the bytes
        // given back.
        let raw = data_event_raw(subject).into_bytes();
        let bare = || mailgate::hooks::Event {
            stage: Some(mailgate::hooks::Stage::Data),
            ..Default::default()
        };
        let (mut inline_ev, mut threaded_ev) = (bare(), bare());
        let (inline, inline_back) = Chains::Inline
            .parse_and_run(&set, Hook::Receive, &mut inline_ev, raw.clone(), None)
            .await;
        let (threaded, back) = threads
            .parse_and_run(&set, Hook::Receive, &mut threaded_ev, raw.clone(), None)
            .await;
        assert_eq!(threaded.action, action, "{subject}");
        assert_eq!(
            (inline.action, inline.text.clone()),
            (threaded.action, threaded.text.clone())
        );
        assert_eq!(inline_ev.score, threaded_ev.score);
        let names = |e: &mailgate::hooks::Event| e.symbols.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&inline_ev), names(&threaded_ev));
        assert!(threaded_ev.message.is_some(), "the event comes back whole");
        assert_eq!(threaded.trace.len(), 2);
        assert_eq!((back, inline_back), (raw.clone(), raw));
        for ev in [&inline_ev, &threaded_ev] {
            assert_eq!(
                ev.message.as_ref().map(|m| m.subject.clone()),
                Some(subject.to_string())
            );
        }
    }
    drop(threads); // inside the test's runtime: must not panic
}

/// A policy set loaded from these `(file name, contents)` in a fresh directory (kept alive
/// by the returned guard).
fn policy_set(files: &[(&str, &str)], lua_states: usize) -> (tempfile::TempDir, mailgate::hooks::PolicySet) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let set =
        mailgate::hooks::PolicySet::load(dir.path(), &mailgate::hooks::host::HostServices::none(), lua_states).unwrap();
    (dir, set)
}

/// A data-stage event for a small message with this Subject, as the session builds it.
fn data_event(subject: &str) -> mailgate::hooks::Event {
    let raw = data_event_raw(subject);
    mailgate::hooks::Event {
        stage: Some(mailgate::hooks::Stage::Data),
        message: Some(std::sync::Arc::new(mailgate::mail::parse_message(raw.as_bytes()))),
        ..Default::default()
    }
}

fn data_event_raw(subject: &str) -> String {
    format!("From: a@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n")
}

/// The C `string.lower` allocates its result through Lua's allocator: past the plugin's
/// memory budget it fails the call with the budget error (no crash, no half string), and the
/// state serves the next call.
#[tokio::test]
async fn string_lower_respects_the_memory_budget() {
    let (_dir, set) = policy_set(
        &[
            (
                "10-lower.lua",
                r#"function on_receive(e)
  local n = e.message.subject == "big" and 700000 or 10
  local s = string.lower(string.rep("A", n))
  if s == string.rep("a", n) then return { score = 1, symbol = "LOWERED" } end
end"#,
            ),
            ("10-lower.toml", "memory_mb = 1\n"),
        ],
        1,
    );
    for (subject, lowered) in [("small", true), ("big", false), ("small", true)] {
        let mut ev = data_event(subject);
        let out = set.run(mailgate::hooks::contract::Hook::Receive, &mut ev).await;
        assert_eq!(
            out.symbols.len(),
            usize::from(lowered),
            "{subject}: {:?}",
            out.trace[0].error
        );
        if !lowered {
            let err = out.trace[0].error.clone().unwrap_or_default();
            assert!(err.contains("memory"), "{err}");
        }
    }
}

/// The event views make their strings and tables through Lua's allocator: reading a body
/// past the plugin's memory budget fails that call with the budget error (no crash) and the
/// state serves the next call. The analyzers take `event.message` and nothing else.
#[tokio::test]
async fn views_respect_the_memory_budget_and_analyzers_take_only_the_message() {
    let (_dir, set) = policy_set(
        &[
            (
                "10-read.lua",
                r#"function on_receive(e)
  local m = e.message
  local text, headers = m.text, m.headers
  if m.subject == "table" then mailgate.letters({ subject = "x" }) end
  local findings = mailgate.letters(m)
  if #text > 0 and #headers == 3 and type(findings) == "table" then
    return { score = 1, symbol = "READ" }
  end
end"#,
            ),
            ("10-read.toml", "memory_mb = 1\n"),
        ],
        1,
    );
    let event = |subject: &str, body_bytes: usize| {
        let raw = format!(
            "From: a@example.org\r\nTo: b@example.test\r\nSubject: {subject}\r\n\r\n{}\r\n",
            "word ".repeat(body_bytes / 5)
        );
        mailgate::hooks::Event {
            stage: Some(mailgate::hooks::Stage::Data),
            message: Some(std::sync::Arc::new(mailgate::mail::parse_message(raw.as_bytes()))),
            ..Default::default()
        }
    };
    for (subject, body, error) in [
        ("small", 100, None),
        ("big", 3 << 20, Some("memory")),
        ("table", 100, Some("expects event.message")),
        ("small", 100, None),
    ] {
        let mut ev = event(subject, body);
        let out = set.run(mailgate::hooks::contract::Hook::Receive, &mut ev).await;
        let got = out.trace[0].error.clone();
        match error {
            None => assert_eq!(out.symbols.len(), 1, "{subject}: {got:?}"),
            Some(want) => {
                assert!(out.symbols.is_empty(), "{subject}");
                let got = got.unwrap_or_default();
                assert!(got.contains(want), "{subject}: {got}");
            }
        }
    }
}
