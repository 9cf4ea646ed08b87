//! The admin CLI, with and without a running server, and config errors.

use crate::common::*;

#[test]
fn config_errors_name_the_key_and_file_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[smtp]\nmax_mesage_size = 5\n", "max_mesage_size"),
        ("[[listener]]\nprotocol = \"smtp\"\nbind = \"not-an-address\"\n", "bind"),
        ("[server]\nlocal_domains = [\"bad domain\"]\n", "server.local_domains"),
        ("[smtp]\nmax_recipients = 0\n", "smtp.max_recipients"),
        ("[bogus]\nx = 1\n", "bogus"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = cli(&path, &["user", "list"], "");
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(key), "{text}: stderr names {key}: {err}");
        assert!(err.contains("bad.toml"), "{text}: stderr names the file: {err}");
    }
    let (code, _, err) = cli(&dir.path().join("missing.toml"), &["serve"], "");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn cli_without_a_server_uses_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let (code, out, err) = cli(&cfg, &["user", "add", "carol@localhost", "--password-stdin"], "pw\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added carol@localhost"), "{out}");
    let (code, out, _) = cli(&cfg, &["user", "list"], "");
    assert_eq!((code, out.as_str()), (0, "carol@localhost\n"));
    let (code, _, err) = cli(&cfg, &["user", "add", "carol@localhost", "--password-stdin"], "pw\n");
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = cli(&cfg, &["user", "add", "x@notours.test", "--password-stdin"], "pw\n");
    assert_eq!(code, 1);
    assert!(err.contains("not a local domain"), "{err}");
    let (code, _, err) = cli(&cfg, &["user", "add", "not-an-address", "--password-stdin"], "pw\n");
    assert_eq!(code, 1);
    assert!(err.contains("bad address"), "{err}");
}

