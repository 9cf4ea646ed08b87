//! A message as FETCH and the spam filter read it: MIME structure, BODYSTRUCTURE,
//! ENVELOPE, every section and its BINARY decoding, the parsed model and the tokens.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::imap::command::{Section, SectionKind};
use mailgate::imap::{fetch, mime};

fn walk(raw: &[u8], root: &mime::Part, part: &mime::Part, path: &mut Vec<u32>, depth: usize) {
    if depth > 8 {
        return;
    }
    for kind in [
        SectionKind::Full,
        SectionKind::Header,
        SectionKind::Text,
        SectionKind::Mime,
    ] {
        let s = Section {
            part: path.clone(),
            kind,
        };
        let _ = fetch::section_bytes(raw, root, &s);
    }
    let _ = fetch::binary_bytes(raw, root, path);
    for (i, child) in part.children.iter().enumerate() {
        path.push(i as u32 + 1);
        walk(raw, root, child, path, depth + 1);
        path.pop();
    }
}

fuzz_target!(|raw: &[u8]| {
    let root = mime::parse(raw);
    let mut out = Vec::new();
    fetch::body_structure(&mut out, raw, &root, true);
    fetch::envelope(&mut out, &raw[..mime::header_len(raw)]);
    walk(raw, &root, &root, &mut Vec::new(), 0);
    let m = mailgate::mail::parse_message(raw);
    let _ = mailgate::spam::tokens::tokens(&m);
});
