//! A Lua verdict table read into [`Verdict`] by hand, on the raw Lua stack.
//!
//! mlua's serde deserializer did the same at about 3 µs for a table with one header (a
//! third of a small policy's cost, paid on every message that a policy answers), and mlua's
//! `Table::for_each` still cost ~1.5 µs per verdict in the server (a protected call per
//! table, a reference per key and value). This walks the table once with `lua_next`, with the
//! same rules as `Verdict`'s serde form: unknown fields, wrong types and unknown action or
//! route names are errors, `nil` fields are absent, an integer-valued float is accepted where
//! an integer is expected (Lua 5.4 has both). Lists differ on purpose: a table with other keys
//! where a list belongs is an error (serde read its index part and dropped the rest without a
//! word), and a list ends at its first hole, as `ipairs` (and serde) read it. The
//! `policy_verdict` fuzz target holds the two readers to exactly this.
//!
//! Nothing here can raise a Lua error (no metamethods, no conversions: strings are read only
//! when they are strings, numbers only when they are numbers, `lua_checkstack` reports
//! instead of raising), so Rust values may live across the raw calls.

use super::super::contract::{Action, Header, RouteKind, Symbol, Verdict};
use mlua::{Lua, Value, ffi};
use std::os::raw::c_int;

type Result<T> = std::result::Result<T, String>;

/// A value on the stack of the state being read.
#[derive(Clone, Copy)]
struct At(*mut ffi::lua_State, c_int);

impl At {
    fn kind(self) -> &'static str {
        // SAFETY (all methods): `self.1` is a valid absolute index on the state's stack for
        // as long as the reader runs (see `from_lua`).
        unsafe {
            match ffi::lua_type(self.0, self.1) {
                ffi::LUA_TNUMBER if self.integer().is_some() => "integer",
                t => std::ffi::CStr::from_ptr(ffi::lua_typename(self.0, t))
                    .to_str()
                    .unwrap_or("?"),
            }
        }
    }

    fn is_table(self) -> bool {
        unsafe { ffi::lua_type(self.0, self.1) == ffi::LUA_TTABLE }
    }

    fn str<'a>(self) -> Option<std::result::Result<&'a str, std::str::Utf8Error>> {
        // Anchored on the stack while it is read; callers copy it.
        unsafe { super::fast::string(self.0, self.1) }.map(std::str::from_utf8)
    }

    /// The value if it is an integer (Lua 5.4's integer subtype, not a float).
    fn integer(self) -> Option<i64> {
        unsafe {
            (ffi::lua_isinteger(self.0, self.1) != 0).then(|| ffi::lua_tointegerx(self.0, self.1, std::ptr::null_mut()))
        }
    }

    fn number(self) -> Option<f64> {
        unsafe {
            match ffi::lua_type(self.0, self.1) {
                ffi::LUA_TNUMBER => Some(ffi::lua_tonumberx(self.0, self.1, std::ptr::null_mut())),
                _ => None,
            }
        }
    }

    /// Every (key, value) of the table here, raw (`lua_next`), in Lua's order.
    fn pairs(self, what: &str, mut f: impl FnMut(At, At) -> Result<()>) -> Result<()> {
        unsafe {
            if ffi::lua_checkstack(self.0, 3) == 0 {
                return Err(format!("{what}: nested too deeply"));
            }
            let top = ffi::lua_gettop(self.0);
            ffi::lua_pushnil(self.0);
            let mut out = Ok(());
            while ffi::lua_next(self.0, self.1) != 0 {
                out = f(At(self.0, top + 1), At(self.0, top + 2));
                ffi::lua_settop(self.0, top + 1); // keep the key for the next step
                if out.is_err() {
                    break;
                }
            }
            ffi::lua_settop(self.0, top);
            out
        }
    }
}

fn string(field: &str, v: At) -> Result<String> {
    match v.str() {
        Some(Ok(s)) => Ok(s.to_string()),
        Some(Err(_)) => Err(format!("{field}: not valid UTF-8")),
        None => Err(format!("{field}: expected a string, got {}", v.kind())),
    }
}

fn number(field: &str, v: At) -> Result<f64> {
    v.number()
        .ok_or_else(|| format!("{field}: expected a number, got {}", v.kind()))
}

fn code(v: At) -> Result<u16> {
    let n = number("code", v)?;
    if n.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&n) {
        Ok(n as u16)
    } else {
        Err(format!("code: {n} is not a reply code"))
    }
}

