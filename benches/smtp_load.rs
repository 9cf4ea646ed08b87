//! SMTP intake load generator: C concurrent sessions send N messages of S bytes.
//!
//! ```text
//! cargo bench --bench smtp_load -- [--sessions 20] [--messages 5000] [--size 5000] [--addr HOST:PORT]
//! cargo bench --bench smtp_load -- --policies DIR --pairs 10 --messages 10000   # the ratio
//! cargo bench --bench smtp_load -- --store-url postgres://postgres@127.0.0.1:5499/mg [--nodes 2]
//! ```
//!
//! cargo bench --bench smtp_load -- --policies policies --domains 50 --dns nxdomain   # or --dns drop
//! ```
//!
//! `--domains N` sends from N sender domains in turn; `--dns nxdomain|drop` points the spawned
//! server's resolver at a loopback name server that answers NXDOMAIN at once, or that drops
//! every query.
//!
//! `--accounts N` spreads the messages over N recipient accounts (load0..@localhost) instead
//! of sending them all to alice@localhost.
//!
//! `--store-url` runs the spawned servers on that PostgreSQL database (`store.backend =
//! "postgres"`); `--nodes N` spawns N of them on it and spreads the sessions over them.
//!
//! `--node-cpu CORES` caps each spawned server at that much CPU (a cgroup of its own; needs
//! root): nodes as on machines of their own, for scale-out figures on one small machine.
//!
//! Without `--addr` it starts the release `mailgate` binary (or `$MAILGATE_BIN`, another build
//! to compare) on a fresh data dir (loopback, port 0, account alice@localhost) and also
//! reports that process's CPU time. Each message is one
//! pipelined MAIL/RCPT/DATA group (as PIPELINING clients send), then the body; latency is from
//! MAIL to the 250 after the final dot, which the server sends only once the message is on disk.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    sessions: usize,
    messages: usize,
    size: usize,
    addr: Option<SocketAddr>,
    /// Policies directory for the spawned server (default: an empty one).
    policies: Option<String>,
    /// With `--policies`: run this many interleaved pairs (without, with) and report the
    /// median ratio of the two intakes.
    pairs: usize,
    /// PostgreSQL database for the spawned servers.
    store_url: Option<String>,
    /// Servers to spawn (on `store_url`).
    nodes: usize,
    /// Sender domains (`load@dN.example`).
    domains: usize,
    /// A loopback name server for the spawned server: `nxdomain` or `drop`.
    dns: Option<String>,
    /// Messages sent (over the same sessions' count) before the timed run, to warm caches.
    warmup: usize,
    /// Recipient accounts: 1 sends everything to alice@localhost; N > 1 spreads the
    /// messages over load0..load{N-1}@localhost, as an MX's mail is spread.
    accounts: usize,
    /// Caps each spawned node's CPU at this many cores (a cgroup of its own), as if it ran
    /// on a machine of that size; the database and the load generator are not capped.
    node_cpu: Option<f64>,
}

fn args() -> Args {
    let mut a = Args {
        sessions: 20,
        messages: 5000,
        size: 5000,
        addr: None,
        policies: None,
        pairs: 0,
        store_url: None,
        nodes: 1,
        domains: 1,
        dns: None,
        warmup: 0,
        accounts: 1,
        node_cpu: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--sessions" => a.sessions = val.parse().expect("--sessions N"),
            "--messages" => a.messages = val.parse().expect("--messages N"),
            "--size" => a.size = val.parse().expect("--size BYTES"),
            "--addr" => a.addr = Some(val.parse().expect("--addr HOST:PORT")),
            "--policies" => a.policies = Some(val),
            "--pairs" => a.pairs = val.parse().expect("--pairs N"),
            "--store-url" => a.store_url = Some(val),
            "--nodes" => a.nodes = val.parse().expect("--nodes N"),
            "--domains" => a.domains = val.parse().expect("--domains N"),
            "--dns" => a.dns = Some(val),
            "--warmup" => a.warmup = val.parse().expect("--warmup N"),
            "--accounts" => a.accounts = val.parse().expect("--accounts N"),
            "--node-cpu" => a.node_cpu = Some(val.parse().expect("--node-cpu CORES")),
            _ => {
                i += 1; // cargo bench passes --bench; ignore unknown flags
                continue;
            }
        }
        i += 2;
    }
    a
}

/// The recipient of message `n` with `accounts` accounts (`--accounts`).
fn recipient(n: usize, accounts: usize) -> String {
    if accounts <= 1 {
        "alice@localhost".into()
    } else {
        format!("load{}@localhost", n % accounts)
    }
}

/// A message of about `size` bytes with CRLF lines of 76 characters.
fn message(size: usize, n: usize, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: load@example.org\r\nTo: {to}\r\nSubject: load {n}\r\nMessage-ID: <load-{n}@example.org>\r\n\r\n"
    )
    .into_bytes();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

