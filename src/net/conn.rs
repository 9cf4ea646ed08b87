//! A client connection, plaintext or TLS, with the buffered line/bytes reading every protocol
//! session needs.
//!
//! Output is buffered and flushed only when the session is about to wait for input, so replies
//! to pipelined commands leave in one write (RFC 2920). [`Conn::start_tls`] throws away any
//! input buffered before the upgrade: plaintext pipelined after STARTTLS/STLS must never be
//! read as if it came over TLS (CVE-2011-0411).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write may make no progress, until [`Conn::set_write_timeout`] says otherwise
/// (`server.write_timeout_secs`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Any byte stream a session can run over besides TCP: an in-memory pipe
/// (`tokio::io::duplex`) in transcript tests, say.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Not a socket: no TLS upgrade, no socket options.
    Other(Box<dyn Io>),
    /// Only while upgrading.
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::Other(s) => Pin::new(s).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Other(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// What reading a line produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its line ending (CRLF or bare LF).
    Ok(Vec<u8>),
    /// The line was longer than the limit; it has been skipped up to its end.
    TooLong,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    Closed,
    Timeout,
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

pub struct Conn {
    stream: Stream,
    inbuf: Vec<u8>,
    /// Start of unread input in `inbuf`.
    pos: usize,
    outbuf: Vec<u8>,
    scratch: Box<[u8]>,
    write_timeout: Duration,
    handshake_timeout: Duration,
    /// A write failed or timed out: every later one fails at once (the session is ending;
    /// it must not wait out the timeout again for its goodbye).
    write_failed: bool,
}

const READ_CHUNK: usize = 16 * 1024;

impl Conn {
    pub fn plain(tcp: TcpStream) -> Conn {
        let _ = tcp.set_nodelay(true);
        Conn::with(Stream::Plain(tcp))
    }

    /// A session over any other byte stream (the protocols are the same over it; STARTTLS
    /// answers that TLS is not available). Transcript tests drive sessions this way.
    pub fn over(io: impl Io + 'static) -> Conn {
        Conn::with(Stream::Other(Box::new(io)))
    }

    fn with(stream: Stream) -> Conn {
        Conn {
            stream,
            inbuf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            outbuf: Vec::with_capacity(1024),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            write_timeout: WRITE_TIMEOUT,
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            write_failed: false,
        }
    }

    /// How long each write may make no progress before it fails with `TimedOut` (and the
    /// session, which ends on a failed write, with it).
    pub fn set_write_timeout(&mut self, d: Duration) {
        self.write_timeout = d;
    }

    /// How long a TLS handshake (implicit TLS or STARTTLS) may take before the session ends.
    pub fn set_handshake_timeout(&mut self, d: Duration) {
        self.handshake_timeout = d;
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// TLS version and cipher suite, for Received headers and logs.
    pub fn tls_info(&self) -> Option<String> {
        let Stream::Tls(s) = &self.stream else { return None };
        let (_, conn) = s.get_ref();
        let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
        let suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        Some(format!("{version} with {suite}"))
    }

    /// Upgrades to TLS after flushing pending output; buffered plaintext input is discarded.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        self.flush().await?;
        self.inbuf.clear();
        self.pos = 0;
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(tcp) => tcp,
            other => {
                self.stream = other;
                return Err(io::Error::other("TLS is not available on this stream"));
            }
        };
        let tls = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Asks the kernel to acknowledge the next segments at once instead of delaying the ACK.
    /// A client that sends a literal and then its CRLF in two writes (Python's imaplib) waits
    /// for that ACK under Nagle: without this, every APPEND costs a 40 ms delayed-ACK timer.
    pub fn quickack(&self) {
        let tcp = match &self.stream {
            Stream::Plain(t) => t,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Other(_) | Stream::Gone => return,
        };
        let _ = tcp.set_quickack(true);
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.inbuf[self.pos..]
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.outbuf.extend_from_slice(bytes);
    }

    /// Lets a formatter write straight into the output buffer (saves a copy of large bodies).
    pub fn write_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.outbuf);
    }

    /// Bytes written but not yet sent.
    pub fn pending_output(&self) -> usize {
        self.outbuf.len()
    }

    /// Sends the buffered output. Each write must make progress within the write timeout: a
    /// client that stops reading gets the session ended, not a slot held forever.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.write_failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let r = self.send_all().await;
        self.write_failed = r.is_err();
        r
    }

    async fn send_all(&mut self) -> io::Result<()> {
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "client stopped reading");
        let mut sent = 0;
        while sent < self.outbuf.len() {
            let n = tokio::time::timeout(self.write_timeout, self.stream.write(&self.outbuf[sent..]))
                .await
                .map_err(|_| timed_out())??;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
        self.outbuf.clear();
        tokio::time::timeout(self.write_timeout, self.stream.flush())
            .await
            .map_err(|_| timed_out())?
    }

    /// Closes the write side after flushing (best effort, within the write timeout).
    pub async fn close(&mut self) {
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(self.write_timeout, self.stream.shutdown()).await;
        }
    }

    /// Reads more input, flushing pending output first (we are about to wait).
    async fn fill(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.flush().await?;
        if self.pos > 0 && self.pos == self.inbuf.len() {
            self.inbuf.clear();
            self.pos = 0;
        } else if self.pos > READ_CHUNK {
            self.inbuf.drain(..self.pos);
            self.pos = 0;
        }
        // Read into scratch space so that a cancelled read (a session's select! on shutdown)
        // leaves the input buffer as it was.
        let n = match tokio::time::timeout(timeout, self.stream.read(&mut self.scratch[..])).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        self.inbuf.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }

    /// Waits until input is buffered (or `timeout` passes, or the peer closes), consuming
    /// nothing. Safe to cancel once output is flushed: a read cut short leaves the input
    /// buffer as it was.
    pub async fn wait_input(&mut self, timeout: Duration) -> Result<(), ReadError> {
        if self.pos < self.inbuf.len() {
            return Ok(());
        }
        self.fill(timeout).await
    }

    /// Reads one line of at most `max` bytes including its line ending. A longer line is
    /// skipped through its end and reported as [`Line::TooLong`], so a flood of bytes without a
    /// newline never grows memory past `max`. `timeout` bounds the whole line, not each read:
    /// a client that trickles a byte at a time (slowloris) is cut off when it runs out, as
    /// one that sends nothing is.
    pub async fn read_line(&mut self, max: usize, timeout: Duration) -> Result<Line, ReadError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut skipping = false;
        loop {
            let avail = &self.inbuf[self.pos..];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                let line_end = self.pos + i + 1;
                let mut line = self.inbuf[self.pos..self.pos + i].to_vec();
                self.pos = line_end;
                if skipping || i + 1 > max {
                    return Ok(Line::TooLong);
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Ok(line));
            }
            if avail.len() >= max {
                skipping = true;
                self.pos = self.inbuf.len();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ReadError::Timeout);
            }
            self.fill(left).await?;
        }
    }

    /// Hands buffered input to `sink` (which returns how much it consumed and whether it is
    /// done), reading more as needed.
    pub async fn read_with<F>(&mut self, timeout: Duration, sink: F) -> Result<(), ReadError>
    where
        F: FnMut(&[u8]) -> (usize, bool),
    {
        self.read_with_rate(timeout, None, sink).await
    }

    /// [`Conn::read_with`], and with `min_rate` (bytes per second) the whole read must also
    /// keep up that average: its deadline is `timeout` after the start plus one second per
    /// `min_rate` bytes received (Postfix's `smtpd_min_data_rate`), so a client trickling a
    /// byte before each read timeout cannot hold the session for ever.
    pub async fn read_with_rate<F>(
        &mut self,
        timeout: Duration,
        min_rate: Option<u64>,
        mut sink: F,
    ) -> Result<(), ReadError>
    where
        F: FnMut(&[u8]) -> (usize, bool),
    {
        let start = tokio::time::Instant::now();
        let mut received: u64 = 0;
        loop {
            if self.pos < self.inbuf.len() {
                let (used, done) = sink(&self.inbuf[self.pos..]);
                self.pos += used;
                received += used as u64;
                if done {
                    return Ok(());
                }
            }
            let wait = match min_rate.filter(|&r| r > 0) {
                None => timeout,
                Some(rate) => {
                    let earned = Duration::from_secs_f64(received as f64 / rate as f64);
                    let left = (start + timeout + earned).saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(ReadError::Timeout);
                    }
                    left.min(timeout)
                }
            };
            self.fill(wait).await?;
        }
    }

    /// Reads exactly `n` bytes (BDAT chunks), appending to `out` while it stays within `cap`
    /// bytes; bytes past `cap` are read and dropped. Returns false if some were dropped.
    pub async fn read_exact_capped(
        &mut self,
        mut n: usize,
        out: &mut Vec<u8>,
        cap: usize,
        timeout: Duration,
    ) -> Result<bool, ReadError> {
        if n == 0 {
            return Ok(true);
        }
        let mut all_kept = true;
        self.read_with(timeout, |avail| {
            let take = avail.len().min(n);
            let room = cap.saturating_sub(out.len());
            if take <= room {
                out.extend_from_slice(&avail[..take]);
            } else {
                out.extend_from_slice(&avail[..room]);
                all_kept = false;
            }
            n -= take;
            (take, n == 0)
        })
        .await?;
        Ok(all_kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A client that trickles a line a byte a second (slowloris) runs out of the line's
    /// time; one that sends the same line at once is read. Paused time: the seconds pass
    /// without waiting.
    #[tokio::test(start_paused = true)]
    async fn a_line_must_arrive_whole_within_its_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Conn::over(server);
        let trickle = tokio::spawn(async move {
            for b in b"NOOP slowly\r\n" {
                if client.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let start = tokio::time::Instant::now();
        let r = conn.read_line(512, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(ReadError::Timeout)), "{r:?}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "{took:?}"
        );
        drop(conn);
        trickle.await.unwrap();

        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Conn::over(server);
        client.write_all(b"NOOP at once\r\n").await.unwrap();
        let r = conn.read_line(512, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r, Line::Ok(b"NOOP at once".to_vec()));
    }

    /// A read with a minimum rate (DATA): a byte every 4 s never trips the 5 s read timeout,
    /// but at 10 bytes/s the whole read's deadline is 5 s plus 0.1 s per byte received.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_read_is_cut_at_its_minimum_rate() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Conn::over(server);
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
        });
        let start = tokio::time::Instant::now();
        let mut got = 0;
        let r = conn
            .read_with_rate(Duration::from_secs(5), Some(10), |b| {
                got += b.len();
                (b.len(), false)
            })
            .await;
        assert!(matches!(r, Err(ReadError::Timeout)), "{r:?}");
        // Two bytes (at 0 s and 4 s) earn 0.2 s: cut at 5.2 s, before the third at 8 s.
        assert_eq!(got, 2);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(5200) && took < Duration::from_secs(6),
            "{took:?}"
        );
        drop(conn);
        trickle.await.unwrap();
        // Without a rate, the same trickle goes on as long as each byte comes within 5 s.
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Conn::over(server);
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                client.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            client.write_all(b".").await.unwrap();
        });
        let mut seen = Vec::new();
        conn.read_with(Duration::from_secs(5), |b| {
            seen.extend_from_slice(b);
            (b.len(), seen.ends_with(b"."))
        })
        .await
        .unwrap();
        assert_eq!(seen, b"xxxxx.");
        feeder.await.unwrap();
    }
}
