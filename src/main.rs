//! The `mailgate` command: a thin CLI over the library.

use clap::{Parser, Subcommand};
use mailgate::admin::{self, Request};
use mailgate::config::Config;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mailgate", version, about = "Mail server and spam gateway")]
struct Cli {
    /// Configuration file (TOML). Without it, embedded defaults are used.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every configured listener.
    Serve,
    /// Accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Local domains (besides server.local_domains in the config).
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Aliases; a source of `@domain` is a catch-all.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Look into mailboxes.
    #[command(subcommand)]
    Mailbox(MailboxCmd),
    /// Policies: validate, try on a message, reload, status.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Spam filter: train the Bayes model, classify a message, evaluate on a corpus.
    #[command(subcommand)]
    Spam(SpamCmd),
}

#[derive(Subcommand)]
enum SpamCmd {
    /// Train the Bayes model on folders of .eml or mbox files (adds to the stored model).
    Train {
        #[arg(long, required = true)]
        spam: Vec<PathBuf>,
        #[arg(long, required = true)]
        ham: Vec<PathBuf>,
        /// Start from an empty model.
        #[arg(long)]
        reset: bool,
        /// Leave out this fraction of each folder (the part `eval --holdout` scores).
        #[arg(long)]
        holdout: Option<f64>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fold a new model's token hashes into this many buckets (default: every distinct token
        /// its own feature).
        #[arg(long)]
        features: Option<u64>,
    },
    /// Run the whole policy chain on one message from stdin: `spam SCORE` or `ham SCORE`,
    /// then the symbols and the Bayes tokens.
    Classify,
    /// Score folders of known spam and ham through the whole policy chain.
    Eval {
        #[arg(long, required = true)]
        spam: Vec<PathBuf>,
        #[arg(long, required = true)]
        ham: Vec<PathBuf>,
        /// Score only the held-out fraction (as given to `train --holdout`).
        #[arg(long)]
        holdout: Option<f64>,
        /// Cross-validate instead: cut the folders into N parts (by --seed) and judge each
        /// part with a model trained, in memory, on the others. The stored model is neither
        /// used nor changed.
        #[arg(long, value_name = "N", conflicts_with = "holdout",
              value_parser = clap::value_parser!(u64).range(2..=100))]
        folds: Option<u64>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        json: bool,
        /// Also write every message's label, total score and Bayes probability to FILE
        /// (tab-separated, with a header line): for choosing the `[spam.thresholds]`.
        #[arg(long, value_name = "FILE")]
        scores: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Load every policy in DIR (default: [policies] dir) and report errors as file:line.
    Check { dir: Option<PathBuf> },
    /// Run the whole chain on a message offline and print the verdict and trace.
    Test {
        file: PathBuf,
        #[arg(long, default_value = "sender@example.org")]
        from: String,
        /// Recipient (repeatable).
        #[arg(long = "to", default_value = "postmaster@localhost")]
        to: Vec<String>,
        #[arg(long, default_value = "192.0.2.1")]
        ip: String,
        #[arg(long, default_value = "client.example.org")]
        helo: String,
        /// Policies directory (default: [policies] dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Ask the running server to reload its policies now.
    Reload,
    /// Show the running server's policy version, plugins and last error.
    Status,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add an account (with INBOX, Sent, Drafts, Junk, Trash).
    Add {
        address: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and all its mail.
    Del { address: String },
    /// List accounts.
    List,
    /// Change an account's password.
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum DomainCmd {
    Add { domain: String },
    Del { domain: String },
    List,
}

#[derive(Subcommand)]
enum AliasCmd {
    /// Point SOURCE (address or @domain) at one or more local addresses.
    Add {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    Del {
        source: String,
    },
    List,
}

#[derive(Subcommand)]
enum MailboxCmd {
    /// List messages: UID, size, flags, date, From, Subject.
    List {
        address: String,
        #[arg(default_value = "INBOX")]
        folder: String,
    },
    /// Print one message, raw.
    Show {
        address: String,
        uid: u32,
        #[arg(default_value = "INBOX")]
        folder: String,
    },
}

/// Exit code for configuration errors (as the issue and sysexits-style tools expect).
const EXIT_CONFIG: u8 = 2;

/// mimalloc: per-thread caches instead of glibc's arenas (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Serve));
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mailgate: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
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
        Command::Policy(PolicyCmd::Test {
            file,
            from,
            to,
            ip,
            helo,
            dir,
            json,
        }) => rt.block_on(policy_test(&config, dir, &file, from, to, ip, helo, json)),
        Command::Spam(SpamCmd::Classify) => rt.block_on(spam_classify(&config)),
        Command::Spam(SpamCmd::Eval {
            spam,
            ham,
            holdout,
            folds,
            seed,
            json,
            scores,
        }) => {
            let judge = match folds {
                Some(n) => EvalParts::Folds { n, seed },
                None => EvalParts::HeldOut(split_of(holdout, seed)),
            };
            rt.block_on(spam_eval(&config, spam, ham, judge, json, scores))
        }
        other => match request(other) {
            Ok(req) => rt.block_on(admin::client::run(&config, req)).map(|out| {
                let _ = std::io::stdout().write_all(&out);
            }),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: Config) -> Result<(), String> {
    let running = mailgate::server::start(config).await.map_err(|e| format!("{e:#}"))?;
    // One line per listener on stdout, for scripts and tests that bind port 0.
    for (proto, addr) in &running.addrs {
        println!("listening {proto} {addr}");
    }
    let _ = std::io::stdout().flush();
    let trigger = running.shutdown_handle();
    let engine = running.shared.engine.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let e = engine.clone();
            let _ = tokio::task::spawn_blocking(move || e.reload()).await;
        }
    });
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = trigger.send(true);
    });
    running.wait().await;
    Ok(())
}

