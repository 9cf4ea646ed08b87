//! Lua policies (mlua, Lua 5.4 vendored).
//!
//! Each plugin gets a small pool of sandboxed states (one per worker thread), each loaded
//! with the script: only the `table`, `string`, `math`, `utf8` and `coroutine` libraries;
//! `io`, `os`, `package`, `debug`, `require`, `load`, `dofile`... do not exist. Budgets per
//! call: VM instructions (a global hook every 1000 instructions, which also stops loops inside
//! coroutines), wall time (checked in the same hook, and by a timeout around the call for time
//! spent in host calls), and heap (`set_memory_limit`). After an error the state stays usable.

use super::PluginError;
use super::contract::{Event, Hook, Message, Stage, Verdict};
use super::host::{HostServices, RegexCache};
use super::manifest::Manifest;
use mlua::{HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Value, VmState};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod verdict;

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
    /// The `event` argument of every call ([`LuaEvent`]), and what it and its message
    /// ([`LuaMessage`]) show.
    event: mlua::AnyUserData,
    event_slot: Slot<Event>,
    message_slot: Slot<Message>,
    /// Heap in use after the last full collection.
    live: usize,
}

impl State {
    /// Points the state's event and message views at `event` (`None`: at nothing).
    fn point(&self, event: Option<&Arc<Event>>) {
        *self.message_slot.lock().unwrap_or_else(|p| p.into_inner()) = event.and_then(|e| e.message.clone());
        *self.event_slot.lock().unwrap_or_else(|p| p.into_inner()) = event.cloned();
    }
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
    keywords: &Arc<crate::spam::keywords::Rules>,
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
    (|| -> mlua::Result<()> {
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
        install_host_table(&lua, name, manifest, host, regexes, keywords, &budget)?;
        fast_case_functions(&lua)?;
        lua.set_memory_limit((manifest.memory_mb as usize) << 20)?;
        Ok(())
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
    let (event_slot, message_slot) = (Slot::default(), Slot::default());
    let event = (|| -> mlua::Result<_> {
        let event = lua.create_userdata(LuaEvent(event_slot.clone()))?;
        event.set_user_value(lua.create_userdata(LuaMessage(message_slot.clone()))?)?;
        Ok(event)
    })()
    .map_err(|e| lua_error(&e))?;
    Ok(State {
        lua,
        budget,
        functions,
        event,
        event_slot,
        message_slot,
        live: 0,
    })
}

fn install_host_table(
    lua: &Lua,
    plugin: &str,
    manifest: &Manifest,
    host: &Arc<HostServices>,
    regexes: &Arc<RegexCache>,
    keywords: &Arc<crate::spam::keywords::Rules>,
    budget: &Arc<Budget>,
) -> mlua::Result<()> {
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
    let h = host.clone();
    t.set(
        "bayes",
        lua.create_function(move |lua, msg: mlua::AnyUserData| {
            let m = LuaMessage::of(&msg)?;
            match crate::spam::bayes_result(&h.spam, &m) {
                Some(j) => lua.to_value(&j),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    let rules = keywords.clone();
    t.set(
        "keywords",
        lua.create_function(move |lua, msg: mlua::AnyUserData| {
            let m = LuaMessage::of(&msg)?;
            lua.to_value(&rules.matches(&m))
        })?,
    )?;
    t.set(
        "letters",
        lua.create_function(move |lua, msg: mlua::AnyUserData| {
            let m = LuaMessage::of(&msg)?;
            lua.to_value(&crate::spam::letter_findings(&m))
        })?,
    )?;
    t.set("now", lua.create_function(|_, ()| Ok(crate::store::now_secs()))?)?;
    t.set("config", lua.to_value(&manifest.config)?)?;
    t.set("plugin", plugin)?;
    lua.globals().set("mailgate", t)?;
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
    /// and leave it to them).
    unsafe fn string<'a>(l: *mut ffi::lua_State, idx: c_int) -> Option<&'a [u8]> {
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

/// `event.message` for Lua: fields are made when a script reads them, so a policy that only
/// looks at the subject never copies the body text or builds the header list. One per state,
/// pointed at the message of the call in progress (and at nothing between calls).
#[derive(Default)]
struct LuaMessage(Slot<Message>);

impl LuaMessage {
    /// The message a `mailgate.*` analyzer was given (`event.message` of the current call).
    fn of(ud: &mlua::AnyUserData) -> mlua::Result<Arc<Message>> {
        ud.borrow::<LuaMessage>()?
            .current()
            .ok_or_else(|| mlua::Error::runtime("the message of a call that has ended"))
    }

    fn current(&self) -> Option<Arc<Message>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

const MESSAGE_FIELDS: [&str; 8] = [
    "subject",
    "from",
    "to",
    "text",
    "headers",
    "size",
    "attachments",
    "links",
];

fn message_field(lua: &Lua, m: &Message, key: &str) -> mlua::Result<Value> {
    Ok(match key {
        "subject" => Value::String(lua.create_string(&m.subject)?),
        "from" => Value::String(lua.create_string(&m.from)?),
        "text" => Value::String(lua.create_string(&m.text)?),
        "to" => Value::Table(lua.create_sequence_from(m.to.iter().map(String::as_str))?),
        "headers" => Value::Table(header_list(lua, &m.headers)?),
        "size" => Value::Integer(m.size as i64),
        "attachments" => Value::Integer(m.attachments as i64),
        "links" => Value::Table(lua.create_sequence_from(m.links.iter().map(String::as_str))?),
        _ => Value::Nil,
    })
}

/// A table built by `fill` with raw Lua calls in one protected call: through mlua's safe API
/// every table and every field was a protected call of its own (8.7 µs for the bench
/// message's headers, most of the header policy's cost). `fill` must leave exactly one new
/// table on the stack and use at most three slots (what `exec_raw` checks for).
fn raw_table(lua: &Lua, fill: impl FnOnce(*mut mlua::ffi::lua_State)) -> mlua::Result<mlua::Table> {
    // SAFETY: `fill` runs protected (a memory error unwinds to exec_raw's pcall; the fillers
    // below own nothing that needs dropping) within the stack room stated above.
    unsafe { lua.exec_raw((), fill) }
}

/// The raw calls the table builders use (each on a table at the top of the stack).
mod raw {
    use mlua::ffi;
    use std::ffi::CStr;

    pub unsafe fn string(state: *mut ffi::lua_State, key: &CStr, v: &str) {
        unsafe {
            ffi::lua_pushlstring(state, v.as_ptr().cast(), v.len());
            ffi::lua_setfield(state, -2, key.as_ptr());
        }
    }

    pub unsafe fn opt_string(state: *mut ffi::lua_State, key: &CStr, v: &Option<String>) {
        if let Some(v) = v {
            unsafe { string(state, key, v) }
        }
    }

    /// A new sequence of `items`, each pushed (one value) by `push`.
    pub unsafe fn list<T>(state: *mut ffi::lua_State, items: &[T], push: impl Fn(*mut ffi::lua_State, &T)) {
        unsafe {
            ffi::lua_createtable(state, items.len().min(i32::MAX as usize) as i32, 0);
            for (i, item) in items.iter().enumerate() {
                push(state, item);
                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
            }
        }
    }

    /// `key = { strings... }`.
    pub unsafe fn strings(state: *mut ffi::lua_State, key: &CStr, v: &[String]) {
        unsafe {
            list(state, v, |state, s| {
                ffi::lua_pushlstring(state, s.as_ptr().cast(), s.len());
            });
            ffi::lua_setfield(state, -2, key.as_ptr());
        }
    }
}

/// `{ {name = ..., value = ...}, ... }`.
fn header_list(lua: &Lua, headers: &[crate::hooks::contract::Header]) -> mlua::Result<mlua::Table> {
    raw_table(lua, |state| unsafe {
        raw::list(state, headers, |state, h| {
            mlua::ffi::lua_createtable(state, 0, 2);
            raw::string(state, c"name", &h.name);
            raw::string(state, c"value", &h.value);
        })
    })
}

/// `event.session`.
fn session_table(lua: &Lua, s: &crate::hooks::contract::Session) -> mlua::Result<mlua::Table> {
    raw_table(lua, |state| unsafe {
        mlua::ffi::lua_createtable(state, 0, 5);
        raw::string(state, c"client_ip", &s.client_ip);
        raw::opt_string(state, c"helo", &s.helo);
        mlua::ffi::lua_pushboolean(state, i32::from(s.tls));
        mlua::ffi::lua_setfield(state, -2, c"tls".as_ptr());
        raw::opt_string(state, c"auth_user", &s.auth_user);
        raw::string(state, c"listener", &s.listener);
    })
}

/// `event.envelope`.
fn envelope_table(lua: &Lua, e: &crate::hooks::contract::Envelope) -> mlua::Result<mlua::Table> {
    raw_table(lua, |state| unsafe {
        mlua::ffi::lua_createtable(state, 0, 2);
        raw::opt_string(state, c"mail_from", &e.mail_from);
        raw::strings(state, c"rcpt_to", &e.rcpt_to);
    })
}

/// `event.symbols`: `{ {name, score, reason}, ... }`.
fn symbol_list(lua: &Lua, symbols: &[crate::hooks::contract::Symbol]) -> mlua::Result<mlua::Table> {
    raw_table(lua, |state| unsafe {
        raw::list(state, symbols, |state, s| {
            mlua::ffi::lua_createtable(state, 0, 3);
            raw::string(state, c"name", &s.name);
            mlua::ffi::lua_pushnumber(state, s.score);
            mlua::ffi::lua_setfield(state, -2, c"score".as_ptr());
            raw::string(state, c"reason", &s.reason);
        })
    })
}

/// `pairs(view)`: every field, built at once into a table.
fn pairs_of(
    lua: &Lua,
    keys: &[&str],
    field: impl Fn(&str) -> mlua::Result<Value>,
) -> mlua::Result<(mlua::Function, mlua::Table, Value)> {
    let t = lua.create_table_with_capacity(0, keys.len())?;
    for k in keys {
        t.raw_set(*k, field(k)?)?;
    }
    let next: mlua::Function = lua.globals().raw_get("next")?;
    Ok((next, t, Value::Nil))
}

impl mlua::UserData for LuaMessage {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(mlua::MetaMethod::Index, |lua, this, key: mlua::LuaString| {
            match this.current() {
                Some(m) => message_field(lua, &m, &key.to_str()?),
                None => Ok(Value::Nil),
            }
        });
        methods.add_meta_method(mlua::MetaMethod::Pairs, |lua, this, ()| {
            let m = this.current();
            pairs_of(lua, if m.is_some() { &MESSAGE_FIELDS } else { &[] }, |k| {
                message_field(lua, m.as_ref().expect("fields only with a message"), k)
            })
        });
    }
}

/// The event for Lua: a read-only view whose fields are made when a script reads them
/// (building the whole event as tables cost more than most policies' own work). The event
/// is shared with the chain, not copied. Like [`LuaMessage`], one per state, re-pointed for
/// each call: making two userdata per call (each with a finalizer) was a third of a small
/// policy's cost and most of its garbage. Its user value is the state's `LuaMessage`.
#[derive(Default)]
struct LuaEvent(Slot<Event>);

/// What a view shows: set by the state for a call, read by the view's metamethods.
type Slot<T> = Arc<Mutex<Option<Arc<T>>>>;

const EVENT_FIELDS: [&str; 12] = [
    "hook",
    "stage",
    "session",
    "envelope",
    "recipient",
    "default_route",
    "message",
    "auth",
    "score",
    "symbols",
    "mailbox",
    "user",
];

fn event_field(lua: &Lua, ud: &mlua::AnyUserData, key: &str) -> mlua::Result<Value> {
    let Some(e) = ud
        .borrow::<LuaEvent>()?
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    else {
        return Ok(Value::Nil); // kept past its call
    };
    let opts = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let opt_str = |s: &Option<String>| -> mlua::Result<Value> {
        match s {
            Some(s) => Ok(Value::String(lua.create_string(s)?)),
            None => Ok(Value::Nil),
        }
    };
    Ok(match key {
        "hook" => lua.to_value(&e.hook)?,
        "stage" => match e.stage {
            Some(s) => lua.to_value(&s)?,
            None => Value::Nil,
        },
        "session" => Value::Table(session_table(lua, &e.session)?),
        "envelope" => Value::Table(envelope_table(lua, &e.envelope)?),
        "recipient" => opt_str(&e.recipient)?,
        "default_route" => opt_str(&e.default_route)?,
        "message" => match &e.message {
            Some(_) => ud.user_value::<Value>()?,
            None => Value::Nil,
        },
        "auth" => match &e.auth {
            Some(a) => lua.to_value_with(a, opts)?,
            None => Value::Nil,
        },
        "score" => Value::Number(e.score),
        "symbols" => Value::Table(symbol_list(lua, &e.symbols)?),
        "mailbox" => opt_str(&e.mailbox)?,
        "user" => opt_str(&e.user)?,
        _ => Value::Nil,
    })
}

impl mlua::UserData for LuaEvent {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_function(
            mlua::MetaMethod::Index,
            |lua, (ud, key): (mlua::AnyUserData, mlua::LuaString)| event_field(lua, &ud, &key.to_str()?),
        );
        methods.add_meta_function(mlua::MetaMethod::Pairs, |lua, ud: mlua::AnyUserData| {
            pairs_of(lua, &EVENT_FIELDS, |k| event_field(lua, &ud, k))
        });
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
        let keywords = Arc::new(crate::spam::keywords::Rules::for_plugin(path, &manifest)?);
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
        st.point(Some(event));
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
        st.point(None);
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
            v => verdict::from_lua(v).map_err(PluginError::BadVerdict),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
