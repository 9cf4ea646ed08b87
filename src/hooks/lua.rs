//! Lua policies (mlua, Lua 5.4 vendored).
//!
//! Each plugin gets a small pool of sandboxed states (one per worker thread), each loaded
//! with the script: only the `table`, `string`, `math`, `utf8` and `coroutine` libraries;
//! `io`, `os`, `package`, `debug`, `require`, `load`, `dofile`... do not exist. Budgets per
//! call: VM instructions (a global hook every 1000 instructions, which also stops loops inside
//! coroutines), wall time (checked in the same hook, and by a timeout around the call for time
//! spent in host calls), and heap (`set_memory_limit`). After an error the state stays usable.

use super::PluginError;
use super::analyzers::KeywordRules;
use super::contract::{Event, Hook, Message, Stage, Verdict};
use super::host::{HostServices, RegexCache};
use super::manifest::Manifest;
use mlua::{HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Value, VmState};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Public for the `policy_verdict` fuzz target.
pub mod verdict;
mod view;

/// Instructions between two budget checks.
const HOOK_EVERY: u32 = 1000;

#[derive(Default)]
struct Budget {
    /// Units of [`HOOK_EVERY`] instructions left.
    instr_left: AtomicI64,
    deadline: Mutex<Option<Instant>>,
    dns_left: AtomicU32,
    /// 0 none, 1 instructions, 2 time.
    exceeded: AtomicU8,
}

impl Budget {
    fn arm(&self, m: &Manifest) {
        self.instr_left
            .store((m.instructions / HOOK_EVERY as u64).max(1) as i64, Ordering::SeqCst);
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + Duration::from_millis(m.timeout_ms));
        self.dns_left.store(m.dns_lookups, Ordering::SeqCst);
        self.exceeded.store(0, Ordering::SeqCst);
    }

    /// One DNS lookup out of the call's `dns_lookups`.
    fn take_dns(&self) -> mlua::Result<()> {
        self.dns_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| mlua::Error::runtime("DNS lookup budget exceeded (dns_lookups)"))
    }

    fn disarm(&self) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

struct State {
    lua: Lua,
    budget: Arc<Budget>,
    /// The hook functions the script defined, looked up once after loading.
    functions: Vec<(Hook, mlua::Function)>,
    /// The `event` argument of every call ([`view`]), and what it and its message show.
    event: mlua::AnyUserData,
    current: Arc<view::Current>,
    /// Heap in use after the last full collection.
    live: usize,
}

pub struct LuaPlugin {
    manifest: Manifest,
    states: Vec<tokio::sync::Mutex<State>>,
    hooks: HashSet<Hook>,
    stages: Vec<Stage>,
    /// The script calls `mailgate.dns`, the one host function that waits: only then is the
    /// call made as a coroutine (`call_async`), which costs several times a plain call.
    uses_async: bool,
}

/// Turns an mlua error into a readable one-line message (the traceback is noise here).
fn lua_error(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => lua_error(cause),
        mlua::Error::MemoryError(_) => "out of memory (memory_mb exceeded)".into(),
        other => other.to_string().lines().next().unwrap_or("").to_string(),
    }
}

