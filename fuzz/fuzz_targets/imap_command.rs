//! One complete IMAP command (with its literals), as the session hands it to the parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|buf: &[u8]| {
    let _ = mailgate::imap::parser::parse(buf);
});
