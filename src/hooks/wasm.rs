//! WASM policies: components for `wasm32-wasip2` implementing `plugins/wit/mailgate.wit`.
//!
//! Instances come from a pre-linked `InstancePre` and are reused from call to call (a new one
//! costs hundreds of microseconds for a wasip2 component; a reused call a few), with fresh
//! budgets each time; an instance that trapped, panicked or failed is thrown away, so a broken
//! heap never serves another message. `fresh_instance = true` in the manifest asks for a new
//! instance on every call (full isolation between messages, at that cost). Budgets: fuel
//! (`fuel`), wall time (an epoch deadline; a ticker thread bumps the epoch every 10 ms), and
//! linear memory (`memory_mb`, via a store limiter that traps on growth past it). WASI is
//! linked but grants nothing: no files, no environment, no network, no clocks beyond WASI's
//! defaults. Calls run on the blocking pool (wasmtime's sync API); host DNS calls re-enter
//! the runtime there.

use super::PluginError;
use super::analyzers::KeywordRules;
use super::contract::{self, Event, Hook, Stage, Verdict};
use super::host::{HostServices, RegexCache};
use super::manifest::Manifest;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The world's generated types live apart: its `event`, `message` and `verdict` would clash
/// with the contract's.
mod bindings {
    wasmtime::component::bindgen!({ world: "policy", path: "plugins/wit" });
}
use bindings::{Policy, PolicyPre, mailgate};
/// The WIT records (`mailgate::policy::types`) under the name `wit_convert.rs` expects.
use mailgate::policy::types as w;

/// Contract ↔ record mapping (the file is shared with the guest SDK).
#[path = "wit_convert.rs"]
mod wit;

/// A verdict as a guest hands it over: into the WIT record and back (what the host reads of a
/// guest's verdict). For tests and the `policy_verdict` fuzz target.
pub fn across_the_boundary(v: Verdict) -> Verdict {
    wit::verdict_from(wit::verdict_to(v))
}

/// Epoch tick: the resolution of WASM wall-time budgets.
const TICK: Duration = Duration::from_millis(10);

/// One engine for all plugins; its epoch ticker thread starts with it.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut c = Config::new();
        c.consume_fuel(true);
        c.epoch_interruption(true);
        // Calls are synchronous: without the component-model-async bookkeeping a call does
        // not set up a guest task and its resource-table entries each time.
        c.concurrency_support(false);
        if std::env::var_os("MAILGATE_WASM_PERFMAP").is_some() {
            c.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&c).expect("wasmtime engine with fuel and epochs");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(e) = ticker.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(TICK);
                }
            })
            .expect("epoch thread");
        engine
    })
}

struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    plugin: Arc<Shared>,
    dns_left: u32,
    /// The message's shared DNS deadline, taken when the call began ([`super::dns_budget`]).
    dns_deadline: Option<tokio::time::Instant>,
    /// The message of the event being handled, for the analyzer imports.
    message: Option<Arc<contract::Message>>,
}

/// What every call of one plugin shares.
struct Shared {
    name: String,
    host: Arc<HostServices>,
    regexes: RegexCache,
    config_json: String,
    keywords: Arc<dyn KeywordRules>,
}

impl HostState {
    /// Runs a lookup from inside a (synchronous) WASM call.
    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, String> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| "DNS is not available here".to_string())?;
        Ok(match handle.runtime_flavor() {
            // The call runs on a worker thread: let the runtime move its other tasks, then wait.
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| handle.block_on(f)),
            // The call runs on the blocking pool (see `WasmPlugin::call`).
            _ => handle.block_on(f),
        })
    }

    fn take_dns_budget(&mut self) -> Result<(), String> {
        if self.dns_left == 0 {
            return Err("DNS lookup budget exceeded (dns_lookups)".into());
        }
        self.dns_left -= 1;
        Ok(())
    }

    fn json<T: serde::Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `types` interface has only types; its (empty) host trait is implemented for the linker.
impl mailgate::policy::types::Host for HostState {}

impl mailgate::policy::host::Host for HostState {
    fn log(&mut self, level: String, message: String) {
        let plugin = &self.plugin.name;
        match level.as_str() {
            "error" => tracing::error!(plugin, "{message}"),
            "warn" => tracing::warn!(plugin, "{message}"),
            "debug" => tracing::debug!(plugin, "{message}"),
            _ => tracing::info!(plugin, "{message}"),
        }
    }

    fn regex_match(&mut self, pattern: String, text: String) -> Result<bool, String> {
        self.plugin.regexes.get(&pattern).map(|r| r.is_match(&text))
    }