/// A Lua sequence (`{ a, b }`; `{}` is empty), each element read by `item`: elements 1, 2, …
/// up to the first missing index, as `ipairs` walks it (what follows a hole is not part of
/// the list, and is not read). Keys other than positive integers are an error.
fn list<T>(field: &str, v: At, mut item: impl FnMut(At) -> Result<T>) -> Result<Vec<T>> {
    if !v.is_table() {
        return Err(format!("{field}: expected a list, got {}", v.kind()));
    }
    // Read in table order; an element's error counts only if it is inside the sequence.
    let mut out = Vec::new();
    v.pairs(field, |k, v| {
        match k.integer() {
            Some(i) if i >= 1 => out.push((i, item(v))),
            _ => return Err(format!("{field}: expected a list, found key of type {}", k.kind())),
        }
        Ok(())
    })?;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter()
        .enumerate()
        .take_while(|(n, (i, _))| *i == *n as i64 + 1)
        .map(|(_, (_, x))| x)
        .collect()
}

/// The fields of a record-like table (`{ name = ..., value = ... }`), each handed to `field`.
fn record(what: &str, v: At, mut field: impl FnMut(&str, At) -> Result<()>) -> Result<()> {
    if !v.is_table() {
        return Err(format!("{what}: expected a table, got {}", v.kind()));
    }
    fields(v, what, &mut field)
}

fn fields(t: At, what: &str, field: &mut impl FnMut(&str, At) -> Result<()>) -> Result<()> {
    t.pairs(what, |k, v| match k.str() {
        Some(Ok(name)) => field(name, v),
        Some(Err(_)) => Err(format!("{what}: a field name is not valid UTF-8")),
        None => Err(format!("{what}: unexpected key of type {}", k.kind())),
    })
}

fn header(v: At) -> Result<Header> {
    let (mut name, mut value) = (None, None);
    record("add_headers", v, |k, v| {
        match k {
            "name" => name = Some(string("add_headers.name", v)?),
            "value" => value = Some(string("add_headers.value", v)?),
            other => {
                return Err(format!(
                    "add_headers: unknown field `{other}`, expected `name` or `value`"
                ));
            }
        }
        Ok(())
    })?;
    Ok(Header {
        name: name.ok_or("add_headers: missing field `name`")?,
        value: value.ok_or("add_headers: missing field `value`")?,
    })
}

fn symbol(v: At) -> Result<Symbol> {
    let (mut name, mut score, mut reason) = (None, None, String::new());
    record("symbols", v, |k, v| {
        match k {
            "name" => name = Some(string("symbols.name", v)?),
            "score" => score = Some(number("symbols.score", v)?),
            "reason" => reason = string("symbols.reason", v)?,
            other => return Err(format!("symbols: unknown field `{other}`")),
        }
        Ok(())
    })?;
    Ok(Symbol {
        name: name.ok_or("symbols: missing field `name`")?,
        score: score.ok_or("symbols: missing field `score`")?,
        reason,
    })
}

fn action(v: At) -> Result<Action> {
    let name = string("action", v)?;
    Action::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| format!("action: unknown action {name:?}"))
}

fn route(v: At) -> Result<RouteKind> {
    match string("route", v)?.as_str() {
        "local" => Ok(RouteKind::Local),
        "relay" => Ok(RouteKind::Relay),
        "reject" => Ok(RouteKind::Reject),
        other => Err(format!("route: unknown route {other:?} (local, relay or reject)")),
    }
}

/// Reads what a Lua hook function returned (`nil` has been handled by the caller).
pub fn from_lua(lua: &Lua, v: Value) -> Result<Verdict> {
    let mut out = None;
    // SAFETY: `v` is the only argument, at index 1; the reader raises no Lua error (module
    // comment) and leaves the stack as it found it.
    let ran = unsafe { lua.exec_raw::<()>(v, |l| out = Some(verdict(At(l, 1)))) };
    match (ran, out) {
        (Ok(()), Some(v)) => v,
        (Err(e), _) => Err(e.to_string()),
        (Ok(()), None) => Err("the verdict could not be read".into()),
    }
}

