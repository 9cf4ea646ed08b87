//! The `mailgate` command: what each subcommand does, over the library. `main.rs` only
//! parses the arguments and calls [`run`].
//!
//! Commands that change or read the server's state go through the admin socket (or straight
//! to the store when no server runs): accounts, domains, aliases, mailboxes, policy reload
//! and status, `policy test`, `spam train`. `spam classify` and `spam eval` judge offline,
//! through the same decision pipeline ([`corpus`]).

pub mod args;
pub mod corpus;
pub mod send;

use crate::admin::{self, Request};
use crate::config::Config;
use args::{AliasCmd, Cli, Command, DomainCmd, MailboxCmd, PolicyCmd, QueueCmd, SpamCmd, StoreCmd, UserCmd};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for configuration errors (as sysexits-style tools expect).
const EXIT_CONFIG: u8 = 2;

/// Runs one command line to its end.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Send { args } = &cli.command {
        return send::run(args, cli.config);
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mailgate: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(matches!(cli.command, Command::Serve), config.log.format);
    let judges = matches!(
        cli.command,
        Command::Serve
            | Command::Policy(PolicyCmd::Check { .. } | PolicyCmd::Test { .. })
            | Command::Spam(SpamCmd::Classify | SpamCmd::Eval { .. })
    );
    if judges {
        match crate::hooks::shipped::resolve(&config.policies.dir, &config.server.data_dir) {
            Ok(dir) => config.policies.dir = dir,
            Err(e) => {
                eprintln!("mailgate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Blocking threads capped (tokio's default is 512): sled frees its log buffers through
    // epoch reclamation, whose deferred frees wait in per-thread bags until that thread
    // runs again; hundreds of mostly idle pool threads held them back, and RSS crept up
    // under load (docs/performance.md, "Soak").
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.server.blocking_threads)
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailgate: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve => rt.block_on(serve(config)),
        Command::Policy(PolicyCmd::Check { dir }) => {
            let dir = dir.unwrap_or_else(|| config.policies.dir.clone());
            return match rt.block_on(policy_check(&config, &dir)) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Command::Store(StoreCmd::Migrate) => store_migrate(&config),
        Command::Spam(SpamCmd::Classify) => rt.block_on(corpus::classify(&config)),
        Command::Spam(SpamCmd::Eval {
            spam,
            ham,
            holdout,
            folds,
            nested,
            lockbox,
            inner,
            by_sender,
            seed,
            json,
            scores,
        }) => {
            let by = if by_sender {
                corpus::Grouping::Sender
            } else {
                corpus::Grouping::File
            };
            let parts = match (folds, lockbox) {
                (Some(n), _) => corpus::Parts::Folds { n, seed, nested, by },
                (None, Some(fraction)) if fraction > 0.0 && fraction < 1.0 => corpus::Parts::Lockbox {
                    fraction,
                    seed,
                    inner,
                    by,
                },
                (None, None) if by_sender => {
                    eprintln!("mailgate: --by-sender groups the parts of --folds or --lockbox");
                    return ExitCode::from(2);
                }
                (None, Some(f)) => {
                    eprintln!("mailgate: --lockbox {f}: a fraction between 0 and 1");
                    return ExitCode::from(2);
                }
                (None, None) => corpus::Parts::HeldOut(split_of(holdout, seed)),
            };
            rt.block_on(corpus::eval(&config, &spam, &ham, parts, json, scores.as_deref()))
        }
        other => rt.block_on(admin_command(&config, other)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(server: bool, format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = if server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        crate::config::LogFormat::Text => fmt.init(),
        // One object per line; the session span's fields (id, protocol, peer) in each.
        crate::config::LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).init(),
    }
}

async fn serve(config: Config) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = crate::server::start(config).await.map_err(|e| format!("{e:#}"))?;
    // The handlers are in place before anyone is told the server is up: a SIGTERM right
    // after the "listening" lines is a graceful shutdown, not a kill.
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let hup = signal(SignalKind::hangup());
    // One line per listener on stdout, for scripts and tests that bind port 0.
    for (proto, addr) in &running.addrs {
        println!("listening {proto} {addr}");
    }
    let _ = std::io::stdout().flush();
    let trigger = running.shutdown_handle();
    let engine = running.shared.engine.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = hup else {
            return;
        };
        while hup.recv().await.is_some() {
            let e = engine.clone();
            let _ = tokio::task::spawn_blocking(move || e.reload()).await;
        }
    });
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = trigger.send(true);
    });
    running.wait().await;
    Ok(())
}

async fn policy_check(config: &Config, dir: &Path) -> Result<String, String> {
    let offline = crate::hooks::host::Offline::new(config, std::sync::Arc::new(crate::hooks::analyzers::NoAnalyzers));
    let set = crate::hooks::PolicySet::load(dir, &offline.host, 1)?;
    let names: Vec<_> = set.plugins.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "ok: {} policies in {} (version {}): {}",
        names.len(),
        dir.display(),
        set.version,
        names.join(" ")
    ))
}

/// `policy test`'s recipient when `--to` gives none.
const DEFAULT_TEST_RCPT: &str = "postmaster@localhost";

/// A command for the admin socket (or the store), and what to print of its answer.
async fn admin_command(config: &Config, cmd: Command) -> Result<(), String> {
    let json = matches!(cmd, Command::Policy(PolicyCmd::Test { json: true, .. }));
    let is_test = matches!(cmd, Command::Policy(PolicyCmd::Test { .. }));
    let default_rcpt = matches!(&cmd, Command::Policy(PolicyCmd::Test { to, .. }) if to.is_empty());
    let out = admin::client::run(config, request(cmd)?).await?;
    if is_test && !json {
        let report: crate::pipeline::Report = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
        print!("{}", report.render());
        // Refused at RCPT, the message never reaches the content checks: say why, and how
        // to test it against a recipient this configuration takes.
        if default_rcpt && report.deliveries.is_empty() && !report.refused_recipients.is_empty() {
            eprintln!(
                "mailgate: the default recipient {DEFAULT_TEST_RCPT} is not taken here, so the message went no further than RCPT; pass --to with an address of one of your accounts (or set server.postmaster)"
            );
        }
    } else if is_test {
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
        println!("{}", serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?);
    } else {
        let _ = std::io::stdout().write_all(&out);
    }
    Ok(())
}