    fn dns(&mut self, kind: String, name: String) -> Result<Vec<String>, String> {
        self.take_dns_budget()?;
        let host = self.plugin.host.clone();
        self.block_on(super::dns_budget::within(self.dns_deadline, host.dns(&kind, &name)))?
    }

    fn dnsbl(&mut self, target: String, zone: String) -> Result<Vec<String>, String> {
        self.take_dns_budget()?;
        let host = self.plugin.host.clone();
        self.block_on(super::dns_budget::within(self.dns_deadline, host.dnsbl(&target, &zone)))?
    }

    fn bayes(&mut self) -> Option<String> {
        let m = self.message.as_ref()?;
        self.plugin.host.analyzers.bayes(m).map(|j| Self::json(&j))
    }

    fn keywords(&mut self) -> String {
        match &self.message {
            Some(m) => Self::json(&self.plugin.keywords.matches(m)),
            None => "[]".into(),
        }
    }

    fn letters(&mut self) -> String {
        match &self.message {
            Some(m) => Self::json(&self.plugin.host.analyzers.letters(m)),
            None => "[]".into(),
        }
    }

    fn kv_get(&mut self, key: String) -> Option<String> {
        self.plugin.host.kv_get(&self.plugin.name, &key).ok().flatten()
    }

    fn kv_set(&mut self, key: String, value: String, ttl_secs: Option<i64>) -> Result<(), String> {
        self.plugin.host.kv_set(&self.plugin.name, &key, &value, ttl_secs)
    }

    fn kv_del(&mut self, key: String) -> Result<(), String> {
        self.plugin.host.kv_del(&self.plugin.name, &key)
    }

    fn now(&mut self) -> i64 {
        crate::store::now_secs()
    }

    fn config(&mut self) -> String {
        self.plugin.config_json.clone()
    }
}

/// An instantiated plugin, ready for another call.
struct Instance {
    store: Store<HostState>,
    policy: Policy,
}

struct Inner {
    manifest: Manifest,
    pre: PolicyPre<HostState>,
    shared: Arc<Shared>,
    /// Instances that finished their last call cleanly; reused (fresh fuel, deadline and DNS
    /// budget each call) unless the manifest asks for `fresh_instance`.
    idle: std::sync::Mutex<Vec<Instance>>,
}

/// Idle instances kept per plugin (about one per concurrent caller).
const MAX_IDLE: usize = 8;

pub struct WasmPlugin {
    inner: Arc<Inner>,
    /// Bits of [`MESSAGE_FIELDS`] sent to the plugin.
    message_fields: u8,
    hooks: HashSet<Hook>,
    stages: Vec<Stage>,
}

#[derive(serde::Deserialize)]
struct Description {
    hooks: Vec<Hook>,
    #[serde(default)]
    stages: Vec<Stage>,
    /// Message fields the plugin reads; absent means all.
    message_fields: Option<Vec<String>>,
}

impl Inner {
    fn store(&self) -> Store<HostState> {
        let m = &self.manifest;
        let state = HostState {
            wasi: WasiCtx::builder().build(), // no rights granted
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size((m.memory_mb as usize) << 20)
                .instances(8)
                .trap_on_grow_failure(true)
                .build(),
            plugin: self.shared.clone(),
            dns_left: m.dns_lookups,
            dns_deadline: None,
            message: None,
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| &mut s.limits);
        // Fuel must be set before instantiation: a wasip2 component runs start code.
        let _ = store.set_fuel(m.fuel);
        let ticks = m.timeout_ms.div_ceil(TICK.as_millis() as u64) + 1;
        store.set_epoch_deadline(ticks);
        store
    }

