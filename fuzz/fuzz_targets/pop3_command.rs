//! One POP3 command line (as the session reads it, CRLF taken off) to the command parser;
//! whatever it accepts names message numbers the session can range-check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::pop3::command::{Command, parse};

fuzz_target!(|buf: &[u8]| {
    let Ok(line) = std::str::from_utf8(buf) else { return };
    if let Ok(cmd) = parse(line) {
        // A parsed command says the same when parsed again from its own verb's line.
        if let Command::Retr(n) = cmd {
            assert_eq!(parse(&format!("RETR {n}")), Ok(Command::Retr(n)));
        }
    }
});
