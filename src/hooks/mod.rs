//! The hook engine: policies in `[policies] dir`, run in file-name order at four hook points.
//!
//! A [`PolicySet`] is everything loaded from the directory at one moment, with a version hash.
//! The [`Engine`] holds the live set in an `ArcSwap`: a reload builds and validates a whole new
//! set, then swaps it in atomically; a session keeps the set it started with; a broken file
//! keeps the old set running and is reported (log, `mailgate policy status`). The directory is
//! watched (notify, debounced); SIGHUP and `mailgate policy reload` reload too.
//!
//! `docs/hooks.md` is the author's guide to the contract in [`contract`].

pub mod analyzers;
pub mod contract;
pub mod dns_budget;
pub mod dns_cache;
pub mod host;
pub mod lua;
pub mod manifest;
pub mod shipped;
pub mod threads;
pub mod wasm;

pub use contract::{Action, Event, Hook, Stage, Verdict};

use arc_swap::ArcSwap;
use contract::{Header, RouteKind, Symbol};
use host::HostServices;
use manifest::{Manifest, OnError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginError {
    Timeout,
    Budget(String),
    Memory,
    Runtime(String),
    BadVerdict(String),
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginError::Timeout => f.write_str("time budget exceeded"),
            PluginError::Budget(s) => f.write_str(s),
            PluginError::Memory => f.write_str("memory budget exceeded"),
            PluginError::Runtime(s) => write!(f, "error: {s}"),
            PluginError::BadVerdict(s) => write!(f, "bad verdict: {s}"),
        }
    }
}

enum Runtime {
    Lua(lua::LuaPlugin),
    Wasm(wasm::WasmPlugin),
}

/// One loaded policy.
pub struct Plugin {
    pub name: String,
    pub manifest: Manifest,
    runtime: Runtime,
}

impl Plugin {
    fn implements(&self, hook: Hook, stage: Option<Stage>) -> bool {
        let (hooks, stages) = match &self.runtime {
            Runtime::Lua(p) => (p.hooks(), p.stages()),
            Runtime::Wasm(p) => (p.hooks(), p.stages()),
        };
        hooks.contains(&hook) && (hook != Hook::Receive || stage.is_none_or(|s| stages.contains(&s)))
    }

    /// `snapshot`: the chain's shared copy of `event` for Lua views, made when first needed
    /// and again only after a policy changed the event.
    async fn call(
        &self,
        hook: Hook,
        event: &mut Event,
        snapshot: &mut Option<Arc<Event>>,
        records: &wasm::MessageRecords,
    ) -> Result<Verdict, PluginError> {
        match &self.runtime {
            Runtime::Lua(p) => {
                let shared = snapshot.get_or_insert_with(|| Arc::new((*event).clone())).clone();
                p.call(hook, &shared).await
            }
            Runtime::Wasm(p) => p.call(event, records).await,
        }
    }
}

/// One line of the trace: which plugin said what, how long it took.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TraceEntry {
    pub plugin: String,
    pub hook: Hook,
    pub stage: Option<Stage>,
    pub action: Action,
    pub score: f64,
    pub symbols: Vec<String>,
    pub micros: u64,
    pub error: Option<String>,
}

/// What a chain of policies decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub action: Action,
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    pub text: Option<String>,
    /// Some policy asked for Junk.
    pub quarantine: bool,
    /// Score added by this chain.
    pub score: f64,
    pub symbols: Vec<Symbol>,
    pub add_headers: Vec<Header>,
    pub remove_headers: Vec<String>,
    pub folder: Option<String>,
    pub flags: Vec<String>,
    pub route: Option<RouteKind>,
    pub mailbox: Option<String>,
    pub host: Option<String>,
    pub trace: Vec<TraceEntry>,
}

impl Outcome {
    /// The SMTP reply for a refusing outcome: the policy's own code and text, or defaults.
    pub fn reply(&self) -> (u16, String, String) {
        let (code, enh, text) = match self.action {
            Action::Tempfail => (451, "4.7.1", "Try again later"),
            Action::Disconnect => (421, "4.7.0", "Closing connection"),
            _ => (550, "5.7.1", "Rejected by policy"),
        };
        self.reply_or(code, enh, text)
    }

    /// The policy's code, enhanced code and text, checked (a 4xx/5xx code, an enhanced code of
    /// the same class, no control characters), or the defaults given.
    pub fn reply_or(&self, code: u16, enh: &str, text: &str) -> (u16, String, String) {
        let code = self.code.filter(|c| (400..600).contains(c)).unwrap_or(code);
        // Keep the class of the enhanced code in step with the reply code.
        let class = (code / 100).to_string();
        let enh = match self
            .enhanced
            .clone()
            .filter(|e| e.starts_with(&class) && enhanced_code(e))
        {
            Some(e) => e,
            None => format!("{class}{}", enh.get(1..).unwrap_or(".0.0")),
        };
        let text: String = self
            .text
            .clone()
            .unwrap_or(text.into())
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        (code, enh, text)
    }
}

