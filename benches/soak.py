#!/usr/bin/env python3
"""Soak test: many clients of every protocol for minutes, with clients that vanish mid-way.

Starts `mailgate serve` (the binary given) on a fresh data directory with SMTP, IMAP and POP3
on loopback, adds accounts, then keeps `--clients` concurrent sessions busy for `--minutes`:

- SMTP (60 % of sessions): 1-5 transactions of 2-20 KB to 1-3 accounts each; 5 % of the
  transactions are cut off mid-DATA (the client closes before the final dot) and 3 % of
  sessions vanish mid-command (a MAIL line without its CRLF).
- IMAP (25 %): LOGIN, SELECT, then FETCH (envelope, flags, whole bodies), SEARCH, STORE and
  APPEND; 5 % of APPENDs are cut off mid-literal.
- POP3 (15 %): STAT, UIDL, a few RETRs, then TOP n 0 and DELE of every message and QUIT, as
  download-and-delete clients do (so mailboxes stay small and the soak reaches a steady
  state); 10 % of those sessions RSET first and 10 % drop the connection after the DELEs
  (RFC 1939: nothing may be deleted then). Sessions that find the maildrop locked by another
  count as "locked", not errors.

Every 10 s it prints operations per second, the p99 latency of operations in that window,
errors so far by kind, and the server's RSS (VmRSS from /proc). At the end it checks, over
IMAP, that every message answered 250 (or APPEND OK) is in its recipients' mailboxes exactly
once or was taken exactly once by a POP3 session whose QUIT was answered +OK, and that
nothing cut off appears, and it reports whether RSS levelled off (the largest
RSS of the last third within 10 % of that of the middle third). Exit status 1 on any failure.

    cargo build --release
    python3 benches/soak.py --bin target/release/mailgate --minutes 10 --clients 200

Not part of the test suite (it runs for minutes); results are in docs/performance.md.
"""
import argparse
import asyncio
import collections
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

ACCOUNTS = 200  # --accounts
DOMAIN = "soak.test"
OP_TIMEOUT = 60


class Stats:
    def __init__(self):
        self.ops = collections.Counter()  # per protocol, in the current window
        self.lat = []  # latencies of the current window, seconds
        self.errors = collections.Counter()
        self.events = collections.Counter()  # intentional drops, locked maildrops
        self.acked = collections.defaultdict(list)  # message id -> accounts it went to
        self.aborted = set()  # message ids whose transfer was cut off
        self.consumed = collections.defaultdict(collections.Counter)  # account -> ids POP3 deleted
        self.uncertain = collections.defaultdict(set)  # account -> ids deleted without a seen QUIT
        self.total = collections.Counter()

    def op(self, proto, started):
        self.ops[proto] += 1
        self.total[proto] += 1
        self.lat.append(time.monotonic() - started)


class Proto(Exception):
    """A reply the protocol did not allow at that point."""


class Conn:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer
        self.last = b"(greeting)"

    @classmethod
    async def open(cls, addr):
        r, w = await asyncio.open_connection(*addr)
        return cls(r, w)

    async def line(self):
        try:
            l = await asyncio.wait_for(self.r.readline(), OP_TIMEOUT)
        except asyncio.TimeoutError:
            raise Proto(f"no answer in {OP_TIMEOUT} s to {self.last[:24]!r}")
        if not l:
            raise ConnectionError("closed by server")
        return l

    async def send(self, data):
        self.last = data
        self.w.write(data)
        await asyncio.wait_for(self.w.drain(), OP_TIMEOUT)

    def drop(self):
        self.w.transport.abort()

    async def close(self):
        self.w.close()
        try:
            await self.w.wait_closed()
        except OSError:
            pass

    # SMTP
    async def reply(self):
        while True:
            l = await self.line()
            if l[3:4] != b"-":
                return l

    async def smtp(self, cmd, expect):
        await self.send(cmd + b"\r\n")
        r = await self.reply()
        if not r.startswith(expect):
            raise Proto(f"smtp {cmd[:10]!r} -> {r[:40]!r}")
        return r

    # IMAP: tagged completion, reading literals inside untagged data.
    async def imap(self, tag, cmd, expect=b"OK"):
        await self.send(tag + b" " + cmd + b"\r\n")
        return await self.imap_done(tag, expect)

    async def imap_done(self, tag, expect=b"OK"):
        data = []
        while True:
            l = await self.line()
            m = re.search(rb"\{(\d+)\}\r\n$", l)
            if m:
                lit = await asyncio.wait_for(self.r.readexactly(int(m.group(1))), OP_TIMEOUT)
                data.append(l + lit)
                continue
            if l.startswith(tag + b" "):
                if not l[len(tag) + 1 :].startswith(expect):
                    raise Proto(f"imap {l[:60]!r}")
                return l, data
            data.append(l)

    # POP3
    async def pop(self, cmd):
        await self.send(cmd + b"\r\n")
        return await self.line()

    async def multiline(self):
        lines = []
        while True:
            l = await self.line()
            if l == b".\r\n":
                return lines
            lines.append(l)


