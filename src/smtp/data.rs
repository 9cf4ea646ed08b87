//! Sans-IO receiver for the DATA body (RFC 5321 §4.1.1.4, §4.5.2).
//!
//! Strict about line endings: only `CRLF . CRLF` ends the message, and any bare LF or bare CR
//! stops the transfer as an error. That closes SMTP smuggling (CVE-2023-51764/5/6), where a
//! receiver that accepts `\n.\n` or `\r.\r` as the end sees a second, forged message that the
//! sending MTA meant as body text. Leading dots are unstuffed (§4.5.2). The body is kept up to
//! `limit` bytes; beyond that the receiver keeps reading to the end but reports the overflow.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Inside a line.
    Mid,
    /// Just after a CR inside a line.
    Cr,
    /// A line that began with a dot, just after the dot.
    Dot,
    /// `.` then CR at the start of a line: LF here ends the message.
    DotCr,
}

/// What feeding bytes produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// All given bytes were consumed; the message is not finished.
    NeedMore,
    /// The end marker was found after `consumed` bytes; the rest belongs to the next command.
    Done { consumed: usize },
    /// A bare LF or CR was seen: the transfer cannot be trusted.
    BareLineEnding,
}

pub struct DataReceiver {
    state: State,
    body: Vec<u8>,
    limit: usize,
    overflow: bool,
}

impl DataReceiver {
    pub fn new(limit: usize) -> DataReceiver {
        DataReceiver {
            state: State::LineStart,
            body: Vec::with_capacity(limit.min(64 * 1024)),
            limit,
            overflow: false,
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.overflow || self.body.len() + bytes.len() > self.limit {
            self.overflow = true;
        } else {
            self.body.extend_from_slice(bytes);
        }
    }

    /// Consumes bytes of the DATA stream.
    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::LineStart if input[i] == b'.' => {
                    // A leading dot: stuffed (dropped) or the start of the end marker.
                    self.state = State::Dot;
                    i += 1;
                }
                State::LineStart => self.state = State::Mid,
                State::Mid => {
                    // Copy the run up to the next CR or LF in one go.
                    let rest = &input[i..];
                    let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    self.emit(&rest[..end]);
                    i += end;
                    if end == rest.len() {
                        self.state = State::Mid;
                        break;
                    }
                    if input[i] == b'\n' {
                        return Progress::BareLineEnding;
                    }
                    self.state = State::Cr;
                    i += 1;
                }
                State::Cr => {
                    if input[i] != b'\n' {
                        return Progress::BareLineEnding;
                    }
                    self.emit(b"\r\n");
                    self.state = State::LineStart;
                    i += 1;
                }
                State::Dot => match input[i] {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    b'\n' => return Progress::BareLineEnding,
                    _ => self.state = State::Mid,
                },
                State::DotCr => {
                    if input[i] != b'\n' {
                        return Progress::BareLineEnding;
                    }
                    return Progress::Done { consumed: i + 1 };
                }
            }
        }
        Progress::NeedMore
    }

    /// True when the message grew past the limit (its bytes were dropped).
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split into pieces of `step` bytes.
    fn run(input: &[u8], step: usize, limit: usize) -> (Progress, Vec<u8>, bool) {
        let mut r = DataReceiver::new(limit);
        let mut off = 0;
        for chunk in input.chunks(step) {
            match r.feed(chunk) {
                Progress::NeedMore => off += chunk.len(),
                Progress::Done { consumed } => {
                    let over = r.overflowed();
                    return (
                        Progress::Done {
                            consumed: off + consumed,
                        },
                        r.into_body(),
                        over,
                    );
                }
                p => return (p, Vec::new(), false),
            }
        }
        (Progress::NeedMore, r.into_body(), false)
    }

    #[test]
    fn ends_and_unstuffs_at_every_split() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nnot end\r\nbody\r\n.\r\nMAIL FROM:<a@b>\r\n";
        let expect = b"Subject: x\r\n\r\n.leading dot\r\n";
        let end = b"Subject: x\r\n\r\n..leading dot\r\n.\r\n".len();
        for step in 1..input.len() {
            let (p, body, over) = run(input, step, 1000);
            assert_eq!(p, Progress::Done { consumed: end }, "step {step}");
            assert_eq!(body, expect, "step {step}");
            assert!(!over);
        }
    }

    #[test]
    fn empty_message() {
        assert_eq!(run(b".\r\n", 1, 10).0, Progress::Done { consumed: 3 });
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        for vector in [&b"\n.\r\n"[..], b"\r.\r\n", b"\n.\n", b"\r\n.\r", b"\r\n.\n"] {
            let mut input = b"Subject: s\r\n\r\nhello".to_vec();
            input.extend_from_slice(vector);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n\r\n.\r\n");
            for step in [1, 3, input.len()] {
                let (p, _, _) = run(&input, step, 1000);
                assert_eq!(p, Progress::BareLineEnding, "vector {vector:?} step {step}");
            }
        }
    }

    #[test]
    fn bare_lf_in_body_is_refused() {
        assert_eq!(run(b"a\nb\r\n.\r\n", 2, 100).0, Progress::BareLineEnding);
        assert_eq!(run(b"a\rb\r\n.\r\n", 2, 100).0, Progress::BareLineEnding);
    }

    #[test]
    fn overflow_keeps_reading_to_the_end() {
        let (p, _, over) = run(b"0123456789\r\n0123456789\r\n.\r\n", 4, 12);
        assert_eq!(p, Progress::Done { consumed: 27 });
        assert!(over);
    }
}