fn new_state(
    name: &str,
    path: &Path,
    source: &str,
    manifest: &Manifest,
    host: &Arc<HostServices>,
    regexes: &Arc<RegexCache>,
    keywords: &Arc<dyn KeywordRules>,
) -> Result<State, String> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    let lua = Lua::new_with(libs, LuaOptions::default()).map_err(|e| lua_error(&e))?;
    // A policy's state holds ~30 KB and each call leaves about as much garbage (a copied
    // body is 5 KB): at the default pause (200 %) the collector marked the whole state every
    // other call. At 1000 % it does so a fifth as often; the heap stays a few hundred KB,
    // and `memory_mb` is still enforced (plus the full collection in `call`).
    lua.gc_set_mode(mlua::state::GcMode::Incremental(
        mlua::state::GcIncParams::default().pause(1000),
    ));
    let budget = Arc::new(Budget::default());
    let current = Arc::new(view::Current::default());
    let event = (|| -> mlua::Result<mlua::AnyUserData> {
        let g = lua.globals();
        for n in [
            "dofile",
            "loadfile",
            "load",
            "require",
            "collectgarbage",
            "print",
            "loadstring",
        ] {
            g.set(n, Value::Nil)?;
        }
        let b = budget.clone();
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), move |_, _| {
            if b.instr_left.fetch_sub(1, Ordering::Relaxed) <= 0 {
                b.exceeded.store(1, Ordering::SeqCst);
                return Err(mlua::Error::runtime("instruction budget exceeded"));
            }
            if let Some(d) = *b.deadline.lock().unwrap_or_else(|p| p.into_inner())
                && Instant::now() > d
            {
                b.exceeded.store(2, Ordering::SeqCst);
                return Err(mlua::Error::runtime("time budget exceeded"));
            }
            Ok(VmState::Continue)
        })?;
        let views = view::make(&lua, &current)?;
        let mailgate = install_host_table(&lua, name, manifest, host, regexes, &budget)?;
        install_analyzers(&lua, &mailgate, host, keywords, &current, views.message)?;
        lua.globals().set("mailgate", mailgate)?;
        fast_case_functions(&lua)?;
        lua.set_memory_limit((manifest.memory_mb as usize) << 20)?;
        Ok(views.event)
    })()
    .map_err(|e| lua_error(&e))?;
    // Top-level code runs under the budget too (a script that loops while loading is broken).
    budget.arm(manifest);
    // "@path" makes Lua report errors as "path:line: message".
    let loaded = lua.load(source).set_name(format!("@{}", path.display())).exec();
    budget.disarm();
    loaded.map_err(|e| lua_error(&e))?;
    let g = lua.globals();
    let functions = Hook::ALL
        .into_iter()
        .filter_map(|h| match g.get::<Value>(h.function()) {
            Ok(Value::Function(f)) => Some((h, f)),
            _ => None,
        })
        .collect();
    drop(g);
    Ok(State {
        lua,
        budget,
        functions,
        event,
        current,
        live: 0,
    })
}

/// The `mailgate` host table, but for the analyzers ([`install_analyzers`]).
fn install_host_table(
    lua: &Lua,
    plugin: &str,
    manifest: &Manifest,
    host: &Arc<HostServices>,
    regexes: &Arc<RegexCache>,
    budget: &Arc<Budget>,
) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    let name = plugin.to_string();
    t.set(
        "log",
        lua.create_function(move |_, (a, b): (String, Option<String>)| {
            match b {
                Some(msg) => match a.as_str() {
                    "error" => tracing::error!(plugin = %name, "{msg}"),
                    "warn" => tracing::warn!(plugin = %name, "{msg}"),
                    "debug" => tracing::debug!(plugin = %name, "{msg}"),
                    _ => tracing::info!(plugin = %name, "{msg}"),
                },
                None => tracing::info!(plugin = %name, "{a}"),
            }
            Ok(())
        })?,
    )?;
    let r = regexes.clone();
    t.set(
        "regex_match",
        lua.create_function(move |_, (pattern, text): (mlua::LuaString, mlua::LuaString)| {
            let re = r.get(&pattern.to_str()?).map_err(mlua::Error::runtime)?;
            Ok(re.is_match(&text.to_str()?))
        })?,
    )?;
    let r = regexes.clone();
    t.set(
        "regex_find",
        lua.create_function(move |lua, (pattern, text): (mlua::LuaString, mlua::LuaString)| {
            let re = r.get(&pattern.to_str()?).map_err(mlua::Error::runtime)?;
            let text = text.to_str()?;
            re.find(&text).map(|m| lua.create_string(m.as_str())).transpose()
        })?,
    )?;
    let (h, b) = (host.clone(), budget.clone());
    t.set(
        "dns",
        lua.create_async_function(move |lua, (kind, name): (String, String)| {
            let (h, b) = (h.clone(), b.clone());
            async move {
                b.take_dns()?;
                let answers = h.dns(&kind, &name).await.map_err(mlua::Error::runtime)?;
                lua.to_value(&answers)
            }
        })?,
    )?;
    let (h, n) = (host.clone(), plugin.to_string());
    t.set(
        "kv_get",
        lua.create_function(move |_, key: String| h.kv_get(&n, &key).map_err(mlua::Error::runtime))?,
    )?;
    let (h, n) = (host.clone(), plugin.to_string());
    t.set(
        "kv_set",
        lua.create_function(move |_, (key, value, ttl): (String, String, Option<i64>)| {
            h.kv_set(&n, &key, &value, ttl).map_err(mlua::Error::runtime)
        })?,
    )?;
    let (h, n) = (host.clone(), plugin.to_string());
    t.set(
        "kv_del",
        lua.create_function(move |_, key: String| h.kv_del(&n, &key).map_err(mlua::Error::runtime))?,
    )?;
    let (h, b) = (host.clone(), budget.clone());
    t.set(
        "dnsbl",
        lua.create_async_function(move |lua, (target, zone): (String, String)| {
            let (h, b) = (h.clone(), b.clone());
            async move {
                b.take_dns()?;
                let answers = h.dnsbl(&target, &zone).await.map_err(mlua::Error::runtime)?;
                lua.to_value(&answers)
            }
        })?,
    )?;
    t.set("now", lua.create_function(|_, ()| Ok(crate::store::now_secs()))?)?;
    t.set(
        "org_domain",
        lua.create_function(|_, name: mlua::LuaString| Ok(super::contract::org_domain(&name.to_str()?)))?,
    )?;
    t.set("config", lua.to_value(&manifest.config)?)?;
    t.set("plugin", plugin)?;
    Ok(t)
}

