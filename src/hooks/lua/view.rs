//! `event` and `event.message` for Lua: read-only views whose fields are made when a script
//! reads them (building the whole event as tables cost more than most policies' own work).
//! The event is shared with the chain, not copied.
//!
//! Each state has one pair of views, made once and pointed at the event of the call in
//! progress ([`Current`]; at nothing between calls, where every field reads `nil`): making
//! two userdata per call, each with a finalizer, was a third of a small policy's cost.
//!
//! The views are plain Lua userdata (no payload, no finalizer) whose metatables hold C
//! functions: `__index` and `__pairs` read the current event straight from the Lua stack.
//! Through mlua's callback machinery each field read cost about a microsecond before any
//! work (argument conversion, registry references, the error guard), and a chain reads a
//! dozen fields per message. The C functions own nothing that needs dropping, so a Lua error
//! raised inside them (the memory budget) may unwind through them. `__metatable` is `false`:
//! a script can neither see nor change the metatables. Writing a field is Lua's usual error
//! for a userdata without `__newindex`.

use super::super::contract::{Envelope, Event, Header, Message, Session, Symbol};
use mlua::{AnyUserData, Lua, LuaSerdeExt, Value, ffi};
use std::ffi::{CStr, c_void};
use std::os::raw::c_int;
use std::ptr;
use std::sync::{Arc, Mutex};

/// What a state's views show: the event of the call in progress, or nothing.
#[derive(Default)]
pub(super) struct Current(Mutex<Option<Arc<Event>>>);

impl Current {
    /// Shows `event` (`None`: nothing).
    pub(super) fn show(&self, event: Option<&Arc<Event>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = event.cloned();
    }

    pub(super) fn event(&self) -> Option<Arc<Event>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The shown event, for the C functions: borrowed, not cloned (an `Arc` held by a C
    /// function would leak its count if a Lua error unwound through it).
    ///
    /// # Safety
    /// Only while the state runs: the state's owner does not call [`Current::show`] then, so
    /// the event stays where the lock found it.
    unsafe fn shown<'a>(&self) -> Option<&'a Event> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e: *const Event = guard.as_deref()?;
        drop(guard);
        unsafe { e.as_ref() }
    }
}

/// The views of one state.
pub(super) struct Views {
    pub event: AnyUserData,
    /// The message view's address: what `mailgate.bayes(event.message)` and the other
    /// analyzers check their argument against.
    pub message: usize,
}

/// Makes a state's views over `current`, which must outlive the state (the state keeps an
/// `Arc` of it; the metatables hold its address).
pub(super) fn make(lua: &Lua, current: &Arc<Current>) -> mlua::Result<Views> {
    let c = current.clone();
    let auth = lua.create_function(move |lua, ()| match c.event().and_then(|e| e.auth.clone()) {
        Some(a) => lua.to_value_with(
            &a,
            mlua::serde::SerializeOptions::new()
                .serialize_none_to_null(false)
                .serialize_unit_to_null(false),
        ),
        None => Ok(Value::Nil),
    })?;
    let cur = Arc::as_ptr(current).cast_mut().cast::<c_void>();
    /// Pushes a view: a payload-less userdata whose hidden metatable has `index` and `pairs`,
    /// each a closure over `cur`, then the values at `more` (stack indices).
    unsafe fn push_view(
        l: *mut ffi::lua_State,
        cur: *mut c_void,
        [index, pairs]: [ffi::lua_CFunction; 2],
        more: &[c_int],
    ) {
        unsafe {
            ffi::lua_newuserdatauv(l, 0, 0);
            ffi::lua_createtable(l, 0, 3);
            for (name, f) in [(c"__index", index), (c"__pairs", pairs)] {
                ffi::lua_pushlightuserdata(l, cur);
                for &i in more {
                    ffi::lua_pushvalue(l, i);
                }
                ffi::lua_pushcclosure(l, f, 1 + more.len() as c_int);
                ffi::lua_setfield(l, -2, name.as_ptr());
            }
            ffi::lua_pushboolean(l, 0);
            ffi::lua_setfield(l, -2, c"__metatable".as_ptr());
            ffi::lua_setmetatable(l, -2);
        }
    }
    // SAFETY: runs protected; at most 7 slots (checked); leaves the two views on the stack.
    let (message, event): (AnyUserData, AnyUserData) = unsafe {
        lua.exec_raw(auth, |l| {
            ffi::luaL_checkstack(l, 8, ptr::null());
            // [auth] -> [auth, message] -> [auth, message, event]
            push_view(l, cur, [message_index, message_pairs], &[]);
            // The event's functions also get the message view and the `auth` reader.
            push_view(l, cur, [event_index, event_pairs], &[2, 1]);
            ffi::lua_remove(l, 1); // [message, event]
        })?
    };
    Ok(Views {
        message: message.to_pointer() as usize,
        event,
    })
}