def message(mid, size, to):
    body = b"soak body line with some words in it 0123456789\r\n" * (size // 50 + 1)
    head = f"From: soak@client.test\r\nTo: {to}\r\nSubject: soak {mid}\r\nMessage-ID: <{mid}@soak>\r\n\r\n"
    return head.encode() + body


def account(i):
    return f"u{i}@{DOMAIN}"


async def smtp_session(addr, st, rng, ids):
    c = await Conn.open(addr)
    try:
        started = time.monotonic()
        await c.reply()
        await c.smtp(b"EHLO soak.client", b"250")
        st.op("smtp", started)
        if rng.random() < 0.03:
            await c.send(b"MAIL FROM:<vanish")
            st.events["smtp drop mid-command"] += 1
            c.drop()
            return
        for _ in range(rng.randint(1, 5)):
            mid = f"s{next(ids)}"
            to = [account(a) for a in rng.sample(range(ACCOUNTS), rng.randint(1, 3))]
            started = time.monotonic()
            await c.smtp(b"MAIL FROM:<soak@client.test>", b"250")
            for a in to:
                await c.smtp(f"RCPT TO:<{a}>".encode(), b"250")
            await c.smtp(b"DATA", b"354")
            msg = message(mid, rng.randint(2000, 20000), to[0])
            if rng.random() < 0.05:
                await c.send(msg[: len(msg) // 2])
                st.aborted.add(mid)
                st.events["smtp drop mid-DATA"] += 1
                c.drop()
                return
            await c.send(msg + b".\r\n")
            r = await c.reply()
            if not r.startswith(b"250"):
                raise Proto(f"end of data -> {r[:40]!r}")
            st.acked[mid].extend(to)
            st.op("smtp", started)
        await c.smtp(b"QUIT", b"221")
    finally:
        await c.close()


async def imap_session(addr, st, rng, ids):
    c = await Conn.open(addr)
    try:
        await c.line()
        started = time.monotonic()
        user = account(rng.randrange(ACCOUNTS))
        await c.imap(b"a", f"LOGIN {user} pass".encode())
        _, data = await c.imap(b"b", b"SELECT INBOX")
        st.op("imap", started)
        exists = 0

        def track(data):
            # The session's view: EXISTS sets the count, each EXPUNGE (another session's
            # POP3 deletes) takes one off.
            nonlocal exists
            for l in data:
                m = re.match(rb"\* (\d+) (EXISTS|EXPUNGE)", l)
                if m:
                    exists = int(m.group(1)) if m.group(2) == b"EXISTS" else exists - 1

        track(data)
        # A FETCH or STORE of a message expunged meanwhile is answered NO [EXPUNGEISSUED]
        # (RFC 5530); that is the server doing right, not an error.
        either = (b"OK", b"NO [EXPUNGEISSUED]")
        for n in range(rng.randint(2, 8)):
            tag = f"c{n}".encode()
            started = time.monotonic()
            k = rng.random()
            if k < 0.25 and exists:
                lo = rng.randint(1, exists)
                r, data = await c.imap(tag, f"FETCH {lo}:{min(exists, lo + 20)} (FLAGS RFC822.SIZE ENVELOPE)".encode(), either)
            elif k < 0.45 and exists:
                r, data = await c.imap(tag, f"FETCH {rng.randint(1, exists)} BODY.PEEK[]".encode(), either)
            elif k < 0.6:
                r, data = await c.imap(tag, b"SEARCH UNSEEN SUBJECT soak")
            elif k < 0.75 and exists:
                r, data = await c.imap(tag, f"STORE {rng.randint(1, exists)} +FLAGS.SILENT (\\Seen)".encode(), either)
            else:
                mid = f"i{next(ids)}"
                msg = message(mid, rng.randint(1000, 10000), user)
                if rng.random() < 0.05:
                    await c.send(tag + f" APPEND INBOX {{{len(msg)}+}}\r\n".encode() + msg[: len(msg) // 2])
                    st.aborted.add(mid)
                    st.events["imap drop mid-literal"] += 1
                    c.drop()
                    return
                await c.send(tag + f" APPEND INBOX {{{len(msg)}}}\r\n".encode())
                cont = await c.line()
                if not cont.startswith(b"+"):
                    raise Proto(f"append continuation {cont[:40]!r}")
                await c.send(msg + b"\r\n")
                r, data = await c.imap_done(tag)
                st.acked[mid].append(user)
            track(data)
            if b"EXPUNGEISSUED" in r:
                st.events["imap message expunged meanwhile"] += 1
            st.op("imap", started)
        await c.imap(b"z", b"LOGOUT")
    finally:
        await c.close()


async def pop3_session(addr, st, rng, ids):
    c = await Conn.open(addr)
    try:
        await c.line()
        started = time.monotonic()
        user = account(rng.randrange(ACCOUNTS))
        if not (await c.pop(f"USER {user}".encode())).startswith(b"+OK"):
            raise Proto("USER")
        r = await c.pop(b"PASS pass")
        if r.startswith(b"-ERR [IN-USE]"):
            st.events["pop3 maildrop locked"] += 1
            return
        if not r.startswith(b"+OK"):
            raise Proto(f"PASS -> {r[:40]!r}")
        st.op("pop3", started)
        stat = await c.pop(b"STAT")
        count = int(stat.split()[1])
        started = time.monotonic()
        if not (await c.pop(b"UIDL")).startswith(b"+OK"):
            raise Proto("UIDL")
        await c.multiline()
        st.op("pop3", started)
        # Read a few, then take everything (as POP3 clients do): each message's id from
        # its header (TOP n 0), DELE, and QUIT; or RSET first; or vanish after the DELEs,
        # which must delete nothing (RFC 1939: only QUIT commits).
        for _ in range(rng.randint(0, 2)):
            if not count:
                break
            started = time.monotonic()
            if not (await c.pop(f"RETR {rng.randint(1, count)}".encode())).startswith(b"+OK"):
                raise Proto("RETR")
            await c.multiline()
            st.op("pop3", started)
        taken = []
        for n in range(1, count + 1):
            started = time.monotonic()
            if not (await c.pop(f"TOP {n} 0".encode())).startswith(b"+OK"):
                raise Proto("TOP")
            head = b"".join(await c.multiline())
            m = re.search(rb"Message-ID: <([^@>]+)@soak>", head)
            if not (await c.pop(f"DELE {n}".encode())).startswith(b"+OK"):
                raise Proto("DELE")
            if m:
                taken.append(m.group(1).decode())
            st.op("pop3", started)
        k = rng.random()
        if taken and k < 0.1:
            st.events["pop3 drop after DELE"] += 1
            c.drop()
            return
        if taken and k < 0.2:
            await c.pop(b"RSET")
            taken = []
        r = await c.pop(b"QUIT")
        if r.startswith(b"+OK"):
            for mid in taken:
                st.consumed[user][mid] += 1
        else:
            st.uncertain[user].update(taken)
            raise Proto(f"QUIT -> {r[:40]!r}")
    finally:
        await c.close()


async def worker(addrs, st, rng, ids, deadline, mix):
    sessions = [(smtp_session, "smtp"), (imap_session, "imap"), (pop3_session, "pop3")]
    while time.monotonic() < deadline:
        fn, proto = rng.choices(sessions, weights=mix)[0]
        try:
            await fn(addrs[proto], st, rng, ids)
        except Proto as e:
            st.errors[f"{proto}: {str(e)[:60]}"] += 1
        except asyncio.TimeoutError:
            st.errors[f"{proto}: timeout"] += 1
        except (ConnectionError, OSError) as e:
            st.errors[f"{proto}: {type(e).__name__}"] += 1
        except asyncio.IncompleteReadError:
            st.errors[f"{proto}: closed mid-literal"] += 1


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


async def reporter(pid, st, deadline, samples):
    start = time.monotonic()
    print(f"{'t/s':>5} {'smtp/s':>7} {'imap/s':>7} {'pop3/s':>7} {'p99 ms':>7} {'errors':>6} {'RSS MiB':>8}")
    last = start
    while time.monotonic() < deadline:
        await asyncio.sleep(10)
        now = time.monotonic()
        window, last = now - last, now
        lat = sorted(st.lat)
        p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0
        rss = rss_kib(pid) / 1024
        samples.append(rss)
        t = time.monotonic() - start
        print(
            f"{t:5.0f} {st.ops['smtp'] / window:7.0f} {st.ops['imap'] / window:7.0f} {st.ops['pop3'] / window:7.0f}"
            f" {p99:7.1f} {sum(st.errors.values()):6d} {rss:8.1f}",
            flush=True,
        )
        st.ops.clear()
        st.lat.clear()


async def verify(addr, st):
    """Every acknowledged message in each recipient's INBOX exactly once; nothing cut off."""
    wanted = collections.defaultdict(collections.Counter)
    for mid, accounts in st.acked.items():
        for a in accounts:
            wanted[a][mid] += 1
    problems = []
    for i in range(ACCOUNTS):
        user = account(i)
        c = await Conn.open(addr)
        await c.line()
        await c.imap(b"a", f"LOGIN {user} pass".encode())
        await c.imap(b"b", b"EXAMINE INBOX")
        _, data = await c.imap(b"c", b"UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        await c.imap(b"d", b"LOGOUT")
        await c.close()
        have = collections.Counter()
        for d in data:
            m = re.search(rb"Message-ID: <([^@>]+)@soak>", d)
            if m:
                have[m.group(1).decode()] += 1
        for mid, n in wanted[user].items():
            kept = have[mid] + st.consumed[user][mid]
            if kept != n and not (kept == n - 1 and mid in st.uncertain[user]):
                problems.append(
                    f"{user}: {mid} acknowledged {n}x, stored {have[mid]}x, taken by POP3 {st.consumed[user][mid]}x"
                )
        for mid in have:
            if mid in st.aborted:
                problems.append(f"{user}: {mid} was cut off but is stored")
    return problems


def start_server(binary, workdir, clients, extra=""):
    cfg = os.path.join(workdir, "mailgate.toml")
    os.makedirs(os.path.join(workdir, "policies"), exist_ok=True)
    per_ip = clients + 50
    with open(cfg, "w") as f:
        f.write(
            f"""[server]
hostname = "mx.{DOMAIN}"
data_dir = "{workdir}/data"
local_domains = ["{DOMAIN}"]
[policies]
dir = "{workdir}/policies"
[smtp]
max_connections_per_ip = {per_ip}
[imap]
max_connections_per_ip = {per_ip}
[pop3]
max_connections_per_ip = {per_ip}
"""
        )
        f.write(extra.replace("\\n", "\n") + "\n")
        for proto in ("imap", "pop3", "smtp"):
            f.write(f'[[listener]]\nprotocol = "{proto}"\nbind = "127.0.0.1:0"\ntls = "none"\n')
    for i in range(ACCOUNTS):
        subprocess.run(
            [binary, "--config", cfg, "user", "add", account(i), "--password-stdin"],
            input=b"pass",
            check=True,
            stdout=subprocess.DEVNULL,
        )
    log = open(os.path.join(workdir, "server.log"), "wb")
    proc = subprocess.Popen([binary, "--config", cfg, "serve"], stdout=subprocess.PIPE, stderr=log)
    addrs = {}
    while len(addrs) < 3:
        l = proc.stdout.readline().decode()
        if not l:
            sys.exit("server exited before listening; see " + log.name)
        m = re.match(r"listening (\w+) (\S+):(\d+)", l)
        if m:
            addrs[m.group(1)] = (m.group(2), int(m.group(3)))
    return proc, addrs


async def main():
    global ACCOUNTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/mailgate")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--accounts", type=int, default=ACCOUNTS)
    ap.add_argument("--config", default="", help="more config text (TOML; \\n for newlines)")
    ap.add_argument("--connect", help="use a running server: smtp=HOST:PORT,imap=HOST:PORT,pop3=HOST:PORT")
    ap.add_argument("--pid", type=int, help="its process id (for RSS), with --connect")
    ap.add_argument("--mix", default="60,25,15", help="SMTP,IMAP,POP3 session weights")
    args = ap.parse_args()
    mix = [int(w) for w in args.mix.split(",")]
    ACCOUNTS = args.accounts
    workdir = tempfile.mkdtemp(prefix="mailgate-soak-")
    if args.connect:
        # A server started by hand (under a profiler, say), with the accounts in place.
        pid, addrs = args.pid, {}
        for part in args.connect.split(","):
            proto, host, port = part.replace("=", ":").split(":")
            addrs[proto] = (host, int(port))
        proc = None
    else:
        proc, addrs = start_server(args.bin, workdir, args.clients, args.config)
        pid = proc.pid
    print(f"server pid {pid}, data in {workdir}; {args.clients} clients for {args.minutes} min")
    st = Stats()
    ids = iter(range(10**12))
    deadline = time.monotonic() + args.minutes * 60
    samples = []
    rep = asyncio.create_task(reporter(pid, st, deadline, samples))
    await asyncio.gather(
        *(worker(addrs, st, random.Random(args.seed * 1000 + i), ids, deadline, mix) for i in range(args.clients))
    )
    await rep
    problems = await verify(addrs["imap"], st)
    if proc:
        proc.terminate()
        proc.wait()
    print("\ntotals:", dict(st.total))
    print("messages acknowledged:", len(st.acked), "cut off:", len(st.aborted))
    print("intentional drops and locks:", dict(st.events))
    print("errors by kind:", dict(st.errors) or "none")
    third = max(1, len(samples) // 3)
    middle, last = max(samples[third : 2 * third] or samples), max(samples[-third:])
    level = last <= middle * 1.10
    print(f"RSS: middle third max {middle:.1f} MiB, last third max {last:.1f} MiB -> {'levelled off' if level else 'GROWING'}")
    for p in problems[:20]:
        print("PROBLEM:", p)
    print("exactly once:", "yes" if not problems else f"NO ({len(problems)} problems)")
    ok = not problems and level and not st.errors
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