/// `mailgate.bayes`, `mailgate.keywords`, `mailgate.letters`: the spam analyzers, each over
/// the message of the call in progress, given as `event.message`.
fn install_analyzers(
    lua: &Lua,
    t: &mlua::Table,
    host: &Arc<HostServices>,
    keywords: &Arc<dyn KeywordRules>,
    current: &Arc<view::Current>,
    message_view: usize,
) -> mlua::Result<()> {
    let message_of = {
        let current = current.clone();
        move |arg: &Value| -> mlua::Result<Arc<Message>> {
            if arg.to_pointer() as usize != message_view {
                return Err(mlua::Error::runtime(format!(
                    "expects event.message, got {}",
                    arg.type_name()
                )));
            }
            current
                .event()
                .and_then(|e| e.message.clone())
                .ok_or_else(|| mlua::Error::runtime("the message of a call that has ended"))
        }
    };
    let (h, of) = (host.clone(), message_of.clone());
    t.set(
        "bayes",
        lua.create_function(move |lua, msg: Value| {
            let m = of(&msg)?;
            match h.analyzers.bayes(&m) {
                Some(j) => lua.to_value(&j),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    let (rules, of) = (keywords.clone(), message_of.clone());
    t.set(
        "keywords",
        lua.create_function(move |lua, msg: Value| {
            let m = of(&msg)?;
            lua.to_value(&rules.matches(&m))
        })?,
    )?;
    let h = host.clone();
    t.set(
        "letters",
        lua.create_function(move |lua, msg: Value| {
            let m = message_of(&msg)?;
            lua.to_value(&h.analyzers.letters(&m))
        })?,
    )?;
    Ok(())
}

/// `string.lower` and `string.upper` as Lua's own do them in the C locale (bytes A-Z / a-z
/// change, every other byte is kept), without its per-byte `tolower` call: policies lower
/// whole bodies, and Lua's loop was a tenth of a chain's time. `string.find` gets a fast
/// path for plain searches ([`plain_find`]).
///
/// All three are C functions on the raw stack: through mlua's callback machinery (argument
/// conversion, a registry reference per string, the error guard) each call cost about a
/// microsecond before any work, and a keyword policy makes several per message. They own
/// nothing that needs dropping, so a Lua error raised inside them (a bad argument, the
/// memory budget) may unwind through them.
fn fast_case_functions(lua: &Lua) -> mlua::Result<()> {
    use mlua::ffi;
    // SAFETY: balanced pushes and pops on the state's own stack, three slots at most.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            ffi::lua_getglobal(l, c"string".as_ptr());
            ffi::lua_getfield(l, -1, c"find".as_ptr());
            ffi::lua_pushcclosure(l, fast::find, 1); // Lua's own find as upvalue 1
            ffi::lua_setfield(l, -2, c"find".as_ptr());
            ffi::lua_pushcfunction(l, fast::lower);
            ffi::lua_setfield(l, -2, c"lower".as_ptr());
            ffi::lua_pushcfunction(l, fast::upper);
            ffi::lua_setfield(l, -2, c"upper".as_ptr());
            ffi::lua_pop(l, 1);
        })
    }
}

/// Characters that make a `string.find` pattern a pattern (Lua's `SPECIALS`).
const LUA_SPECIALS: &[u8] = b"^$*+?.([%-";

/// Where `string.find(s, p, init, plain)` finds `p` when that is a plain substring search —
/// `plain` true or `p` without pattern characters, as Lua decides — done with a SIMD
/// substring search. Lua's own runs `memchr` + `memcmp` at every occurrence of the needle's
/// first byte (a keyword search over a body was most of a keyword policy's time).
/// `None`: not a plain search (Lua's own function answers); `Some(None)`: no match;
/// `Some(Some((first, last)))`: 1-based positions.
fn plain_find(s: &[u8], p: &[u8], init: i64, plain: bool) -> Option<Option<(i64, i64)>> {
    if !plain && p.iter().any(|c| LUA_SPECIALS.contains(c)) {
        return None;
    }
    // Lua's posrelatI: 0 and anything before the start mean 1; negative counts from the end.
    let len = s.len() as i64;
    let start = match init {
        i if i > 0 => i,
        0 => 1,
        i if i < -len => 1,
        i => len + i + 1,
    } - 1;
    if start > len {
        return Some(None);
    }
    let start = start as usize;
    Some(memchr::memmem::find(&s[start..], p).map(|at| {
        let first = (start + at) as i64 + 1;
        (first, first + p.len() as i64 - 1)
    }))
}

/// The C functions of [`fast_case_functions`].
mod fast {
    use mlua::ffi;
    use std::os::raw::c_int;

    /// The string at `idx` if it is one (not a number: Lua's own functions convert those,
    /// and leave it to them). Borrowed from the stack: valid while the value stays there.
    pub(super) unsafe fn string<'a>(l: *mut ffi::lua_State, idx: c_int) -> Option<&'a [u8]> {
        unsafe {
            if ffi::lua_type(l, idx) != ffi::LUA_TSTRING {
                return None;
            }
            let mut len = 0usize;
            let p = ffi::lua_tolstring(l, idx, &mut len);
            Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
        }
    }

    pub unsafe extern "C-unwind" fn find(l: *mut ffi::lua_State) -> c_int {
        unsafe {
            let init = match ffi::lua_type(l, 3) {
                ffi::LUA_TNONE | ffi::LUA_TNIL => Some(1),
                ffi::LUA_TNUMBER if ffi::lua_isinteger(l, 3) != 0 => Some(ffi::lua_tointeger(l, 3)),
                _ => None,
            };
            let plain = match ffi::lua_type(l, 4) {
                ffi::LUA_TNONE | ffi::LUA_TNIL => Some(false),
                ffi::LUA_TBOOLEAN => Some(ffi::lua_toboolean(l, 4) != 0),
                _ => None,
            };
            // The strings stay on the stack (anchored) while they are read.
            let found = match (string(l, 1), string(l, 2), init, plain) {
                (Some(s), Some(p), Some(init), Some(plain)) => super::plain_find(s, p, init, plain),
                _ => None,
            };
            match found {
                Some(Some((first, last))) => {
                    ffi::lua_pushinteger(l, first);
                    ffi::lua_pushinteger(l, last);
                    2
                }
                Some(None) => {
                    ffi::lua_pushnil(l);
                    1
                }
                None => {
                    // Everything else: Lua's own find, with the same arguments.
                    let n = ffi::lua_gettop(l);
                    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
                    ffi::lua_insert(l, 1);
                    ffi::lua_callk(l, n, ffi::LUA_MULTRET, 0, None);
                    ffi::lua_gettop(l)
                }
            }
        }
    }

    unsafe fn case(l: *mut ffi::lua_State, upper: bool) -> c_int {
        unsafe {
            let mut len = 0usize;
            // Raises Lua's own "bad argument #1" for a non-string; numbers become strings.
            let s = ffi::luaL_checklstring(l, 1, &mut len);
            let mut b: ffi::luaL_Buffer = std::mem::zeroed();
            ffi::luaL_buffinit(l, &mut b);
            let out = ffi::luaL_prepbuffsize(&mut b, len);
            // Read after `prepbuffsize`: a collection it runs leaves the argument (anchored
            // at index 1) where it is.
            let src = std::slice::from_raw_parts(s.cast::<u8>(), len);
            let dst = std::slice::from_raw_parts_mut(out.cast::<u8>(), len);
            for (d, &c) in dst.iter_mut().zip(src) {
                *d = if upper {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                };
            }
            ffi::luaL_pushresultsize(&mut b, len);
            1
        }
    }

    pub unsafe extern "C-unwind" fn lower(l: *mut ffi::lua_State) -> c_int {
        unsafe { case(l, false) }
    }

    pub unsafe extern "C-unwind" fn upper(l: *mut ffi::lua_State) -> c_int {
        unsafe { case(l, true) }
    }
}

impl LuaPlugin {
    /// Loads and checks a script; `states` copies are made (one per worker thread).
    pub fn load(
        path: &Path,
        source: &str,
        manifest: Manifest,
        host: &Arc<HostServices>,
        states: usize,
    ) -> Result<LuaPlugin, String> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = path.display();
        let regexes = Arc::new(RegexCache::default());
        let keywords = host.analyzers.keywords(path, &manifest)?;
        let mut pool = Vec::with_capacity(states.max(1));
        for _ in 0..states.max(1) {
            pool.push(new_state(&name, path, source, &manifest, host, &regexes, &keywords)?);
        }
        let first = &pool[0].lua;
        let g = first.globals();
        let hooks: HashSet<Hook> = pool[0].functions.iter().map(|(h, _)| *h).collect();
        if hooks.is_empty() {
            return Err(format!(
                "{shown}: defines none of on_receive, on_route, on_deliver, on_fetch"
            ));
        }
        let stages = match g.get::<Value>("stages") {
            Ok(Value::Nil) => vec![Stage::Data],
            Ok(Value::Table(t)) => {
                let mut out = Vec::new();
                for v in t.sequence_values::<String>() {
                    let v = v.map_err(|e| format!("{shown}: stages: {}", lua_error(&e)))?;
                    out.push(Stage::parse(&v).ok_or_else(|| format!("{shown}: stages: unknown stage {v:?}"))?);
                }
                out
            }
            _ => {
                return Err(format!(
                    "{shown}: stages must be a list like {{ \"connect\", \"data\" }}"
                ));
            }
        };
        Ok(LuaPlugin {
            uses_async: source.contains("dns"),
            manifest,
            states: pool.into_iter().map(tokio::sync::Mutex::new).collect(),
            hooks,
            stages,
        })
    }

    pub fn hooks(&self) -> &HashSet<Hook> {
        &self.hooks
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    async fn acquire(&self) -> tokio::sync::MutexGuard<'_, State> {
        for s in &self.states {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        // All busy: wait for one (spread waiters by address so they do not all pile on one).
        let i = (self as *const _ as usize / 64) % self.states.len();
        self.states[i].lock().await
    }

    pub async fn call(&self, hook: Hook, event: &Arc<Event>) -> Result<Verdict, PluginError> {
        let mut st = self.acquire().await;
        let Some(f) = st.functions.iter().find(|(h, _)| *h == hook).map(|(_, f)| f.clone()) else {
            return Ok(Verdict::default());
        };
        st.current.show(Some(event));
        let arg = st.event.clone();
        st.budget.arm(&self.manifest);
        let result = if self.uses_async {
            // The hook stops Lua code; the timeout also covers time spent waiting on DNS.
            let limit = Duration::from_millis(self.manifest.timeout_ms);
            tokio::time::timeout(limit, f.call_async::<Value>(arg)).await
        } else {
            // No waiting host calls: the instruction/time hook alone bounds the call.
            Ok(f.call::<Value>(arg))
        };
        st.budget.disarm();
        // Nothing of this message stays with the state (a script may keep `event` in a global).
        st.current.show(None);
        // Lua's incremental collector lags behind a state that makes garbage on every call:
        // its heap drifted up by cycles until `memory_mb` failed healthy scripts after some
        // 10^5 messages. A full collection once the heap is halfway from what was live after
        // the last one to the limit (and past half the limit) keeps the budget a bound on what
        // a script really holds, at a cost spread over that much garbage.
        let limit = (self.manifest.memory_mb as usize) << 20;
        if st.lua.used_memory() > (limit / 2).max(st.live + limit.saturating_sub(st.live) / 2) {
            let _ = st.lua.gc_collect();
            st.live = st.lua.used_memory();
        }
        let value = match result {
            Err(_) => return Err(PluginError::Timeout),
            Ok(Err(e)) => {
                return Err(match st.budget.exceeded.load(Ordering::SeqCst) {
                    1 => PluginError::Budget("instruction budget exceeded".into()),
                    2 => PluginError::Timeout,
                    _ if matches!(e, mlua::Error::MemoryError(_)) => PluginError::Memory,
                    _ => match lua_error(&e) {
                        m if m.contains("out of memory") || m.contains("not enough memory") => PluginError::Memory,
                        m => PluginError::Runtime(m),
                    },
                });
            }
            Ok(Ok(v)) => v,
        };
        match value {
            Value::Nil => Ok(Verdict::default()),
            v => verdict::from_lua(&st.lua, v).map_err(PluginError::BadVerdict),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The views show exactly the event's serde form (every field, nested tables included,
    /// through `__index` and through `pairs`), nothing once the call has ended, and can be
    /// neither written nor have their metatables read or replaced.
    #[test]
    fn views_show_the_event_as_its_serde_form() {
        use crate::hooks::contract::{AuthResults, Envelope, Header, Session, Stage, Symbol};
        let message = Message {
            subject: "Grüße".into(),
            from: "a@example.org".into(),
            to: vec!["b@example.test".into(), "c@example.test".into()],
            text: "body\0with NUL".into(),
            headers: vec![
                Header {
                    name: "From".into(),
                    value: "a@example.org".into(),
                },
                Header {
                    name: "Subject".into(),
                    value: "=?utf-8?q?Gr=C3=BC=C3=9Fe?=".into(),
                },
            ],
            size: 1234,
            attachments: 1,
            links: vec!["example.net".into()],
        };
        let event = Arc::new(Event {
            stage: Some(Stage::Data),
            session: Session {
                client_ip: "192.0.2.1".into(),
                helo: Some("mx.example.org".into()),
                tls: true,
                auth_user: None,
                listener: "mx".into(),
            },
            envelope: Envelope {
                mail_from: Some("a@example.org".into()),
                rcpt_to: vec!["b@example.test".into()],
            },
            recipient: Some("b@example.test".into()),
            message: Some(Arc::new(message)),
            auth: Some(AuthResults {
                spf: Some("pass".into()),
                dkim_domains: vec!["example.org".into()],
                ..Default::default()
            }),
            score: 2.5,
            symbols: vec![Symbol {
                name: "S".into(),
                score: 2.5,
                reason: "why".into(),
            }],
            mailbox: Some("INBOX".into()),
            ..Event::new(Hook::Deliver, Session::default())
        });
        let lua = Lua::new();
        let current = Arc::new(view::Current::default());
        let views = view::make(&lua, &current).unwrap();
        let opts = mlua::serde::SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false);
        lua.globals().set("event", views.event.clone()).unwrap();
        lua.globals()
            .set("expected", lua.to_value_with(&*event, opts).unwrap())
            .unwrap();
        let check = lua.load(
            r#"
            local function same(a, b, path)
              if type(b) ~= "table" then
                assert(a == b, path .. ": " .. tostring(a) .. " ~= " .. tostring(b))
                return
              end
              assert(type(a) == "table" or type(a) == "userdata", path .. " is a " .. type(a))
              for k, v in pairs(b) do same(a[k], v, path .. "." .. k) end
              for k, v in pairs(a) do
                assert(b[k] ~= nil, path .. "." .. k .. " is extra")
                same(v, b[k], path .. "." .. k)
              end
            end
            same(event, expected, "event")
            return event.message.subject, event.hook, #event.message.headers
        "#,
        );
        current.show(Some(&event));
        let (subject, hook, headers): (String, String, i64) = check.eval().unwrap();
        assert_eq!((subject.as_str(), hook.as_str(), headers), ("Grüße", "deliver", 2));
        let c = current.clone();
        let show_none = lua
            .create_function(move |_, ()| {
                c.show(None);
                Ok(())
            })
            .unwrap();
        lua.globals().set("show_none", show_none).unwrap();
        let after: String = lua
            .load(
                r#"
            local m = event.message
            show_none()
            local out = {}
            if event.hook ~= nil or event.message ~= nil or m.subject ~= nil then out[#out + 1] = "fields after the call" end
            if next((select(2, pairs(event)))) ~= nil then out[#out + 1] = "pairs after the call" end
            if pcall(function() event.score = 1 end) then out[#out + 1] = "event written" end
            if pcall(function() m.subject = "x" end) then out[#out + 1] = "message written" end
            if getmetatable(event) ~= false or getmetatable(m) ~= false then out[#out + 1] = "metatable shown" end
            if pcall(setmetatable, event, {}) then out[#out + 1] = "metatable replaced" end
            if event[1] ~= nil or event[event] ~= nil then out[#out + 1] = "odd keys" end
            return table.concat(out, "; ")
        "#,
            )
            .eval()
            .unwrap();
        assert_eq!(after, "");
    }

    /// The fast `string.find` answers exactly as Lua's own, for plain searches and for
    /// everything it hands back (patterns, odd arguments).
    #[test]
    fn string_find_fast_path_agrees_with_lua() {
        let lua = Lua::new();
        lua.globals()
            .set(
                "lua_find",
                lua.globals()
                    .get::<mlua::Table>("string")
                    .unwrap()
                    .get::<mlua::Function>("find")
                    .unwrap(),
            )
            .unwrap();
        fast_case_functions(&lua).unwrap();
        let cases = r#"
            local s = "Hello winner, you are a WINNER of the lottery. winner!"
            local cases = {
              {s, "winner"}, {s, "winner", 1, true}, {s, "winner", 10, true}, {s, "winner", -7, true},
              {s, "winner", -1000, true}, {s, "winner", 0, true}, {s, "winner", 100, true},
              {s, "winner", #s + 1, true}, {s, "", 1, true}, {s, "", #s + 1}, {s, "", #s + 2},
              {s, "nothing", 1, true}, {s, "w.n", 1, true}, {s, "w.n"}, {s, "(%a+)!"},
              {s, "lottery", 1, false}, {"", ""}, {"", "a"}, {"a\0b", "\0b", 1, true},
              {s, "winner", 2.0, true}, {12345, "23"}, {s, "WIN", 1, 1},
            }
            local out = {}
            for i, c in ipairs(cases) do
              local a = table.pack(string.find(table.unpack(c, 1, 4)))
              local b = table.pack(lua_find(table.unpack(c, 1, 4)))
              out[#out + 1] = a.n == b.n and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
                and "" or ("case " .. i .. " differs")
            end
            return table.concat(out)
        "#;
        let differs: String = lua.load(cases).eval().unwrap();
        assert_eq!(differs, "");
        // The method form goes through the same table.
        let (a, b): (i64, i64) = lua.load(r#"return ("xxabc"):find("abc", 1, true)"#).eval().unwrap();
        assert_eq!((a, b), (3, 5));
    }

    /// The C `string.lower` / `string.upper` answer as Lua's own: ASCII letters change, every
    /// other byte (NUL, UTF-8, Latin-1) stays, numbers are converted, and a bad argument is
    /// Lua's own error, catchable by `pcall`.
    #[test]
    fn string_case_fast_paths_agree_with_lua() {
        let lua = Lua::new();
        let string: mlua::Table = lua.globals().get("string").unwrap();
        lua.globals()
            .set("lua_lower", string.get::<mlua::Function>("lower").unwrap())
            .unwrap();
        lua.globals()
            .set("lua_upper", string.get::<mlua::Function>("upper").unwrap())
            .unwrap();
        fast_case_functions(&lua).unwrap();
        let differs: String = lua
            .load(
                r#"
            local cases = { "", "Hello WORLD 123", "a\0B\255\200z", "Grüße ÀÉ", string.rep("MiXeD", 2000), 42, 1.5 }
            local out = {}
            for i, c in ipairs(cases) do
              if string.lower(c) ~= lua_lower(c) or string.upper(c) ~= lua_upper(c)
                 or ("x" .. tostring(c)):upper() ~= lua_upper("x" .. tostring(c)) then
                out[#out + 1] = "case " .. i .. " differs"
              end
            end
            local ok, err = pcall(string.lower, {})
            if ok or not tostring(err):find("bad argument #1", 1, true) then
              out[#out + 1] = "error differs: " .. tostring(err)
            end
            return table.concat(out)
        "#,
            )
            .eval()
            .unwrap();
        assert_eq!(differs, "");
    }
}