const EVENT_FIELDS: [&CStr; 12] = [
    c"hook",
    c"stage",
    c"session",
    c"envelope",
    c"recipient",
    c"default_route",
    c"message",
    c"auth",
    c"score",
    c"symbols",
    c"mailbox",
    c"user",
];

const MESSAGE_FIELDS: [&CStr; 8] = [
    c"subject",
    c"from",
    c"to",
    c"text",
    c"headers",
    c"size",
    c"attachments",
    c"links",
];

/// The [`Current`] a view's C function was made over (its first upvalue).
unsafe fn current<'a>(l: *mut ffi::lua_State) -> &'a Current {
    unsafe { &*ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)).cast::<Current>() }
}

unsafe fn push_str(l: *mut ffi::lua_State, s: &str) {
    unsafe {
        ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
    }
}

unsafe fn push_opt(l: *mut ffi::lua_State, s: Option<&str>) {
    unsafe {
        match s {
            Some(s) => push_str(l, s),
            None => ffi::lua_pushnil(l),
        }
    }
}

/// Sets field `k` of the table at the top to the string `v` (nothing for `None`).
unsafe fn set_str(l: *mut ffi::lua_State, k: &CStr, v: Option<&str>) {
    unsafe {
        if let Some(v) = v {
            push_str(l, v);
            ffi::lua_setfield(l, -2, k.as_ptr());
        }
    }
}

/// A new sequence of `items`, each pushed (one value) by `push`.
unsafe fn push_list<T>(l: *mut ffi::lua_State, items: &[T], push: impl Fn(*mut ffi::lua_State, &T)) {
    unsafe {
        ffi::lua_createtable(l, items.len().min(i32::MAX as usize) as i32, 0);
        for (i, item) in items.iter().enumerate() {
            push(l, item);
            ffi::lua_rawseti(l, -2, i as ffi::lua_Integer + 1);
        }
    }
}

unsafe fn push_strings(l: *mut ffi::lua_State, v: &[String]) {
    unsafe { push_list(l, v, |l, s| push_str(l, s)) }
}

/// `{ {name = ..., value = ...}, ... }`.
unsafe fn push_headers(l: *mut ffi::lua_State, headers: &[Header]) {
    unsafe {
        push_list(l, headers, |l, h| {
            ffi::lua_createtable(l, 0, 2);
            set_str(l, c"name", Some(&h.name));
            set_str(l, c"value", Some(&h.value));
        })
    }
}

unsafe fn push_session(l: *mut ffi::lua_State, s: &Session) {
    unsafe {
        ffi::lua_createtable(l, 0, 5);
        set_str(l, c"client_ip", Some(&s.client_ip));
        set_str(l, c"helo", s.helo.as_deref());
        ffi::lua_pushboolean(l, c_int::from(s.tls));
        ffi::lua_setfield(l, -2, c"tls".as_ptr());
        set_str(l, c"auth_user", s.auth_user.as_deref());
        set_str(l, c"listener", Some(&s.listener));
    }
}

unsafe fn push_envelope(l: *mut ffi::lua_State, e: &Envelope) {
    unsafe {
        ffi::lua_createtable(l, 0, 2);
        set_str(l, c"mail_from", e.mail_from.as_deref());
        push_strings(l, &e.rcpt_to);
        ffi::lua_setfield(l, -2, c"rcpt_to".as_ptr());
    }
}

/// `{ {name, score, reason}, ... }`.
unsafe fn push_symbols(l: *mut ffi::lua_State, symbols: &[Symbol]) {
    unsafe {
        push_list(l, symbols, |l, s| {
            ffi::lua_createtable(l, 0, 3);
            set_str(l, c"name", Some(&s.name));
            ffi::lua_pushnumber(l, s.score);
            ffi::lua_setfield(l, -2, c"score".as_ptr());
            set_str(l, c"reason", Some(&s.reason));
        })
    }
}