/// Host services for offline policy runs: DNS as configured, a scratch key-value store.
fn offline_host(config: &Config) -> (std::sync::Arc<mailgate::hooks::host::HostServices>, PathBuf) {
    let scratch = std::env::temp_dir().join(format!("mailgate-policy-{}", std::process::id()));
    let store = mailgate::store::SledStore::open(&scratch, 8)
        .ok()
        .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn mailgate::store::MailStore>);
    let resolver = mailgate::hooks::host::resolver(&config.dns).ok();
    let host = mailgate::hooks::host::HostServices {
        store,
        origin: mailgate::spam::origin::Origin::for_config(resolver.as_ref(), config),
        resolver,
        dns_timeout: std::time::Duration::from_millis(config.dns.timeout_ms),
        spam: Default::default(),
    };
    (std::sync::Arc::new(host), scratch)
}

fn remove_scratch(scratch: &std::path::Path) {
    let _ = std::fs::remove_dir_all(scratch);
    let _ = std::fs::remove_dir_all(scratch.with_extension("journal"));
}

async fn policy_check(config: &Config, dir: &std::path::Path) -> Result<String, String> {
    let (host, scratch) = offline_host(config);
    let set = mailgate::hooks::PolicySet::load(dir, &host, 1);
    drop(host);
    remove_scratch(&scratch);
    let set = set?;
    let names: Vec<_> = set.plugins.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "ok: {} policies in {} (version {}): {}",
        names.len(),
        dir.display(),
        set.version,
        names.join(" ")
    ))
}

