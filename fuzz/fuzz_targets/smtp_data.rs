//! The DATA receiver: arbitrary bytes fed in arbitrary chunks. Checks the rules that keep
//! SMTP smuggling out: the end is only CRLF.CRLF, a bare CR or LF stops the transfer, the
//! same bytes give the same result however they are split, and the body stays within the
//! limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::smtp::data::{DataReceiver, Progress};

fn run(input: &[u8], cuts: &[usize], limit: usize) -> (Option<usize>, bool, Option<Vec<u8>>) {
    let mut r = DataReceiver::new(limit);
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for b in bounds {
        if b < at {
            continue;
        }
        match r.feed(&input[at..b]) {
            Progress::NeedMore => at = b,
            Progress::Done { consumed } => {
                let end = at + consumed;
                let over = r.overflowed();
                return (Some(end), false, (!over).then(|| r.into_body()));
            }
            Progress::BareLineEnding => return (None, true, None),
        }
    }
    (None, false, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = 1 + data[0] as usize * 64;
    let cuts: Vec<usize> = data[1..3].iter().map(|&b| b as usize * 7).collect();
    let input = &data[3..];
    let whole = run(input, &[], limit);
    let split = run(input, &cuts, limit);
    assert_eq!(whole, split, "the split changed the outcome");
    if let (Some(end), _, body) = &whole {
        // The end marker is a line holding only a dot, after a CRLF.
        let stream = [b"\r\n".as_slice(), input].concat();
        assert!(stream[..end + 2].ends_with(b"\r\n.\r\n"), "ended without CRLF.CRLF");
        if let Some(body) = body {
            assert!(body.len() <= limit);
            // What we would send on (dot-stuffed, with the end marker) reads back as the same
            // body: our sender and our receiver agree. (Not the input itself: a client may send
            // an unstuffed ".x", which RFC 5321 §4.5.2 reads as "x".)
            let mut again = mailgate::queue::client::dot_stuff(body);
            again.extend_from_slice(b".\r\n");
            let mut r = DataReceiver::new(limit);
            assert_eq!(r.feed(&again), Progress::Done { consumed: again.len() });
            assert_eq!(&r.into_body(), body, "dot-stuffing does not round-trip");
        }
    }
});