async fn read_reply(r: &mut BufReader<TcpStream>, line: &mut String) -> String {
    loop {
        line.clear();
        if r.read_line(line).await.unwrap_or(0) == 0 {
            panic!("server closed the connection");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.clone();
        }
    }
}

/// A loopback name server on its own thread: answers every query NXDOMAIN at once, or
/// (`answer` false) drops it.
fn name_server(answer: bool) -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            if !answer || n < 12 {
                continue;
            }
            // The header and the question, flagged as a response: NXDOMAIN, nothing else.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += usize::from(buf[end]) + 1;
            }
            end = (end + 5).min(n);
            let mut r = buf[..end].to_vec();
            r[2] |= 0x80; // QR
            r[3] = 0x80 | 3; // RA, RCODE NXDOMAIN
            r[6..12].fill(0); // no answers, authority or additional records
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

async fn session(
    addr: SocketAddr,
    count: usize,
    size: usize,
    first: usize,
    domains: usize,
    accounts: usize,
) -> Vec<Duration> {
    let mut r = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    r.get_ref().set_nodelay(true).unwrap();
    let mut line = String::new();
    read_reply(&mut r, &mut line).await;
    r.get_mut().write_all(b"EHLO load.test\r\n").await.unwrap();
    read_reply(&mut r, &mut line).await;
    let mut lat = Vec::with_capacity(count);
    for n in first..first + count {
        let to = recipient(n, accounts);
        let body = message(size, n, &to);
        let t = Instant::now();
        // Sender domains interleave as real traffic does (not every session in step).
        let domain = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        let envelope = format!(
            "MAIL FROM:<load@d{}.example>\r\nRCPT TO:<{to}>\r\nDATA\r\n",
            domain % domains.max(1) as u64
        );
        r.get_mut().write_all(envelope.as_bytes()).await.unwrap();
        for expect in ["250", "250", "354"] {
            let rep = read_reply(&mut r, &mut line).await;
            assert!(rep.starts_with(expect), "expected {expect}, got {rep}");
        }
        r.get_mut().write_all(&body).await.unwrap();
        let rep = read_reply(&mut r, &mut line).await;
        assert!(rep.starts_with("250"), "message refused: {rep}");
        lat.push(t.elapsed());
    }
    r.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    lat
}

/// utime + stime of a process, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

