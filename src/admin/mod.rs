//! Administration: one set of commands, run either by the server (requests arriving on the
//! admin socket in `data_dir`) or directly on the store when no server runs. sled lets only
//! one process open the store, so the CLI first tries the socket.
//!
//! Passwords are hashed (argon2id) by the CLI process: the socket never carries them.

pub mod client;
mod queue;
pub mod server;
pub mod submit;

use crate::config::Config;
use crate::mail::address::{Address, is_valid_domain};
use crate::store::{DEFAULT_MAILBOXES, Flags, MailStore};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    UserAdd {
        address: String,
        password_hash: String,
    },
    UserDel {
        address: String,
    },
    UserList,
    UserPasswd {
        address: String,
        password_hash: String,
    },
    DomainAdd {
        domain: String,
    },
    DomainDel {
        domain: String,
    },
    DomainList,
    AliasAdd {
        source: String,
        targets: Vec<String>,
    },
    AliasDel {
        source: String,
    },
    AliasList,
    MailboxList {
        address: String,
        folder: String,
    },
    MailboxShow {
        address: String,
        uid: u32,
        folder: String,
    },
    PolicyReload,
    PolicyStatus,
    /// Train the Bayes model on folders (absolute paths, read by whoever owns the store).
    SpamTrain {
        spam: Vec<std::path::PathBuf>,
        ham: Vec<std::path::PathBuf>,
        split: Option<crate::spam::Split>,
        reset: bool,
        features: Option<u64>,
    },
    /// The stored Bayes model's counts (binary).
    SpamModel,
    /// One message (an absolute path, read by whoever owns the store) through the decision
    /// pipeline with the server's routing, thresholds and Bayes model: the report as JSON.
    QueueList {
        json: bool,
    },
    QueueShow {
        id: u64,
    },
    /// Every deferred recipient (of message `id`, or in `domain`) due now.
    QueueFlush {
        id: Option<u64>,
        domain: Option<String>,
    },
    QueueHold {
        id: u64,
    },
    QueueRelease {
        id: u64,
    },
    QueueDelete {
        id: u64,
    },
    PolicyTest {
        file: std::path::PathBuf,
        envelope: crate::pipeline::Envelope,
        /// Policies to load instead of `[policies] dir`.
        dir: Option<std::path::PathBuf>,
    },
}

impl Request {
    fn writes(&self) -> bool {
        !matches!(
            self,
            Request::UserList
                | Request::DomainList
                | Request::AliasList
                | Request::MailboxList { .. }
                | Request::MailboxShow { .. }
                | Request::PolicyReload
                | Request::PolicyStatus
                | Request::SpamModel
                | Request::PolicyTest { .. }
                | Request::QueueList { .. }
                | Request::QueueShow { .. }
        )
    }
}

fn local_domain(store: &dyn MailStore, config: &Config, domain: &str) -> Result<(), String> {
    let configured = config.server.local_domains.iter().any(|d| d == domain);
    if configured || store.has_domain(domain).map_err(|e| e.to_string())? {
        Ok(())
    } else {
        Err(format!(
            "{domain} is not a local domain (add it with `mailgate domain add {domain}`)"
        ))
    }
}

fn parse_address(s: &str) -> Result<Address, String> {
    Address::parse(s).map_err(|e| format!("bad address {s:?}: {e}"))
}