fn verdict(t: At) -> Result<Verdict> {
    if !t.is_table() {
        return Err(format!("a verdict is a table, got {}", t.kind()));
    }
    let mut out = Verdict::default();
    fields(t, "verdict", &mut |k, v| {
        match k {
            "action" => out.action = action(v)?,
            "code" => out.code = Some(code(v)?),
            "enhanced" => out.enhanced = Some(string(k, v)?),
            "text" => out.text = Some(string(k, v)?),
            "score" => out.score = Some(number(k, v)?),
            "symbol" => out.symbol = Some(string(k, v)?),
            "reason" => out.reason = Some(string(k, v)?),
            "symbols" => out.symbols = list(k, v, symbol)?,
            "folder" => out.folder = Some(string(k, v)?),
            "flags" => out.flags = list(k, v, |v| string("flags", v))?,
            "add_headers" => out.add_headers = list(k, v, header)?,
            "remove_headers" => out.remove_headers = list(k, v, |v| string("remove_headers", v))?,
            "route" => out.route = Some(route(v)?),
            "mailbox" => out.mailbox = Some(string(k, v)?),
            "host" => out.host = Some(string(k, v)?),
            other => return Err(format!("unknown field `{other}`")),
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    fn read(src: &str) -> Result<Verdict> {
        let lua = Lua::new();
        let v = lua.load(src).eval::<Value>().unwrap();
        from_lua(&lua, v)
    }

    #[test]
    fn reads_every_field_as_serde_did() {
        let v = read(
            r#"{ action = "reject", code = 550, enhanced = "5.7.1", text = "no", score = 2,
                 symbol = "S", reason = "r", symbols = { { name = "A", score = 1.5 } },
                 folder = "Junk", flags = { "\\Seen" }, add_headers = { { name = "X-A", value = "1" } },
                 remove_headers = { "X-B" }, route = "local", mailbox = "bob@localhost", host = "h:25" }"#,
        )
        .unwrap();
        let lua = Lua::new();
        let by_serde: Verdict = mlua::LuaSerdeExt::from_value(
            &lua,
            lua.load(
                r#"{ action = "reject", code = 550, enhanced = "5.7.1", text = "no", score = 2,
                 symbol = "S", reason = "r", symbols = { { name = "A", score = 1.5 } },
                 folder = "Junk", flags = { "\\Seen" }, add_headers = { { name = "X-A", value = "1" } },
                 remove_headers = { "X-B" }, route = "local", mailbox = "bob@localhost", host = "h:25" }"#,
            )
            .eval::<Value>()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(v, by_serde);
        assert_eq!(v.code, Some(550));
        assert_eq!(v.add_headers[0].value, "1");
        assert_eq!(read("{}").unwrap(), Verdict::default());
        assert_eq!(read("{ flags = {} }").unwrap(), Verdict::default());
        assert_eq!(
            read("{ flags = { 'a', 'b', 'c' } }").unwrap().flags,
            ["a", "b", "c"],
            "list order kept"
        );
        assert_eq!(
            read("{ flags = { [3] = 'c', [1] = 'a', [2] = 'b' } }").unwrap().flags,
            ["a", "b", "c"],
            "by index, whatever the table's order"
        );
        assert_eq!(read("{ code = 550.0 }").unwrap().code, Some(550));
    }

    #[test]
    fn refuses_what_serde_refused() {
        for (src, says) in [
            ("{ action = 'nonsense' }", "unknown action"),
            ("{ acton = 'reject' }", "unknown field `acton`"),
            ("{ code = 'x' }", "expected a number"),
            ("{ code = 5.5 }", "not a reply code"),
            ("{ code = 70000 }", "not a reply code"),
            ("{ text = 5 }", "expected a string"),
            ("{ add_headers = { { name = 'X' } } }", "missing field `value`"),
            ("{ add_headers = { name = 'X', value = 'y' } }", "expected a list"),
            ("{ route = 'nowhere' }", "unknown route"),
            ("{ symbols = { { score = 1 } } }", "missing field `name`"),
            ("'reject'", "a verdict is a table"),
            ("{ [1] = 'x' }", "unexpected key of type integer"),
            ("{ text = '\\255' }", "not valid UTF-8"),
            ("{ flags = { x = 'a' } }", "found key of type string"),
            ("{ flags = { 1 } }", "flags: expected a string, got integer"),
            (
                "{ symbols = { { name = 'A', score = {} } } }",
                "expected a number, got table",
            ),
        ] {
            let e = read(src).unwrap_err();
            assert!(e.contains(says), "{src}: {e}");
        }
    }

    /// A list ends at its first hole, as `ipairs` reads it; what follows is not read (the
    /// fuzz target found the two readers disagreeing on `{ [2] = 'x' }` before).
    #[test]
    fn lists_end_at_their_first_hole() {
        let v = read("{ flags = { '\\\\Seen', nil, 'x' }, remove_headers = { [2] = 'X-A' } }").unwrap();
        assert_eq!(v.flags, ["\\Seen"]);
        assert!(v.remove_headers.is_empty());
        assert!(
            read("{ add_headers = { [2] = 'not a header' } }")
                .unwrap()
                .add_headers
                .is_empty()
        );
        assert!(read("{ add_headers = { 'not a header' } }").is_err());
    }
}