fn password(address: &str, from_stdin: bool) -> Result<String, String> {
    let pw = if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading password: {e}"))?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let a = rpassword::prompt_password(format!("Password for {address}: ")).map_err(|e| e.to_string())?;
        let b = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if a != b {
            return Err("passwords do not match".into());
        }
        a
    };
    if pw.is_empty() {
        return Err("empty password".into());
    }
    crate::auth::hash_password(&pw)
}

fn request(cmd: Command) -> Result<Request, String> {
    Ok(match cmd {
        Command::Serve
        | Command::Send { .. }
        | Command::Policy(PolicyCmd::Check { .. })
        | Command::Store(_)
        | Command::Spam(SpamCmd::Classify | SpamCmd::Eval { .. }) => {
            unreachable!("handled by run")
        }
        Command::Policy(PolicyCmd::Test {
            file,
            from,
            to,
            ip,
            helo,
            dir,
            json: _,
        }) => Request::PolicyTest {
            file: absolute(vec![file])?.remove(0),
            envelope: crate::pipeline::Envelope {
                client_ip: ip,
                helo,
                mail_from: from,
                rcpt_to: if to.is_empty() {
                    vec![DEFAULT_TEST_RCPT.to_string()]
                } else {
                    to
                },
            },
            dir: dir.map(|d| absolute(vec![d])).transpose()?.map(|mut d| d.remove(0)),
        },
        Command::Spam(SpamCmd::Train {
            spam,
            ham,
            reset,
            holdout,
            seed,
            features,
        }) => Request::SpamTrain {
            spam: absolute(spam)?,
            ham: absolute(ham)?,
            split: split_of(holdout, seed),
            reset,
            features,
        },
        Command::Queue(QueueCmd::List { json }) => Request::QueueList { json },
        Command::Queue(QueueCmd::Show { id }) => Request::QueueShow { id },
        Command::Queue(QueueCmd::Flush { id, domain }) => Request::QueueFlush { id, domain },
        Command::Queue(QueueCmd::Hold { id }) => Request::QueueHold { id },
        Command::Queue(QueueCmd::Release { id }) => Request::QueueRelease { id },
        Command::Queue(QueueCmd::Delete { id }) => Request::QueueDelete { id },
        Command::Policy(PolicyCmd::Reload) => Request::PolicyReload,
        Command::Policy(PolicyCmd::Status) => Request::PolicyStatus,
        Command::User(UserCmd::Add {
            address,
            password_stdin,
        }) => {
            let password_hash = password(&address, password_stdin)?;
            Request::UserAdd { address, password_hash }
        }
        Command::User(UserCmd::Del { address }) => Request::UserDel { address },
        Command::User(UserCmd::List) => Request::UserList,
        Command::User(UserCmd::Passwd {
            address,
            password_stdin,
        }) => {
            let password_hash = password(&address, password_stdin)?;
            Request::UserPasswd { address, password_hash }
        }
        Command::Domain(DomainCmd::Add { domain }) => Request::DomainAdd { domain },
        Command::Domain(DomainCmd::Del { domain }) => Request::DomainDel { domain },
        Command::Domain(DomainCmd::List) => Request::DomainList,
        Command::Alias(AliasCmd::Add { source, targets }) => Request::AliasAdd { source, targets },
        Command::Alias(AliasCmd::Del { source }) => Request::AliasDel { source },
        Command::Alias(AliasCmd::List) => Request::AliasList,
        Command::Mailbox(MailboxCmd::List { address, folder }) => Request::MailboxList { address, folder },
        Command::Mailbox(MailboxCmd::Show { address, uid, folder }) => Request::MailboxShow { address, uid, folder },
    })
}

fn split_of(holdout: Option<f64>, seed: u64) -> Option<crate::spam::Split> {
    holdout.map(|fraction| crate::spam::Split { fraction, seed })
}

/// Paths as the server sees them (it may run in another directory).
fn absolute(paths: Vec<PathBuf>) -> Result<Vec<PathBuf>, String> {
    paths
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).map_err(|e| format!("{}: {e}", p.display())))
        .collect()
}

/// `store migrate`: the PostgreSQL schema brought up to date; sled has nothing to migrate.
fn store_migrate(config: &Config) -> Result<(), String> {
    use crate::config::StoreBackend;
    match config.store.backend {
        StoreBackend::Sled => {
            println!("store.backend is sled: its layout is checked at every open, nothing to migrate");
            Ok(())
        }
        StoreBackend::Postgres => {
            let url = config
                .store
                .postgres
                .url
                .as_deref()
                .ok_or("store.backend = \"postgres\" needs store.postgres.url")?;
            // Opening applies what is missing (under a lock other nodes also take).
            let store = crate::store::PgStore::open(url, 1, 1).map_err(|e| e.to_string())?;
            let applied = store.migrations_applied();
            println!(
                "schema version {} (this mailgate's latest: {}); applied now: {}",
                store.schema_version().map_err(|e| e.to_string())?,
                crate::store::PgStore::latest_schema(),
                if applied.is_empty() {
                    "none".to_string()
                } else {
                    format!("{applied:?}")
                }
            );
            Ok(())
        }
    }
}