#[allow(clippy::too_many_arguments)]
async fn policy_test(
    config: &Config,
    dir: Option<PathBuf>,
    file: &std::path::Path,
    from: String,
    to: Vec<String>,
    ip: String,
    helo: String,
    json: bool,
) -> Result<(), String> {
    use mailgate::hooks::simulate;
    let raw = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let raw = mailgate::mail::wire::from_file(&raw);
    let dir = dir.unwrap_or_else(|| config.policies.dir.clone());
    let (host, scratch) = offline_host(config);
    let result = match mailgate::hooks::PolicySet::load(&dir, &host, 1) {
        Ok(set) => {
            let env = simulate::Envelope {
                client_ip: ip,
                helo,
                mail_from: from,
                rcpt_to: to,
            };
            let message = std::sync::Arc::new(mailgate::mail::parse_message(&raw));
            Ok(simulate::run(
                &set,
                &config.spam.thresholds,
                &env,
                &raw,
                message,
                host.origin.as_deref(),
            )
            .await)
        }
        Err(e) => Err(e),
    };
    drop(host);
    remove_scratch(&scratch);
    let report = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", simulate::render(&report));
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
    mailgate::auth::hash_password(&pw)
}

fn request(cmd: Command) -> Result<Request, String> {
    Ok(match cmd {
        Command::Serve
        | Command::Policy(PolicyCmd::Check { .. } | PolicyCmd::Test { .. })
        | Command::Spam(SpamCmd::Classify | SpamCmd::Eval { .. }) => {
            unreachable!("handled by main")
        }
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

fn split_of(holdout: Option<f64>, seed: u64) -> Option<mailgate::spam::Split> {
    holdout.map(|fraction| mailgate::spam::Split { fraction, seed })
}

/// Paths as the server sees them (it may run in another directory).
fn absolute(paths: Vec<PathBuf>) -> Result<Vec<PathBuf>, String> {
    paths
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).map_err(|e| format!("{}: {e}", p.display())))
        .collect()
}

/// The offline policy set with the stored Bayes model (from the running server or the store).
async fn spam_chain(
    config: &Config,
    fetch_model: bool,
) -> Result<
    (
        mailgate::hooks::PolicySet,
        std::sync::Arc<mailgate::hooks::host::HostServices>,
        PathBuf,
    ),
    String,
> {
    use mailgate::spam::bayes::{Counts, Model};
    let (host, scratch) = offline_host(config);
    if fetch_model {
        match admin::client::run(config, Request::SpamModel).await {
            Ok(bytes) => {
                let counts = Counts::decode(&bytes).ok_or("the stored Bayes model is corrupt")?;
                host.spam.set_model(Some(Model::new(counts)?));
            }
            Err(e) => eprintln!("mailgate: no Bayes model ({e}); scoring without it"),
        }
    }
    let set = mailgate::hooks::PolicySet::load(&config.policies.dir, &host, 1)?;
    Ok((set, host, scratch))
}

/// The envelope a corpus message is judged under: its own envelope sender (the
/// `Return-Path` the receiving server recorded) when it has one, else its From address, so
/// envelope checks see what the original receiver saw rather than a made-up sender.
fn spam_envelope(m: &mailgate::hooks::contract::Message) -> mailgate::hooks::simulate::Envelope {
    let return_path = m
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("return-path"))
        .map(|h| {
            h.value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
                .to_string()
        });
    mailgate::hooks::simulate::Envelope {
        client_ip: "192.0.2.1".into(),
        helo: "mail.example.org".into(),
        mail_from: return_path.unwrap_or_else(|| m.from.clone()),
        rcpt_to: vec!["postmaster@localhost".into()],
    }
}

/// One corpus message through the offline chain, parsed once for the chain and the caller.
async fn spam_judge(
    set: &mailgate::hooks::PolicySet,
    config: &Config,
    raw: &[u8],
) -> (
    mailgate::hooks::simulate::Report,
    std::sync::Arc<mailgate::hooks::contract::Message>,
) {
    let message = std::sync::Arc::new(mailgate::mail::parse_message(raw));
    let env = spam_envelope(&message);
    let report = mailgate::hooks::simulate::run(set, &config.spam.thresholds, &env, raw, message.clone(), None).await;
    (report, message)
}

