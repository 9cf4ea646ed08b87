//! A Lua verdict table read into [`Verdict`] by hand.
//!
//! mlua's serde deserializer did the same at about 3 µs for a table with one header (a
//! third of a small policy's cost, paid on every message that a policy answers); this walks
//! the table once with the same rules as `Verdict`'s serde form: unknown fields, wrong types
//! and unknown action or route names are errors, `nil` fields are absent, an integer-valued
//! float is accepted where an integer is expected (Lua 5.4 has both).

use super::super::contract::{Action, Header, RouteKind, Symbol, Verdict};
use mlua::{Table, Value};

type Result<T> = std::result::Result<T, String>;

fn kind(v: &Value) -> &'static str {
    v.type_name()
}

fn string(field: &str, v: Value) -> Result<String> {
    match v {
        Value::String(s) => s
            .to_str()
            .map(|s| s.to_string())
            .map_err(|_| format!("{field}: not valid UTF-8")),
        other => Err(format!("{field}: expected a string, got {}", kind(&other))),
    }
}

fn number(field: &str, v: &Value) -> Result<f64> {
    match v {
        Value::Integer(i) => Ok(*i as f64),
        Value::Number(n) => Ok(*n),
        other => Err(format!("{field}: expected a number, got {}", kind(other))),
    }
}

fn code(v: &Value) -> Result<u16> {
    let n = number("code", v)?;
    if n.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&n) {
        Ok(n as u16)
    } else {
        Err(format!("code: {n} is not a reply code"))
    }
}

/// A Lua sequence (`{ a, b }`; `{}` is empty), each element read by `item`.
fn list<T>(field: &str, v: Value, mut item: impl FnMut(Value) -> Result<T>) -> Result<Vec<T>> {
    let Value::Table(t) = v else {
        return Err(format!("{field}: expected a list, got {}", kind(&v)));
    };
    let mut out = Vec::with_capacity(t.raw_len());
    let mut failed = None;
    t.for_each(|k: Value, v: Value| {
        match k {
            Value::Integer(i) if i >= 1 => match item(v) {
                Ok(x) => out.push((i, x)),
                Err(e) => failed = Some(e),
            },
            other => failed = Some(format!("{field}: expected a list, found key of type {}", kind(&other))),
        }
        Ok(())
    })
    .map_err(|e| format!("{field}: {e}"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, x)| x).collect())
}

/// The fields of a record-like table (`{ name = ..., value = ... }`), each handed to `field`.
fn record(what: &str, v: Value, mut field: impl FnMut(&str, Value) -> Result<()>) -> Result<()> {
    let Value::Table(t) = v else {
        return Err(format!("{what}: expected a table, got {}", kind(&v)));
    };
    fields(&t, what, &mut field)
}

fn fields(t: &Table, what: &str, field: &mut impl FnMut(&str, Value) -> Result<()>) -> Result<()> {
    let mut failed = None;
    t.for_each(|k: Value, v: Value| {
        if failed.is_none() {
            failed = match &k {
                Value::String(s) => match s.to_str() {
                    Ok(name) => field(&name, v).err(),
                    Err(_) => Some(format!("{what}: a field name is not valid UTF-8")),
                },
                other => Some(format!("{what}: unexpected key of type {}", kind(other))),
            };
        }
        Ok(())
    })
    .map_err(|e| format!("{what}: {e}"))?;
    failed.map_or(Ok(()), Err)
}

fn header(v: Value) -> Result<Header> {
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

fn symbol(v: Value) -> Result<Symbol> {
    let (mut name, mut score, mut reason) = (None, None, String::new());
    record("symbols", v, |k, v| {
        match k {
            "name" => name = Some(string("symbols.name", v)?),
            "score" => score = Some(number("symbols.score", &v)?),
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

fn action(v: Value) -> Result<Action> {
    let name = string("action", v)?;
    Action::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| format!("action: unknown action {name:?}"))
}

fn route(v: Value) -> Result<RouteKind> {
    match string("route", v)?.as_str() {
        "local" => Ok(RouteKind::Local),
        "relay" => Ok(RouteKind::Relay),
        "reject" => Ok(RouteKind::Reject),
        other => Err(format!("route: unknown route {other:?} (local, relay or reject)")),
    }
}

/// Reads what a Lua hook function returned (`nil` has been handled by the caller).
pub fn from_lua(v: Value) -> Result<Verdict> {
    let Value::Table(t) = v else {
        return Err(format!("a verdict is a table, got {}", kind(&v)));
    };
    let mut out = Verdict::default();
    fields(&t, "verdict", &mut |k, v| {
        match k {
            "action" => out.action = action(v)?,
            "code" => out.code = Some(code(&v)?),
            "enhanced" => out.enhanced = Some(string(k, v)?),
            "text" => out.text = Some(string(k, v)?),
            "score" => out.score = Some(number(k, &v)?),
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
        from_lua(lua.load(src).eval::<Value>().unwrap())
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
        ] {
            let e = read(src).unwrap_err();
            assert!(e.contains(says), "{src}: {e}");
        }
    }
}