/// Runs one command. The output is what the CLI prints.
pub async fn execute(
    store: &Arc<dyn MailStore>,
    config: &Config,
    live: Option<&crate::context::Shared>,
    req: Request,
) -> Result<Vec<u8>, String> {
    let writes = req.writes();
    let out = match req {
        Request::PolicyReload | Request::PolicyStatus => {
            let Some(engine) = live.map(|l| &l.engine) else {
                return Err("no server is running (policy reload/status talk to the running server; `mailgate policy check` works offline)".into());
            };
            if req == Request::PolicyReload {
                engine.reload()?;
            }
            let st = engine.status();
            let mut out = format!(
                "version {}\nloaded_at {}\nplugins {}\n",
                st.version,
                st.loaded_at,
                st.plugins.join(" ")
            );
            if let Some(e) = st.last_error {
                out.push_str(&format!("last_error {e}\n"));
            }
            out.into_bytes()
        }
        Request::SpamTrain {
            spam,
            ham,
            split,
            reset,
            features,
        } => {
            let (counts, mut report) = crate::spam::train(
                &**store,
                &spam,
                &ham,
                split,
                reset,
                features,
                config.spam.bayes_max_tokens,
            )?;
            // The model lives in the key-value tree, made durable by a checkpoint.
            store.checkpoint().await.map_err(|e| e.to_string())?;
            if let Some(live) = live {
                match crate::spam::bayes::Model::new(counts) {
                    Ok(m) => {
                        live.spam.set_model(Some(m));
                        report.push_str("the running server uses the new model\n");
                    }
                    Err(e) => report.push_str(&format!("not used yet: {e}\n")),
                }
            }
            report.into_bytes()
        }
        Request::SpamModel => store
            .kv_get_large(crate::spam::MODEL_KEY)
            .map_err(|e| e.to_string())?
            .ok_or("no Bayes model has been trained yet (`mailgate spam train`)")?,
        Request::PolicyTest { file, envelope, dir } => {
            let raw = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let report = policy_test(store, config, live, crate::mail::wire::from_file(&raw), &envelope, dir).await?;
            serde_json::to_vec(&report).map_err(|e| e.to_string())?
        }
        req @ (Request::QueueList { .. }
        | Request::QueueShow { .. }
        | Request::QueueFlush { .. }
        | Request::QueueHold { .. }
        | Request::QueueRelease { .. }
        | Request::QueueDelete { .. }) => {
            let (out, changed) = queue::run(&**store, req)?;
            if changed && let Some(live) = live {
                store.sync().await.map_err(|e| e.to_string())?;
                live.queue.wake();
            }
            out
        }
        req => run(&**store, config, req)?,
    };
    if writes {
        store.sync().await.map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `mailgate policy test`: the policies in `dir` (default `[policies] dir`), loaded afresh
/// with a scratch key-value store (a test must not feed greylisting), decide over `raw` as
/// the server would: its routing (accounts, aliases, domains), thresholds, Bayes model and
/// SPF/DKIM/DMARC.
async fn policy_test(
    store: &Arc<dyn MailStore>,
    config: &Config,
    live: Option<&crate::context::Shared>,
    raw: Vec<u8>,
    envelope: &crate::pipeline::Envelope,
    dir: Option<std::path::PathBuf>,
) -> Result<crate::pipeline::Report, String> {
    let spam = match live {
        Some(l) => l.spam.clone(),
        None => Arc::new(crate::spam::Spam::load(&**store)),
    };
    let offline = crate::hooks::host::Offline::new(config, spam);
    let dir = dir.unwrap_or_else(|| config.policies.dir.clone());
    let set = Arc::new(crate::hooks::PolicySet::load(&dir, &offline.host, 1)?);
    let router = match live {
        Some(l) => l.router.clone(),
        None => crate::route::Router::new(store.clone(), config),
    };
    let origin = match live {
        Some(l) => l.origin.clone(),
        None => crate::spam::origin::Origin::for_config(offline.host.resolver.as_ref(), config),
    };
    let ctx = crate::pipeline::Context {
        policies: &set,
        config,
        router: Some(&router),
        origin: origin.as_deref(),
        chains: None,
        may_relay: envelope.client_ip.parse().is_ok_and(|ip| config.smtp.may_relay(ip)),
    };
    Ok(crate::pipeline::decide(&ctx, envelope, raw, None).await)
}

fn run(store: &dyn MailStore, config: &Config, req: Request) -> Result<Vec<u8>, String> {
    let e = |e: crate::store::StoreError| e.to_string();
    let mut out = String::new();
    match req {
        Request::UserAdd { address, password_hash } => {
            let a = parse_address(&address)?;
            local_domain(store, config, &a.domain)?;
            store.create_account(&a.to_string(), &password_hash).map_err(e)?;
            let names: Vec<_> = DEFAULT_MAILBOXES.iter().map(|(n, _)| *n).collect();
            writeln!(out, "added {a} with mailboxes {}", names.join(", ")).ok();
        }
        Request::UserDel { address } => {
            let a = parse_address(&address)?;
            store.delete_account(&a.to_string()).map_err(e)?;
            writeln!(out, "deleted {a} and its mail").ok();
        }
        Request::UserList => {
            for acc in store.accounts().map_err(e)? {
                writeln!(out, "{}", acc.address).ok();
            }
        }
        Request::UserPasswd { address, password_hash } => {
            let a = parse_address(&address)?;
            store.set_password(&a.to_string(), &password_hash).map_err(e)?;
            writeln!(out, "password of {a} changed").ok();
        }
        Request::DomainAdd { domain } => {
            let d = domain.trim().to_lowercase();
            if !is_valid_domain(&d) {
                return Err(format!("bad domain {domain:?}"));
            }
            if config.server.local_domains.contains(&d) {
                return Err(format!("{d} is already local (server.local_domains in the config)"));
            }
            store.add_domain(&d).map_err(e)?;
            writeln!(out, "added domain {d}").ok();
        }
        Request::DomainDel { domain } => {
            let d = domain.trim().to_lowercase();
            if config.server.local_domains.contains(&d) {
                return Err(format!(
                    "{d} comes from server.local_domains in the config; remove it there"
                ));
            }
            store.delete_domain(&d).map_err(e)?;
            writeln!(out, "deleted domain {d}").ok();
        }
        Request::DomainList => {
            for d in &config.server.local_domains {
                writeln!(out, "{d}\t(config)").ok();
            }
            for d in store.domains().map_err(e)? {
                writeln!(out, "{d}").ok();
            }
        }
        Request::AliasAdd { source, targets } => {
            let source = source.trim().to_lowercase();
            let domain = match source.strip_prefix('@') {
                Some(d) if is_valid_domain(d) => d.to_string(),
                Some(_) => return Err(format!("bad catch-all {source:?}")),
                None => parse_address(&source)?.domain,
            };
            local_domain(store, config, &domain)?;
            if targets.is_empty() {
                return Err("an alias needs at least one target".into());
            }
            let targets = targets
                .iter()
                .map(|t| parse_address(t).map(|a| a.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            store.set_alias(&source, &targets).map_err(e)?;
            writeln!(out, "{source} -> {}", targets.join(", ")).ok();
        }
        Request::AliasDel { source } => {
            let source = source.trim().to_lowercase();
            store.delete_alias(&source).map_err(e)?;
            writeln!(out, "deleted alias {source}").ok();
        }
        Request::AliasList => {
            for (source, targets) in store.aliases().map_err(e)? {
                writeln!(out, "{source} -> {}", targets.join(", ")).ok();
            }
        }
        Request::MailboxList { address, folder } => {
            let (mailbox, _) = find_mailbox(store, &address, &folder)?;
            writeln!(
                out,
                "{:>6}  {:>8}  {:<20}  {:<31}  {:<30}  SUBJECT",
                "UID", "SIZE", "FLAGS", "DATE", "FROM"
            )
            .ok();
            for m in store.messages(mailbox).map_err(e)? {
                let raw = store.blob(&m.meta.blob).map_err(e)?.unwrap_or_default();
                let parsed = mail_parser::MessageParser::default().parse_headers(&raw);
                let from = parsed
                    .as_ref()
                    .and_then(|p| p.from())
                    .and_then(|f| f.first())
                    .and_then(|a| a.address())
                    .unwrap_or("")
                    .to_string();
                let subject = parsed.as_ref().and_then(|p| p.subject()).unwrap_or("").to_string();
                let mut flags = Flags::names(m.meta.flags).join(" ");
                for k in &m.meta.keywords {
                    flags.push(' ');
                    flags.push_str(k);
                }
                let date = mail_parser::DateTime::from_timestamp(m.meta.internal_date).to_rfc822();
                writeln!(
                    out,
                    "{:>6}  {:>8}  {:<20}  {:<31}  {:<30}  {}",
                    m.uid,
                    m.meta.size,
                    flags.trim(),
                    date,
                    from,
                    subject.replace(['\r', '\n'], " ")
                )
                .ok();
            }
        }
        Request::PolicyReload
        | Request::PolicyStatus
        | Request::SpamTrain { .. }
        | Request::SpamModel
        | Request::PolicyTest { .. }
        | Request::QueueList { .. }
        | Request::QueueShow { .. }
        | Request::QueueFlush { .. }
        | Request::QueueHold { .. }
        | Request::QueueRelease { .. }
        | Request::QueueDelete { .. } => {
            unreachable!("handled by execute")
        }
        Request::MailboxShow { address, uid, folder } => {
            let (mailbox, name) = find_mailbox(store, &address, &folder)?;
            let m = store
                .message(mailbox, uid)
                .map_err(e)?
                .ok_or_else(|| format!("no message with UID {uid} in {address} {name}"))?;
            return store
                .blob(&m.meta.blob)
                .map_err(e)?
                .ok_or_else(|| format!("message {uid} has no stored body (store damaged?)"));
        }
    }
    Ok(out.into_bytes())
}

fn find_mailbox(store: &dyn MailStore, address: &str, folder: &str) -> Result<(u64, String), String> {
    let a = parse_address(address)?.to_string();
    if store.account(&a).map_err(|e| e.to_string())?.is_none() {
        return Err(format!("no account {a}"));
    }
    let m = store
        .mailbox(&a, folder)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{a} has no mailbox {folder:?}"))?;
    Ok((m.id, m.name))
}