async fn spam_classify(config: &Config) -> Result<(), String> {
    use mailgate::hooks::simulate;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let raw = mailgate::mail::wire::from_file(&bytes);
    let (set, host, scratch) = spam_chain(config, true).await?;
    let (report, message) = spam_judge(&set, config, &raw).await;
    let judged = mailgate::spam::bayes(&host.spam, &message);
    drop(set);
    drop(host);
    remove_scratch(&scratch);
    let class = if report.score >= config.spam.thresholds.tag {
        "spam"
    } else {
        "ham"
    };
    println!("{class} {:.2}", report.score);
    println!("verdict {}", report.verdict);
    for s in &report.symbols {
        println!("symbol {} {:+.2} {}", s.name, s.score, s.reason);
    }
    if let Some(j) = judged {
        println!("bayes {:.4} log-odds {:.1}", j.probability, j.log_odds);
        for (t, w) in j.top {
            println!("token {w:+.2} {t}");
        }
    }
    Ok(())
}

/// What `spam eval` judges, and with which model.
enum EvalParts {
    /// The held-out part of a split (or everything), with the stored model.
    HeldOut(Option<mailgate::spam::Split>),
    /// Every message, each with a model trained in memory on the other folds.
    Folds { n: u64, seed: u64 },
}

/// Time kept out of `spam eval`'s rate and CPU figures, which are the judging's: the
/// `--scores` table's second Bayes pass, and cross-validation's reading and training.
#[derive(Default)]
struct Aside {
    wall: std::time::Duration,
    cpu: f64,
}

impl Aside {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (w0, c0) = (std::time::Instant::now(), mailgate::spam::process_cpu_secs());
        let out = f();
        self.wall += w0.elapsed();
        self.cpu += mailgate::spam::process_cpu_secs() - c0;
        out
    }
}

/// The verdicts of one `spam eval` run so far.
#[derive(Default)]
struct EvalRun {
    m: mailgate::spam::Metrics,
    misses: Vec<String>,
    table: Option<String>,
    aside: Aside,
}

impl EvalRun {
    /// Judges the messages of one corpus file with the model the host holds now.
    async fn judge_messages(
        &mut self,
        (set, host, config): (
            &mailgate::hooks::PolicySet,
            &mailgate::hooks::host::HostServices,
            &Config,
        ),
        path: &std::path::Path,
        class: usize,
        messages: &[Vec<u8>],
    ) {
        let is_spam = class == mailgate::spam::bayes::SPAM;
        for raw in messages {
            let (r, message) = spam_judge(set, config, raw).await;
            if let Some(t) = self.table.as_mut() {
                self.aside.time(|| {
                    let (p, d) = mailgate::spam::bayes(&host.spam, &message)
                        .map_or((-1.0, 0.0), |j| (j.probability, j.log_odds));
                    let label = if is_spam { "spam" } else { "ham" };
                    t.push_str(&format!(
                        "{label}\t{:.3}\t{p:.6}\t{d:.2}\t{}\n",
                        r.score,
                        path.display()
                    ));
                });
            }
            let said = r.score >= config.spam.thresholds.tag;
            if said != is_spam {
                self.misses.push(format!(
                    "{} {:.2} {}",
                    if is_spam { "FN" } else { "FP" },
                    r.score,
                    path.display()
                ));
            }
            self.m.add(is_spam, said);
        }
    }
}

/// A corpus file in cross-validation: its messages, read once, and their features.
struct FoldFile {
    path: PathBuf,
    class: usize,
    fold: u64,
    messages: Vec<Vec<u8>>,
    features: Vec<Vec<u64>>,
}