/// Pushes field `k` of `e` (one value, `nil` for an unknown field). Runs in an event view's C
/// function (the upvalues of [`make`]).
unsafe fn push_event_field(l: *mut ffi::lua_State, e: &Event, k: &[u8]) {
    unsafe {
        match k {
            b"hook" => push_str(l, e.hook.name()),
            b"stage" => push_opt(l, e.stage.map(|s| s.name())),
            b"session" => push_session(l, &e.session),
            b"envelope" => push_envelope(l, &e.envelope),
            b"recipient" => push_opt(l, e.recipient.as_deref()),
            b"default_route" => push_opt(l, e.default_route.as_deref()),
            b"message" if e.message.is_some() => ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2)),
            b"auth" if e.auth.is_some() => {
                ffi::lua_pushvalue(l, ffi::lua_upvalueindex(3));
                ffi::lua_call(l, 0, 1);
            }
            b"score" => ffi::lua_pushnumber(l, e.score),
            b"symbols" => push_symbols(l, &e.symbols),
            b"mailbox" => push_opt(l, e.mailbox.as_deref()),
            b"user" => push_opt(l, e.user.as_deref()),
            _ => ffi::lua_pushnil(l),
        }
    }
}

unsafe fn push_message_field(l: *mut ffi::lua_State, m: &Message, k: &[u8]) {
    unsafe {
        match k {
            b"subject" => push_str(l, &m.subject),
            b"from" => push_str(l, &m.from),
            b"text" => push_str(l, &m.text),
            b"to" => push_strings(l, &m.to),
            b"headers" => push_headers(l, &m.headers),
            b"size" => ffi::lua_pushinteger(l, m.size as ffi::lua_Integer),
            b"attachments" => ffi::lua_pushinteger(l, m.attachments as ffi::lua_Integer),
            b"links" => push_strings(l, &m.links),
            _ => ffi::lua_pushnil(l),
        }
    }
}

/// Pushes one field of a view (one value).
type FieldPusher = unsafe fn(*mut ffi::lua_State, &Event, &[u8]);

// The C functions below use at most six stack slots (a header list: the list, an item, a
// string; `pairs` adds its table and `next`); Lua gives every C function twenty
// (`LUA_MINSTACK`), so they do not check.

/// `view[key]`: (view, key) on the stack.
unsafe fn index(l: *mut ffi::lua_State, push: FieldPusher) -> c_int {
    unsafe {
        match (current(l).shown(), super::fast::string(l, 2)) {
            (Some(e), Some(k)) => push(l, e, k),
            _ => ffi::lua_pushnil(l),
        }
        1
    }
}

/// `pairs(view)`: `next` over a table of every field, built at once.
unsafe fn pairs(l: *mut ffi::lua_State, fields: &[&CStr], push: FieldPusher) -> c_int {
    unsafe {
        ffi::lua_createtable(l, 0, fields.len() as c_int);
        if let Some(e) = current(l).shown() {
            for k in fields {
                push(l, e, k.to_bytes());
                ffi::lua_setfield(l, -2, k.as_ptr()); // a nil value sets nothing
            }
        }
        ffi::lua_getglobal(l, c"next".as_ptr());
        ffi::lua_insert(l, -2);
        ffi::lua_pushnil(l);
        3
    }
}

unsafe fn message_field(l: *mut ffi::lua_State, e: &Event, k: &[u8]) {
    unsafe {
        match &e.message {
            Some(m) => push_message_field(l, m, k),
            None => ffi::lua_pushnil(l),
        }
    }
}

unsafe extern "C-unwind" fn event_index(l: *mut ffi::lua_State) -> c_int {
    unsafe { index(l, push_event_field) }
}

unsafe extern "C-unwind" fn event_pairs(l: *mut ffi::lua_State) -> c_int {
    unsafe { pairs(l, &EVENT_FIELDS, push_event_field) }
}

unsafe extern "C-unwind" fn message_index(l: *mut ffi::lua_State) -> c_int {
    unsafe { index(l, message_field) }
}

unsafe extern "C-unwind" fn message_pairs(l: *mut ffi::lua_State) -> c_int {
    unsafe { pairs(l, &MESSAGE_FIELDS, message_field) }
}