/// Whether `e` is an RFC 3463 enhanced status code: class `.` subject `.` detail, the class
/// 2, 4 or 5, the others of one to three digits. Anything else a policy gave (spaces, line
/// breaks) never reaches a reply line.
fn enhanced_code(e: &str) -> bool {
    let parts: Vec<&str> = e.split('.').collect();
    let digits = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    matches!(parts[..], [class, subject, detail] if ["2", "4", "5"].contains(&class) && digits(subject) && digits(detail))
}

/// `dir` as an absolute path, for messages (a relative one is resolved against the working
/// directory, which is what an operator most often has wrong).
pub fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Policies loaded from the directory at one moment.
pub struct PolicySet {
    pub version: String,
    pub plugins: Vec<Plugin>,
    pub loaded_at: SystemTime,
}

impl PolicySet {
    /// Loads every `*.lua` and `*.wasm` in `dir` (file-name order) with its manifest. Any error fails the
    /// whole set, naming the file (and line, for script errors).
    pub fn load(dir: &Path, host: &Arc<HostServices>, states: usize) -> Result<PolicySet, String> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "lua" || x == "wasm"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        files.sort();
        let mut hash = Sha256::new();
        let mut plugins = Vec::new();
        for path in files {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let (manifest, manifest_text) = Manifest::for_plugin(&path)?;
            hash.update(path.file_name().unwrap_or_default().as_encoded_bytes());
            hash.update(&bytes);
            hash.update(manifest_text.unwrap_or_default().as_bytes());
            let runtime = if path.extension().is_some_and(|x| x == "wasm") {
                Runtime::Wasm(wasm::WasmPlugin::load(&path, manifest.clone(), host)?)
            } else {
                let source = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
                Runtime::Lua(lua::LuaPlugin::load(&path, &source, manifest.clone(), host, states)?)
            };
            plugins.push(Plugin {
                name: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                manifest,
                runtime,
            });
        }
        let digest = hash.finalize();
        let version: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Ok(PolicySet {
            version,
            plugins,
            loaded_at: SystemTime::now(),
        })
    }

    /// True when some policy implements `hook` (at `stage`): lets callers skip building events.
    pub fn wants(&self, hook: Hook, stage: Option<Stage>) -> bool {
        self.plugins.iter().any(|p| p.implements(hook, stage))
    }

    /// Some policy reads `event.auth` (its manifest says `auth = true`).
    pub fn wants_auth(&self) -> bool {
        self.plugins.iter().any(|p| p.manifest.auth)
    }

    /// Runs the chain for `hook`. Scores and symbols are added to `event` as they come, so
    /// later policies see them; a terminal action ends the chain.
    pub async fn run(&self, hook: Hook, event: &mut Event) -> Outcome {
        let mut out = Outcome::default();
        let records = wasm::MessageRecords::default();
        let mut snapshot: Option<Arc<Event>> = None;
        let stage = event.stage;
        for p in self.plugins.iter().filter(|p| p.implements(hook, stage)) {
            let started = Instant::now();
            let result = p.call(hook, event, &mut snapshot, &records).await;
            let elapsed = started.elapsed();
            let micros = elapsed.as_micros() as u64;
            let policy = crate::metrics::policy(&p.name);
            crate::metrics::get()
                .hook_seconds
                .get_or_create(&policy)
                .observe(elapsed.as_secs_f64());
            let mut entry = TraceEntry {
                plugin: p.name.clone(),
                hook,
                stage: event.stage,
                action: Action::Continue,
                score: 0.0,
                symbols: Vec::new(),
                micros,
                error: None,
            };
            let v = match result {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(plugin = %p.name, ?hook, "policy failed: {e}");
                    crate::metrics::get().policy_errors.get_or_create(&policy).inc();
                    entry.error = Some(e.to_string());
                    match p.manifest.on_error {
                        OnError::Continue => {
                            out.trace.push(entry);
                            continue;
                        }
                        OnError::Tempfail => Verdict {
                            action: Action::Tempfail,
                            code: Some(451),
                            enhanced: Some("4.3.0".into()),
                            text: Some("Temporary policy failure, try again later".into()),
                            ..Verdict::default()
                        },
                        OnError::Reject => Verdict {
                            action: Action::Reject,
                            code: Some(550),
                            enhanced: Some("5.7.1".into()),
                            text: Some("Rejected by policy".into()),
                            ..Verdict::default()
                        },
                    }
                }
            };
            entry.action = v.action;
            let mut symbols = v.symbols.clone();
            if let Some(score) = v.score {
                symbols.push(Symbol {
                    name: v.symbol.clone().unwrap_or_else(|| p.name.clone()),
                    score,
                    reason: v.reason.clone().unwrap_or_default(),
                });
            }
            if !symbols.is_empty() {
                snapshot = None; // later policies see the new score and symbols
            }
            for s in symbols {
                entry.score += s.score;
                entry.symbols.push(s.name.clone());
                out.score += s.score;
                event.score += s.score;
                event.symbols.push(s.clone());
                out.symbols.push(s);
            }
            out.add_headers.extend(v.add_headers);
            out.remove_headers.extend(v.remove_headers);
            if v.folder.is_some() {
                out.folder = v.folder;
            }
            out.flags.extend(v.flags);
            out.trace.push(entry);
            if v.action == Action::Quarantine {
                out.quarantine = true;
            }
            if hook == Hook::Route && v.route.is_some() {
                out.route = v.route;
                out.mailbox = v.mailbox;
                out.host = v.host;
                out.code = v.code;
                out.enhanced = v.enhanced;
                out.text = v.text;
                break; // a routing decision ends the route chain
            }
            if v.action.is_terminal() {
                out.action = v.action;
                out.code = v.code;
                out.enhanced = v.enhanced;
                out.text = v.text;
                break;
            }
        }
        out
    }
}