    /// One call: on an idle instance if there is one, else a new one. An instance that
    /// trapped or failed is dropped, never reused (its heap may be inconsistent).
    fn invoke<T>(
        &self,
        message: Option<Arc<contract::Message>>,
        dns_deadline: Option<tokio::time::Instant>,
        f: impl FnOnce(&Policy, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let reused = if self.manifest.fresh_instance {
            None
        } else {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
        };
        let mut inst = match reused {
            Some(mut i) => {
                let m = &self.manifest;
                let _ = i.store.set_fuel(m.fuel);
                i.store
                    .set_epoch_deadline(m.timeout_ms.div_ceil(TICK.as_millis() as u64) + 1);
                i.store.data_mut().dns_left = m.dns_lookups;
                i
            }
            None => {
                let mut store = self.store();
                let policy = self.pre.instantiate(&mut store).map_err(|e| classify(&e))?;
                Instance { store, policy }
            }
        };
        inst.store.data_mut().message = message;
        inst.store.data_mut().dns_deadline = dns_deadline;
        // A host function that panics unwinds through the guest to here. The one known
        // case: wasmtime-wasi's blocking stream calls (a guest writing to stdout or stderr,
        // as a Rust guest does when it panics) `block_on` the current tokio runtime, which
        // panics on a runtime worker, where calls run. That is the plugin's failure, not
        // the server's: the instance is dropped and `on_error` applies.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&inst.policy, &mut inst.store))) {
            Ok(r) => r.map_err(|e| classify(&e)),
            Err(payload) => {
                let why = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("");
                return Err(PluginError::Runtime(if why.contains("runtime from within a runtime") {
                    "the plugin wrote to stdout/stderr (WASI streams), which policies do not have; use the host's log"
                        .into()
                } else {
                    format!("a host call failed: {}", why.lines().next().unwrap_or("panic"))
                }));
            }
        };
        inst.store.data_mut().message = None;
        if result.is_ok() && !self.manifest.fresh_instance {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(inst);
            }
        }
        result
    }
}

/// Message fields a WASM plugin can ask for (`message_fields` in `describe()`); `size` and
/// `attachments` always come.
const MESSAGE_FIELDS: [&str; 6] = ["subject", "from", "to", "text", "headers", "links"];
const ALL_FIELDS: u8 = 0b11_1111;

/// The WIT form of `event.message` (`record message` in `plugins/wit/mailgate.wit`).
type MessageRecord = w::Message;

/// For one chain: the message as a WIT record for each set of fields asked for. The message
/// is the bulk of an event and the same for every WASM plugin of the chain, so its record
/// is made once per field set.
#[derive(Default)]
pub struct MessageRecords(std::sync::Mutex<Vec<(u8, Arc<MessageRecord>)>>);

impl MessageRecords {
    fn get(&self, m: &contract::Message, mask: u8) -> Arc<MessageRecord> {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, r)) = cache.iter().find(|(k, _)| *k == mask) {
            return r.clone();
        }
        let asked = |field: &str| {
            MESSAGE_FIELDS
                .iter()
                .position(|n| *n == field)
                .is_some_and(|i| mask & (1 << i) != 0)
        };
        let record = Arc::new(wit::message_to(m, asked));
        cache.push((mask, record.clone()));
        record
    }
}

fn classify(e: &wasmtime::Error) -> PluginError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::Budget("fuel budget exceeded".into()),
        Some(Trap::Interrupt) => PluginError::Timeout,
        _ => {
            let text = format!("{e:#}");
            if text.contains("memory") && (text.contains("grow") || text.contains("limit")) {
                PluginError::Memory
            } else {
                PluginError::Runtime(text.lines().next().unwrap_or("").to_string())
            }
        }
    }
}

