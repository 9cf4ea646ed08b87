//! One SMTP command line, as the session hands it to the parser (with its CRLF).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let mut with_end = line.to_vec();
    with_end.extend_from_slice(b"\r\n");
    let _ = smtp_proto::Request::parse(&mut with_end.iter()).map(|r| r.into_owned());
});