/// `X-Mailgate-Trace` value: `plugin=action[+score SYMBOLS](ms)` per call.
/// What a mail client may see of a stored message, after the `on_fetch` policies.
pub enum FetchView {
    /// As stored (no policy wants `on_fetch`, or none changed it).
    Unchanged,
    /// With headers added or removed.
    Edited(Vec<u8>),
    /// Withheld (hide, reject, discard).
    Hidden,
    /// Not now (tempfail).
    Later,
}

/// Runs the `on_fetch` chain for a POP3 or IMAP read of `raw` by `user` from `mailbox`.
pub async fn on_fetch(set: &PolicySet, session: contract::Session, user: &str, mailbox: &str, raw: &[u8]) -> FetchView {
    if !set.wants(Hook::Fetch, None) {
        return FetchView::Unchanged;
    }
    let mut ev = Event::new(Hook::Fetch, session);
    ev.user = Some(user.to_string());
    ev.mailbox = Some(mailbox.to_string());
    ev.message = Some(Arc::new(crate::mail::parse_message(raw)));
    let out = set.run(Hook::Fetch, &mut ev).await;
    match out.action {
        Action::Hide | Action::Reject | Action::Discard => FetchView::Hidden,
        Action::Tempfail => FetchView::Later,
        _ if out.add_headers.is_empty() && out.remove_headers.is_empty() => FetchView::Unchanged,
        _ => FetchView::Edited(crate::mail::edit_headers(raw, &out.add_headers, &out.remove_headers)),
    }
}

pub fn trace_header(trace: &[TraceEntry]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(trace.len() * 48);
    for (i, t) in trace.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        s.push_str(&t.plugin);
        if let Some(stage) = t.stage {
            let _ = write!(s, "@{}", stage.name());
        }
        let _ = write!(s, "={}", t.action.name());
        if t.score != 0.0 {
            let _ = write!(s, " {:+.2}", t.score);
        }
        if !t.symbols.is_empty() {
            let _ = write!(s, " [{}]", t.symbols.join(","));
        }
        if let Some(e) = &t.error {
            let _ = write!(s, " error({})", e.replace([';', '\r', '\n'], " "));
        }
        let _ = write!(s, " {:.2}ms", t.micros as f64 / 1000.0);
    }
    s
}

/// Reload status, for `mailgate policy status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub version: String,
    pub plugins: Vec<String>,
    pub loaded_at: u64,
    pub last_error: Option<String>,
}

/// The live policy set and how to replace it.
pub struct Engine {
    dir: PathBuf,
    states: usize,
    host: Arc<HostServices>,
    current: ArcSwap<PolicySet>,
    last_error: Mutex<Option<String>>,
    /// The live version, for anyone who wants to await a reload.
    version: tokio::sync::watch::Sender<String>,
}

impl Engine {
    /// The host services every policy of this engine uses (the live spam model, DNS, store).
    pub fn host(&self) -> &Arc<HostServices> {
        &self.host
    }