#[test]
fn cli_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let server = ChildServer::start(&cfg);
    let run = |args: &[&str], stdin: &str| {
        let (code, out, err) = cli(&cfg, args, stdin);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    run(&["user", "add", "dave@localhost", "--password-stdin"], "s3cret\n");
    run(&["domain", "add", "Example.Test"], "");
    let domains = run(&["domain", "list"], "");
    assert!(
        domains.contains("localhost\t(config)") && domains.contains("example.test"),
        "{domains}"
    );
    run(&["user", "add", "erin@example.test", "--password-stdin"], "pw\n");
    run(
        &[
            "alias",
            "add",
            "sales@example.test",
            "dave@localhost",
            "erin@example.test",
        ],
        "",
    );
    run(&["alias", "add", "@example.test", "erin@example.test"], "");
    let aliases = run(&["alias", "list"], "");
    assert!(
        aliases.contains("sales@example.test -> dave@localhost, erin@example.test"),
        "{aliases}"
    );

    // Mail through the running server, then read it back through the CLI.
    let addr = server.smtp;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = greeted(addr).await;
        let r = send_mail(
            &mut c,
            "boss@example.org",
            &["sales@example.test"],
            &message("quarterly", "numbers"),
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
        c.cmd("QUIT", "221").await;
    });
    let list = run(&["mailbox", "list", "dave@localhost"], "");
    assert!(
        list.lines().count() == 2 && list.contains("sender@example.org") && list.contains("quarterly"),
        "{list}"
    );
    let shown = run(&["mailbox", "show", "dave@localhost", "1"], "");
    assert!(
        shown.starts_with("Return-Path: <boss@example.org>\r\n") && shown.ends_with("\r\n\r\nnumbers\r\n"),
        "{shown}"
    );
    let erin = run(&["mailbox", "list", "erin@example.test", "INBOX"], "");
    assert!(erin.contains("quarterly"), "{erin}");

    // Clear errors, non-zero exit, while the server runs.
    let (code, _, err) = cli(&cfg, &["mailbox", "list", "nobody@localhost"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no account nobody@localhost"), "{err}");
    let (code, _, err) = cli(&cfg, &["mailbox", "show", "dave@localhost", "99"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no message with UID 99"), "{err}");
    let (code, _, err) = cli(&cfg, &["domain", "del", "localhost"], "");
    assert_eq!(code, 1);
    assert!(err.contains("config"), "{err}");

    run(&["user", "passwd", "dave@localhost", "--password-stdin"], "new\n");
    run(&["alias", "del", "sales@example.test"], "");
    run(&["user", "del", "erin@example.test"], "");
    assert_eq!(run(&["user", "list"], ""), "dave@localhost\n");
    assert!(server.terminate().success(), "SIGTERM ends the server with exit 0");
    // After the server is gone the CLI opens the store itself and sees the same data.
    assert_eq!(run(&["user", "list"], ""), "dave@localhost\n");
}

const SCORING: &str = "function on_receive(e)\n  if e.message.subject == 'cheap pills' then\n    return { score = 6, symbol = 'PILLS', reason = 'subject' }\n  end\nend\n";

#[test]
fn policy_check_and_test_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    let policies = dir.path().join("policies");
    write_policies(&policies, &[("10-pills.lua", SCORING)]);
    let (code, out, err) = cli(&cfg, &["policy", "check"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ok: 1 policies") && out.contains("10-pills.lua"),
        "{out}"
    );

    // policy test routes as the server does: the recipient must be one it accepts.
    let (code, _, err) = cli(&cfg, &["user", "add", "alice@localhost", "--password-stdin"], "pw\n");
    assert_eq!(code, 0, "{err}");
    let eml = dir.path().join("pills.eml");
    // mbox-style leading From line and LF endings, as saved mail often is.
    std::fs::write(
        &eml,
        "From someone Mon Jan  1 00:00:00 2001\nFrom: x@example.org\nSubject: cheap pills\n\nbuy\n",
    )
    .unwrap();
    let (code, out, err) = cli(
        &cfg,
        &["policy", "test", eml.to_str().unwrap(), "--to", "alice@localhost"],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10-pills.lua") && out.contains("PILLS"), "{out}");
    assert!(out.contains("verdict   tag"), "{out}");
    assert!(out.contains("header    X-Spam-Flag: YES"), "{out}");
    let test_json = |to: &str| {
        let (code, out, err) = cli(
            &cfg,
            &["policy", "test", eml.to_str().unwrap(), "--json", "--to", to],
            "",
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let v = test_json("alice@localhost");
    assert_eq!(v["verdict"], "tag");
    assert_eq!(v["score"], 6.0);
    assert_eq!(v["trace"].as_array().unwrap().len(), 1);
    let v = test_json("nobody@localhost");
    assert_eq!(
        v["verdict"], "reject",
        "an unknown user is refused, as the server refuses it"
    );
    assert!(v["reply"].as_str().unwrap().starts_with("550 5.1.1"), "{v}");
    // Without --to, the recipient is postmaster@localhost, which nothing takes here: the
    // trace ends at RCPT, and the tool says why and what to pass.
    let (code, out, err) = cli(&cfg, &["policy", "test", eml.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("refused   postmaster@localhost 550 5.1.1"), "{out}");
    assert!(
        err.contains("pass --to with an address of one of your accounts"),
        "{err}"
    );
    let (_, _, err) = cli(
        &cfg,
        &["policy", "test", eml.to_str().unwrap(), "--to", "nobody@localhost"],
        "",
    );
    assert!(!err.contains("pass --to"), "no hint for a recipient given: {err}");

    write_policies(
        &policies,
        &[("20-bad.lua", "function on_receive(e)\n  return {\nend\n")],
    );
    let (code, _, err) = cli(&cfg, &["policy", "check"], "");
    assert_eq!(code, 2);
    assert!(err.contains("20-bad.lua:3:"), "file:line in {err}");
    // No server: reload/status say so.
    let (code, _, err) = cli(&cfg, &["policy", "status"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no server is running"), "{err}");
}

#[test]
fn policy_reload_and_status_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_child_config(dir.path());
    // Keep the directory watcher out of the way: reloads here come from the CLI and SIGHUP.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[policies]\n", "[policies]\nreload_debounce_ms = 600000\n");
    std::fs::write(&cfg, text).unwrap();
    let policies = dir.path().join("policies");
    write_policies(&policies, &[("10-pills.lua", SCORING)]);
    let server = ChildServer::start(&cfg);
    let (code, status, err) = cli(&cfg, &["policy", "status"], "");
    assert_eq!(code, 0, "{err}");
    assert!(status.contains("plugins 10-pills.lua"), "{status}");
    let version = status.lines().next().unwrap().to_string();
    write_policies(&policies, &[("20-more.lua", SCORING)]);
    let (code, reloaded, err) = cli(&cfg, &["policy", "reload"], "");
    assert_eq!(code, 0, "{err}");
    assert!(reloaded.contains("plugins 10-pills.lua 20-more.lua"), "{reloaded}");
    assert_ne!(reloaded.lines().next().unwrap(), version, "new version hash");
    write_policies(&policies, &[("30-broken.lua", "function (")]);
    let (code, _, err) = cli(&cfg, &["policy", "reload"], "");
    assert_eq!(code, 1);
    assert!(err.contains("30-broken.lua:1:"), "{err}");
    let (_, status, _) = cli(&cfg, &["policy", "status"], "");
    assert!(
        status.contains("plugins 10-pills.lua 20-more.lua") && status.contains("last_error"),
        "{status}"
    );
    // SIGHUP reloads too. Across processes there is no event to await: ask until it shows.
    std::fs::remove_file(policies.join("30-broken.lua")).unwrap();
    std::fs::remove_file(policies.join("20-more.lua")).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.proc.id() as i32, libc::SIGHUP) };
    let mut reloaded = false;
    for _ in 0..200 {
        let (_, status, _) = cli(&cfg, &["policy", "status"], "");
        if status.contains("plugins 10-pills.lua\n") && !status.contains("last_error") {
            reloaded = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(reloaded, "SIGHUP reloaded the fixed set");
    assert!(server.terminate().success());
}