/// This process's user + system CPU time (the load generator shares the machine's cores with
/// the server, so its cost is part of what the figures mean).
fn own_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Spawned {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn spawn_server(policies: Option<&str>, store_url: Option<&str>, dns: Option<SocketAddr>, accounts: usize) -> Spawned {
    // MAILGATE_BIN: another build to measure (a saved binary of an earlier commit, say).
    let bin = std::env::var("MAILGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mailgate").to_string());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = \"{}\"\n[policies]\ndir = \"{}\"\n[smtp]\nmax_connections_per_ip = 1000\n[[listener]]\nprotocol = \"smtp\"\nbind = \"127.0.0.1:0\"\ntls = \"none\"\n",
            dir.path().join("data").display(),
            policies.map(str::to_string).unwrap_or_else(|| dir.path().join("policies").display().to_string())
        ) + &store_url.map_or(String::new(), |u| {
            format!("[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"{u}\"\n")
        }) + &dns.map_or(String::new(), |d| format!("[dns]\nservers = [\"{d}\"]\n")),
    )
    .unwrap();
    for n in 0..accounts.max(1) {
        let mut add = std::process::Command::new(&bin)
            .args(["--config", cfg.to_str().unwrap(), "user", "add"])
            .arg(recipient(n, accounts))
            .arg("--password-stdin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        add.stdin.take().unwrap().write_all(b"bench").unwrap();
        // On a shared database the account may be there already (another node, an earlier run).
        assert!(add.wait().unwrap().success() || store_url.is_some());
    }
    let mut child = std::process::Command::new(&bin)
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        // MAILGATE_BENCH_LOG=info shows, among others, the store's counters at the end.
        .env(
            "RUST_LOG",
            std::env::var("MAILGATE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "server failed to start");
        if let Some(a) = line.trim().strip_prefix("listening smtp ") {
            break a.parse().unwrap();
        }
    };
    Spawned { child, addr, _dir: dir }
}

/// Puts process `pid` in a CPU cgroup of its own (`mailgate-bench-node{index}`, cgroup v2 or
/// v1's `cpu` controller) that lets it use `cores` cores at most.
fn cap_cpu(pid: u32, index: usize, cores: f64) {
    let period: u64 = 100_000;
    let quota = (cores * period as f64) as u64;
    let name = format!("mailgate-bench-node{index}");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let dir = if v2 {
        format!("/sys/fs/cgroup/{name}")
    } else {
        format!("/sys/fs/cgroup/cpu/{name}")
    };
    let write = |file: &str, value: String| {
        std::fs::write(format!("{dir}/{file}"), value)
            .unwrap_or_else(|e| panic!("--node-cpu needs a writable cgroup: {dir}/{file}: {e}"))
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("--node-cpu needs a writable cgroup: {dir}: {e}"));
    if v2 {
        write("cpu.max", format!("{quota} {period}"));
    } else {
        write("cpu.cfs_period_us", period.to_string());
        write("cpu.cfs_quota_us", quota.to_string());
    }
    write("cgroup.procs", pid.to_string());
}

/// One load run; its msgs/s.
async fn run(a: &Args, policies: Option<&str>) -> f64 {
    let spawned: Vec<Spawned> = if a.addr.is_none() {
        (0..a.nodes.max(1))
            .map(|_| {
                let dns = a.dns.as_deref().map(|mode| match mode {
                    "nxdomain" => name_server(true),
                    "drop" => name_server(false),
                    other => panic!("--dns nxdomain|drop, not {other}"),
                });
                spawn_server(policies, a.store_url.as_deref(), dns, a.accounts)
            })
            .enumerate()
            .map(|(i, s)| {
                if let Some(cores) = a.node_cpu {
                    cap_cpu(s.child.id(), i, cores);
                }
                s
            })
            .collect()
    } else {
        Vec::new()
    };
    let addrs: Vec<SocketAddr> = match a.addr {
        Some(addr) => vec![addr],
        None => spawned.iter().map(|s| s.addr).collect(),
    };
    let pids: Vec<u32> = spawned.iter().map(|s| s.child.id()).collect();
    let cpu_of = |pids: &[u32]| pids.iter().map(|&p| cpu_time(p)).sum::<Duration>();
    if a.warmup > 0 {
        let t = Instant::now();
        let per = a.warmup.div_ceil(a.sessions);
        let warm: Vec<_> = (0..a.sessions)
            .map(|i| {
                tokio::spawn(session(
                    addrs[i % addrs.len()],
                    per,
                    a.size,
                    1_000_000 + i * per,
                    a.domains,
                    a.accounts,
                ))
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for w in warm {
            slowest = slowest.max(w.await.unwrap().into_iter().max().unwrap_or_default());
        }
        println!(
            "warm-up: {} msgs in {:.2?}, slowest {:.2?}",
            per * a.sessions,
            t.elapsed(),
            slowest
        );
    }
    let cpu0 = (!pids.is_empty()).then(|| cpu_of(&pids));
    let own0 = own_cpu_time();
    let per = a.messages / a.sessions;
    let extra = a.messages % a.sessions;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut first = 0;
    for i in 0..a.sessions {
        let n = per + usize::from(i < extra);
        tasks.push(tokio::spawn(session(
            addrs[i % addrs.len()],
            n,
            a.size,
            first,
            a.domains,
            a.accounts,
        )));
        first += n;
    }
    let mut lat = Vec::with_capacity(a.messages);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let rate = lat.len() as f64 / wall.as_secs_f64();
    println!(
        "smtp intake: {} msgs x {} B over {} sessions in {:.2?}: {:.0} msgs/s, latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        lat.len(),
        a.size,
        a.sessions,
        wall,
        rate,
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    if let Some(c0) = cpu0 {
        let cpu = cpu_of(&pids) - c0;
        println!(
            "server CPU: {:.2?} ({:.0}% of one core, {:.0} us per message)",
            cpu,
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
            cpu.as_secs_f64() * 1e6 / lat.len() as f64
        );
    }
    let own = own_cpu_time() - own0;
    println!(
        "load generator CPU: {:.2?} ({:.0} us per message)",
        own,
        own.as_secs_f64() * 1e6 / lat.len() as f64
    );
    for mut s in spawned {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        let _ = s.child.wait();
    }
    rate
}

#[tokio::main]
async fn main() {
    let a = args();
    if a.pairs == 0 {
        run(&a, a.policies.as_deref()).await;
        return;
    }
    // Interleaved pairs, without then with `--policies`: this machine's speed drifts by
    // more than the effect, so only runs taken side by side are compared.
    assert!(
        a.policies.is_some() && a.addr.is_none(),
        "--pairs compares a spawned server without and with --policies DIR"
    );
    let mut ratios = Vec::new();
    for i in 1..=a.pairs {
        let without = run(&a, None).await;
        let with = run(&a, a.policies.as_deref()).await;
        let r = with / without;
        println!(
            "pair {i}: without {without:.0} msgs/s, with {with:.0} msgs/s: {:.0} %",
            r * 100.0
        );
        ratios.push(r);
    }
    ratios.sort_by(f64::total_cmp);
    let median = if ratios.len() % 2 == 1 {
        ratios[ratios.len() / 2]
    } else {
        (ratios[ratios.len() / 2 - 1] + ratios[ratios.len() / 2]) / 2.0
    };
    println!(
        "intake with policies / without over {} pairs: median {:.0} %, range {:.0}-{:.0} %",
        ratios.len(),
        median * 100.0,
        ratios[0] * 100.0,
        ratios[ratios.len() - 1] * 100.0
    );
}