async fn spam_eval(
    config: &Config,
    spam: Vec<PathBuf>,
    ham: Vec<PathBuf>,
    parts: EvalParts,
    json: bool,
    scores: Option<PathBuf>,
) -> Result<(), String> {
    use mailgate::spam::bayes::{Counts, HAM, Model, SPAM};
    use mailgate::spam::{corpus_files, fold_of, process_cpu_secs, read_messages, select, tokens};
    let (set, host, scratch) = spam_chain(config, matches!(parts, EvalParts::HeldOut(_))).await?;
    let chain = (&set, &*host, config);
    let mut run = EvalRun {
        table: scores
            .as_ref()
            .map(|_| String::from("label\tscore\tbayes\tlog_odds\tfile\n")),
        ..EvalRun::default()
    };
    let (wall, cpu) = (std::time::Instant::now(), process_cpu_secs());
    let folds = match parts {
        EvalParts::HeldOut(split) => {
            for (class, dirs) in [(SPAM, &spam), (HAM, &ham)] {
                for f in select(corpus_files(dirs)?, split, true) {
                    run.judge_messages(chain, &f, class, &read_messages(&f)?).await;
                }
            }
            None
        }
        EvalParts::Folds { n, seed } => {
            // Every message's features once, and the counts of all; each fold's model is
            // all of them less the fold's own (cheaper than n trainings, and the same).
            let (files, all) = run.aside.time(|| -> Result<_, String> {
                let (mut files, mut all) = (Vec::new(), Counts::new(0));
                for (class, dirs) in [(SPAM, &spam), (HAM, &ham)] {
                    for path in corpus_files(dirs)? {
                        let messages = read_messages(&path)?;
                        let features: Vec<Vec<u64>> = messages
                            .iter()
                            .map(|raw| tokens::features(&mailgate::mail::parse_message(raw), 0))
                            .collect();
                        for x in &features {
                            all.learn(class, x, 1);
                        }
                        let fold = fold_of(&path, seed, n);
                        files.push(FoldFile {
                            path,
                            class,
                            fold,
                            messages,
                            features,
                        });
                    }
                }
                Ok((files, all))
            })?;
            for fold in 0..n {
                let part: Vec<&FoldFile> = files.iter().filter(|f| f.fold == fold).collect();
                let model = run.aside.time(|| {
                    let mut counts = all.clone();
                    for f in &part {
                        for x in &f.features {
                            counts.learn(f.class, x, -1);
                        }
                    }
                    counts.prune(config.spam.bayes_max_tokens);
                    Model::new(counts).map_err(|e| format!("fold {fold} of {n}: {e}"))
                })?;
                host.spam.set_model(Some(model));
                for f in part {
                    run.judge_messages(chain, &f.path, f.class, &f.messages).await;
                }
            }
            Some(n)
        }
    };
    let EvalRun {
        mut m,
        misses,
        table,
        aside,
    } = run;
    m.finish(
        (wall.elapsed() - aside.wall).as_secs_f64(),
        process_cpu_secs() - cpu - aside.cpu,
    );
    if let (Some(path), Some(t)) = (&scores, table) {
        std::fs::write(path, t).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    drop(set);
    drop(host);
    remove_scratch(&scratch);
    if json {
        let mut v = serde_json::to_value(&m).map_err(|e| e.to_string())?;
        if let Some(n) = folds {
            v["folds"] = n.into();
        }
        println!("{v}");
    } else {
        if let Some(n) = folds {
            println!("folds {n} (each message judged by a model trained on the other folds)");
        }
        println!(
            "messages {}\nprecision {:.4}\nrecall {:.4}\nf1 {:.4}\nfpr {:.4}\naccuracy {:.4}",
            m.messages, m.precision, m.recall, m.f1, m.fpr, m.accuracy
        );
        println!(
            "confusion: spam->spam {} spam->ham {} ham->spam {} ham->ham {}",
            m.true_positives, m.false_negatives, m.false_positives, m.true_negatives
        );
        println!("msgs_per_s {:.0}\ncpu_ms_per_msg {:.3}", m.msgs_per_s, m.cpu_ms_per_msg);
        for x in misses {
            println!("{x}");
        }
    }
    Ok(())
}
