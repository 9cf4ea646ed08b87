//! What a policy returns, as the server reads and uses it: a Lua value built from the input
//! (nested tables, odd keys, non-UTF-8 strings, NaN, metatables whose metamethods fail) is
//! read by the raw-stack verdict reader, checked against mlua's serde reading of the same
//! value (the rules the reader promises to keep), carried across the WASM boundary and back
//! (the WIT record mapping), and applied: the SMTP reply made from it and the header edits it
//! asks for must stay well-formed (no control characters in a reply, one line per added
//! header, the message after them untouched).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::hooks::contract::Verdict;
use mailgate::hooks::lua::verdict::from_lua;
use mlua::{Lua, LuaSerdeExt, Value};

/// Field names of a verdict and of its nested records, so that inputs reach real fields.
const KEYS: [&str; 20] = [
    "action", "code", "enhanced", "text", "score", "symbol", "reason", "symbols", "folder", "flags",
    "add_headers", "remove_headers", "route", "mailbox", "host", "name", "value", "score", "x", "",
];

/// Values the fields expect, and some they must survive.
const WORDS: [&str; 22] = [
    "accept", "reject", "tempfail", "discard", "disconnect", "quarantine", "continue", "junk",
    "local", "relay", "Junk", "\\Seen", "X-Spam-Flag", "5.7.1", "4.7.1", "2.0.0", "550", "",
    "a\r\nBcc: x@y", "X-A: b", "bad\0nul", "\u{e9}\u{1F600}",
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let got = self.bytes(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(b)
    }
}

/// Builds a value; `plain` is cleared when a metatable is set (mlua's serde reader may run
/// metamethods, which the raw reader never does) or a table has holes (below), so that only
/// values both readers define alike are compared.
fn value(lua: &Lua, inp: &mut Input, depth: u32, plain: &mut bool) -> mlua::Result<Value> {
    Ok(match inp.byte() % 12 {
        0 => Value::Nil,
        1 => Value::Boolean(inp.byte() & 1 == 1),
        2 => Value::Integer(inp.byte() as i64 * 10),
        3 => Value::Integer(inp.u64() as i64),
        4 => Value::Number(f64::from_bits(inp.u64())),
        5 => Value::Number(inp.byte() as f64 * 2.5),
        6 | 7 => Value::String(lua.create_string(WORDS[inp.byte() as usize % WORDS.len()])?),
        8 => {
            let n = inp.byte() as usize % 40;
            Value::String(lua.create_string(inp.bytes(n))?)
        }
        _ if depth >= 6 => Value::Nil,
        _ => {
            let t = lua.create_table()?;
            let entries = inp.byte() % 10;
            for i in 0..entries {
                let key = match inp.byte() % 5 {
                    0 | 1 => Value::String(lua.create_string(KEYS[inp.byte() as usize % KEYS.len()])?),
                    2 => Value::Integer(i as i64 + 1),
                    3 => Value::Integer(inp.byte() as i64 - 8),
                    _ => value(lua, inp, depth + 1, plain)?,
                };
                // Lua tables take neither nil nor NaN as keys.
                if matches!(key, Value::Nil) || matches!(key, Value::Number(n) if n.is_nan()) {
                    continue;
                }
                let v = value(lua, inp, depth + 1, plain)?;
                t.raw_set(key, v)?;
            }
            // A table with holes in its positive integer keys has no defined length in Lua
            // (`#t` may be any border), and mlua's serde walks to the border it gets: only
            // proper sequences are compared (the raw reader's rule, ipairs, is unit-tested).
            let mut ints: Vec<i64> = Vec::new();
            for pair in t.pairs::<Value, Value>() {
                if let Ok((Value::Integer(i), _)) = pair
                    && i >= 1
                {
                    ints.push(i);
                }
            }
            ints.sort_unstable();
            if ints.iter().enumerate().any(|(n, &i)| i != n as i64 + 1) {
                *plain = false;
            }
            if inp.byte() % 16 == 0 {
                let meta = lua.create_table()?;
                let fail = lua.create_function(|_, ()| -> mlua::Result<()> { Err(mlua::Error::runtime("metamethod ran")) })?;
                for m in ["__index", "__pairs", "__len", "__newindex", "__tostring", "__eq"] {
                    meta.raw_set(m, fail.clone())?;
                }
                t.set_metatable(Some(meta))?;
                *plain = false;
            }
            Value::Table(t)
        }
    })
}

fn same(a: &Verdict, b: &Verdict) -> bool {
    // NaN scores are equal here; everything else compares as it is.
    format!("{a:?}") == format!("{b:?}")
}

fuzz_target!(|data: &[u8]| {
    let lua = Lua::new();
    let mut inp = Input(data);
    let mut plain = true;
    let Ok(v) = value(&lua, &mut inp, 0, &mut plain) else { return };
    let ours = from_lua(&lua, v.clone());
    if plain {
        let theirs: mlua::Result<Verdict> = lua.from_value(v);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert!(same(a, b), "read differently: {a:?} vs serde {b:?}"),
            (Err(_), Err(_)) => {}
            // Stricter by design: a table with other keys where a list belongs is refused
            // (mlua's serde reads its index part and drops the rest without a word).
            (Err(e), Ok(_)) if e.contains("expected a list, found key") => {}
            // More lenient by design: an integer-valued float where an integer belongs
            // (`code = 550.0`; Lua 5.4 numbers are either) is read as the integer.
            (Ok(_), Err(e)) if e.to_string().contains("invalid type: floating point") => {}
            _ => panic!("one reader accepts, the other not: {ours:?} vs serde {theirs:?}"),
        }
    }
    let Ok(verdict) = ours else { return };
    let across = mailgate::hooks::wasm::across_the_boundary(verdict.clone());
    assert!(same(&across, &verdict), "the WIT mapping changed {verdict:?} into {across:?}");

    // The reply a refusing verdict makes.
    let outcome = mailgate::hooks::Outcome {
        action: verdict.action,
        code: verdict.code,
        enhanced: verdict.enhanced.clone(),
        text: verdict.text.clone(),
        ..Default::default()
    };
    let (code, enhanced, text) = outcome.reply();
    assert!((400..600).contains(&code), "reply code {code}");
    assert!(enhanced.starts_with(&(code / 100).to_string()), "{code} {enhanced}");
    assert!(!text.chars().any(char::is_control), "control character in {text:?}");
    assert!(!enhanced.chars().any(|c| c.is_control() || c == ' '), "{enhanced:?}");

    // The header edits it asks for.
    let body = b"From: a@example.org\r\nSubject: s\r\nX-Spam-Flag: YES\r\n\r\nbody\r\n";
    let mut out = Vec::new();
    mailgate::mail::edit_headers_into(&mut out, body, &verdict.add_headers, &verdict.remove_headers);
    let end = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        _ if out.starts_with(b"\r\n") => 0, // every header removed
        Some(i) => i + 2,
        None => panic!("the header block no longer ends: {:?}", String::from_utf8_lossy(&out)),
    };
    let lines: Vec<&[u8]> = out[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    for l in &lines {
        assert!(l.ends_with(b"\r"), "a bare LF in the header block: {:?}", String::from_utf8_lossy(l));
        let l = &l[..l.len() - 1];
        assert!(!l.contains(&b'\r'), "a bare CR in the header block: {:?}", String::from_utf8_lossy(l));
        let folded = l.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        assert!(folded || l.contains(&b':'), "not a header line: {:?}", String::from_utf8_lossy(l));
    }
    assert!(out.ends_with(b"\r\n\r\nbody\r\n"), "the body changed");
});