impl WasmPlugin {
    /// Compiles and links a component and asks it what it implements.
    pub fn load(path: &Path, manifest: Manifest, host: &Arc<HostServices>) -> Result<WasmPlugin, String> {
        let shown = path.display();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let component = Component::from_binary(engine(), &bytes)
            .map_err(|e| format!("{shown}: not a valid WASM component: {e}"))?;
        let mut linker = Linker::<HostState>::new(engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("{shown}: {e}"))?;
        Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| format!("{shown}: {e}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PolicyPre::new)
            .map_err(|e| format!("{shown}: does not fit the mailgate:policy world: {e:#}"))?;
        let config_json = serde_json::to_string(&manifest.config).map_err(|e| format!("{shown}: config: {e}"))?;
        let keywords = host.analyzers.keywords(path, &manifest)?;
        let inner = Arc::new(Inner {
            manifest,
            pre,
            idle: std::sync::Mutex::new(Vec::new()),
            shared: Arc::new(Shared {
                name,
                host: host.clone(),
                regexes: RegexCache::default(),
                config_json,
                keywords,
            }),
        });
        let described = inner
            .invoke(None, None, |p, s| p.call_describe(s))
            .map_err(|e| format!("{shown}: describe() failed: {e}"))?;
        let d: Description =
            serde_json::from_str(&described).map_err(|e| format!("{shown}: describe() returned bad JSON: {e}"))?;
        let mut message_fields = ALL_FIELDS;
        if let Some(asked) = &d.message_fields {
            message_fields = 0;
            for f in asked {
                let bit = MESSAGE_FIELDS
                    .iter()
                    .position(|n| n == f)
                    .ok_or_else(|| format!("{shown}: describe(): unknown message field {f:?}"))?;
                message_fields |= 1 << bit;
            }
        }
        let stages = if d.stages.is_empty() {
            vec![Stage::Data]
        } else {
            d.stages
        };
        Ok(WasmPlugin {
            inner,
            message_fields,
            hooks: d.hooks.into_iter().collect(),
            stages,
        })
    }

    pub fn hooks(&self) -> &HashSet<Hook> {
        &self.hooks
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Calls the plugin; `cache` holds the chain's message records.
    pub async fn call(&self, event: &Event, cache: &MessageRecords) -> Result<Verdict, PluginError> {
        let record_event = wit::event_to(event);
        let record = event.message.as_ref().map(|m| cache.get(m, self.message_fields));
        let inner = self.inner.clone();
        let message = event.message.clone();
        // Taken here, in the chain's task: the call may run on the blocking pool.
        let dns_deadline = super::dns_budget::deadline();
        let run = move || {
            inner.invoke(message, dns_deadline, |p, s| {
                p.call_handle(s, &record_event, record.as_deref())
            })
        };
        // On the multi-threaded runtime the call simply runs here: it is bounded by fuel and
        // the epoch deadline, and most calls take microseconds, less than any hand-off (a
        // DNS host call, which waits, moves the worker's other tasks away first). On other
        // runtimes it goes to the blocking pool.
        let answer = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => run()?,
            _ => tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| PluginError::Runtime(format!("plugin task: {e}")))??,
        };
        match answer {
            Err(msg) => Err(PluginError::Runtime(msg)),
            Ok(v) => Ok(v.map(wit::verdict_from).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::contract::{Action, AuthResults, Event, Header, Hook, Message, RouteKind, Stage, Symbol, Verdict};
    use super::wit;

    /// The guest's directions of the shared mapping undo the host's: every field of an event
    /// and a verdict survives the trip (the guest SDK compiles the same file).
    #[test]
    fn events_and_verdicts_cross_unchanged() {
        let mut e = Event::new(Hook::Deliver, Default::default());
        e.stage = Some(Stage::Rcpt);
        e.session.client_ip = "192.0.2.1".into();
        e.session.helo = Some("mx.example.org".into());
        e.session.tls = true;
        e.session.auth_user = Some("alice@localhost".into());
        e.session.listener = "submission".into();
        e.envelope.mail_from = Some(String::new());
        e.envelope.rcpt_to = vec!["a@localhost".into(), "b@localhost".into()];
        e.recipient = Some("a@localhost".into());
        e.default_route = Some("local".into());
        e.auth = Some(AuthResults {
            spf: Some("pass".into()),
            dkim: Some("fail".into()),
            dmarc: None,
            spf_domain: Some("example.org".into()),
            dkim_domains: vec!["example.org".into()],
            dmarc_policy: Some("reject".into()),
            from_domain: Some("example.org".into()),
        });
        e.score = 2.5;
        e.symbols = vec![Symbol {
            name: "X".into(),
            score: 2.5,
            reason: "why".into(),
        }];
        e.mailbox = Some("Junk".into());
        e.user = Some("alice@localhost".into());
        let m = Message {
            subject: "s".into(),
            from: "f@example.org".into(),
            to: vec!["t@localhost".into()],
            text: "body".into(),
            headers: vec![Header {
                name: "X-A".into(),
                value: "1".into(),
            }],
            links: vec!["example.org".into()],
            size: 99,
            attachments: 1,
        };
        let record = wit::message_to(&m, |_| true);
        let back = wit::event_from(wit::event_to(&e), Some(record));
        assert_eq!(back.message.as_deref(), Some(&m));
        e.message = back.message.clone();
        assert_eq!(back, e);
        let v = Verdict {
            action: Action::Quarantine,
            code: Some(550),
            enhanced: Some("5.7.1".into()),
            text: Some("no".into()),
            score: Some(1.0),
            symbol: Some("S".into()),
            reason: Some("r".into()),
            symbols: e.symbols.clone(),
            folder: Some("Junk".into()),
            flags: vec!["\\Seen".into()],
            add_headers: vec![Header {
                name: "X-B".into(),
                value: "2".into(),
            }],
            remove_headers: vec!["X-C".into()],
            route: Some(RouteKind::Relay),
            mailbox: Some("bob@localhost".into()),
            host: Some("relay.example:25".into()),
        };
        assert_eq!(super::across_the_boundary(v.clone()), v);
        for a in Action::ALL {
            let v = Verdict {
                action: a,
                ..Verdict::default()
            };
            assert_eq!(super::across_the_boundary(v.clone()).action, a);
        }
    }
}