    /// Loads the directory; an error here stops the server from starting.
    pub fn new(dir: &Path, host: Arc<HostServices>, states: usize) -> Result<Engine, String> {
        let set = PolicySet::load(dir, &host, states)?;
        tracing::info!(version = %set.version, plugins = set.plugins.len(), dir = %dir.display(), "policies loaded");
        if set.plugins.is_empty() {
            tracing::warn!(
                "no policies in {}: mail is accepted with no spam checks (leave [policies] dir unset for the shipped set, or point it at a folder of policies)",
                absolute(dir).display()
            );
        }
        let (version, _) = tokio::sync::watch::channel(set.version.clone());
        Ok(Engine {
            dir: dir.to_path_buf(),
            states,
            host,
            current: ArcSwap::from_pointee(set),
            last_error: Mutex::new(None),
            version,
        })
    }

    /// The live set; a session keeps the one it got for its whole life.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Builds a new set from the directory; swaps it in only if all of it loads.
    pub fn reload(&self) -> Result<String, String> {
        match PolicySet::load(&self.dir, &self.host, self.states) {
            Ok(set) => {
                let version = set.version.clone();
                let n = set.plugins.len();
                self.current.store(Arc::new(set));
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.version.send_replace(version.clone());
                tracing::info!(%version, plugins = n, "policies reloaded");
                Ok(version)
            }
            Err(e) => {
                tracing::error!("policy reload failed, keeping version {}: {e}", self.current().version);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Notified with the new version after every successful reload.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<String> {
        self.version.subscribe()
    }

    pub fn status(&self) -> Status {
        let set = self.current();
        Status {
            version: set.version.clone(),
            plugins: set.plugins.iter().map(|p| p.name.clone()).collect(),
            loaded_at: set
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Watches the directory and reloads after changes settle (`debounce`). Runs until the
    /// engine is dropped or `shutdown` fires.
    pub fn watch(
        self: &Arc<Self>,
        debounce: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        })?;
        std::fs::create_dir_all(&self.dir)?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let _watcher = watcher; // lives as long as this task
            loop {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { return },
                    _ = shutdown.changed() => return,
                }
                // Debounce: editors write, rename and chmod in bursts.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let Some(engine) = engine.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || engine.reload()).await;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_replies_are_checked() {
        let out = Outcome {
            code: Some(451),
            text: Some("line one\r\n250 injected".into()),
            ..Outcome::default()
        };
        let (code, enh, text) = out.reply_or(550, "5.1.1", "default");
        assert_eq!((code, enh.as_str()), (451, "4.1.1"), "enhanced class follows the code");
        assert!(
            !text.contains('\r') && !text.contains('\n'),
            "no reply-line injection: {text:?}"
        );
        // An enhanced code that is not one (found by the policy_verdict fuzz target: a line
        // break in it went into the reply line) gives way to the default.
        for given in [
            "5tf\r\u{b}\r,",
            "5.7.1\r\n250 x",
            "5.7",
            "5.7.1.1",
            "5.1234.1",
            "5..1",
            "6.1.1",
        ] {
            let out = Outcome {
                code: Some(550),
                enhanced: Some(given.into()),
                ..Outcome::default()
            };
            assert_eq!(out.reply_or(550, "5.7.1", "x").1, "5.7.1", "{given:?}");
        }
        let kept = Outcome {
            code: Some(554),
            enhanced: Some("5.7.26".into()),
            ..Outcome::default()
        };
        assert_eq!(kept.reply_or(550, "5.7.1", "x").1, "5.7.26");
        let bad = Outcome {
            code: Some(250),
            ..Outcome::default()
        };
        assert_eq!(bad.reply_or(550, "5.7.1", "x"), (550, "5.7.1".into(), "x".into()));
    }

    #[test]
    fn names_in_traces_are_the_contract_names() {
        use contract::Stage;
        for a in Action::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name(), "{a:?}");
        }
        for h in Hook::ALL {
            assert_eq!(serde_json::to_value(h).unwrap(), h.name(), "{h:?}");
        }
        for st in [Stage::Connect, Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data] {
            assert_eq!(serde_json::to_value(st).unwrap(), st.name(), "{st:?}");
            assert_eq!(Stage::parse(st.name()), Some(st));
        }
        let trace = [TraceEntry {
            plugin: "a.lua".into(),
            hook: Hook::Receive,
            stage: Some(Stage::Data),
            action: Action::Reject,
            score: 1.5,
            symbols: vec!["X".into(), "Y".into()],
            micros: 1234,
            error: Some("bad; worse\r\n".into()),
        }];
        assert_eq!(
            trace_header(&trace),
            "a.lua@data=reject +1.50 [X,Y] error(bad  worse  ) 1.23ms"
        );
    }
}
