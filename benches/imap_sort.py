#!/usr/bin/env python3
"""SORT and THREAD on a big folder, against any IMAP server (mailgate, Dovecot, ...).

  imap_sort.py HOST PORT --user U --pass P [--messages 50000] [--populate] [--runs 7]

--populate first empties the user's INBOX and fills it with --messages generated messages
(seeded, so every server gets the same mail): 2 years of Date headers, 3,000 base subjects
with Re:/Fwd:/[list] decorations, 600 senders, and threads (about a third of the messages
reply to an earlier one of their subject, with References and In-Reply-To). APPEND goes in
MULTIAPPEND batches of 200 with LITERAL+ when the server offers both.

Then, --runs times, on a fresh connection: SELECT INBOX, time `SORT (REVERSE DATE) UTF-8 ALL`
and `THREAD REFERENCES UTF-8 ALL` (and, once each, `SORT (SUBJECT)` and `THREAD
ORDEREDSUBJECT`). The first run is reported apart (the server may build caches then); the
rest as median/min/max. Each result's length and SHA-1 is printed, so two servers' answers
can be compared for equality.
"""
import argparse
import hashlib
import imaplib
import random
import socket
import statistics
import sys
import time

imaplib._MAXLINE = 50_000_000


def message(i, rnd, subjects, senders, sent):
    """Message i: (raw bytes, message-id, base subject index)."""
    s = rnd.randrange(len(subjects))
    mid = "<m%d.%d@bench.test>" % (i, s)
    base = subjects[s]
    refs = ""
    earlier = sent.get(s)
    if earlier and rnd.random() < 0.35:
        parent = rnd.choice(earlier[-5:])
        refs = "References: %s\r\nIn-Reply-To: %s\r\n" % (" ".join(earlier[-3:]), parent)
        subject = rnd.choice(["Re: ", "RE: ", "Re: Re: ", "Fwd: Re: "]) + base
    else:
        subject = rnd.choice(["", "", "", "[list] ", "Fwd: "]) + base
    sent.setdefault(s, []).append(mid)
    when = 1_700_000_000 + rnd.randrange(2 * 365 * 86400)
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
    sender = senders[rnd.randrange(len(senders))]
    body = ("Line %d of a generated message about %s.\r\n" % (i, base)) * rnd.randint(5, 25)
    raw = (
        "From: %s\r\nTo: big@bench.test\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\n%s"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s"
        % (sender, subject, date, mid, refs, body)
    )
    return raw.encode()


def corpus(n, seed=2026):
    rnd = random.Random(seed)
    words = ["alpha", "budget", "cluster", "delta", "meeting", "report", "release", "invoice",
             "travel", "kernel", "backup", "party", "draft", "review", "quarter", "Ünïcode"]
    subjects = ["%s %s %d" % (rnd.choice(words), rnd.choice(words), k) for k in range(3000)]
    senders = ["\"Person %d\" <p%d@example%d.org>" % (k, k, k % 40) for k in range(600)]
    sent = {}
    return [message(i, rnd, subjects, senders, sent) for i in range(1, n + 1)]


class Raw:
    """A minimal IMAP client for batched APPEND (imaplib has no MULTIAPPEND)."""

    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=600)
        self.f = self.s.makefile("rb")
        self.n = 0
        self.caps = self.f.readline().decode(errors="replace").upper()

    def cmd(self, text, literals=()):
        self.n += 1
        tag = b"b%d" % self.n
        out = tag + b" " + text.encode()
        for lit in literals:
            out += b" {%d+}\r\n" % len(lit) + lit
        self.s.sendall(out + b"\r\n")
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("connection closed")
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError("%s: %r" % (text[:40], line))
                return b"".join(lines)


def populate(args, msgs):
    c = Raw(args.host, args.port)
    c.cmd('LOGIN "%s" "%s"' % (args.user, args.password))
    caps = c.cmd("CAPABILITY").decode(errors="replace").upper()
    r = c.cmd("SELECT INBOX").decode(errors="replace")
    exists = [l for l in r.split("\r\n") if l.endswith(" EXISTS")]
    if exists and int(exists[0].split()[1]) > 0:
        c.cmd("STORE 1:* +FLAGS.SILENT (\\Deleted)")
        c.cmd("EXPUNGE")
    batch = 200 if ("MULTIAPPEND" in caps and "LITERAL+" in caps) else 1
    t0 = time.time()
    for i in range(0, len(msgs), batch):
        chunk = msgs[i:i + batch]
        c.cmd("APPEND INBOX", chunk)
    took = time.time() - t0
    print("populated %d messages in %.1f s (%.0f/s, batches of %d)" % (len(msgs), took, len(msgs) / took, batch))


def timed(m, fn):
    t0 = time.perf_counter()
    typ, data = fn()
    took = time.perf_counter() - t0
    if typ != "OK":
        raise RuntimeError(data)
    payload = b" ".join(d for d in data if d)
    return took, payload


def one_run(args, extra):
    m = imaplib.IMAP4(args.host, args.port)
    m.login(args.user, args.password)
    typ, data = m.select("INBOX", readonly=True)
    n = int(data[0])
    out = {}
    out["SORT (REVERSE DATE)"] = timed(m, lambda: m.sort("(REVERSE DATE)", "UTF-8", "ALL"))
    out["THREAD REFERENCES"] = timed(m, lambda: m.thread("REFERENCES", "UTF-8", "ALL"))
    if extra:
        out["SORT (SUBJECT)"] = timed(m, lambda: m.sort("(SUBJECT)", "UTF-8", "ALL"))
        out["THREAD ORDEREDSUBJECT"] = timed(m, lambda: m.thread("ORDEREDSUBJECT", "UTF-8", "ALL"))
    m.logout()
    return n, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--user", default="big1")
    ap.add_argument("--pass", dest="password", default="pass")
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--populate", action="store_true")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    if not args.host.startswith(("127.", "localhost")):
        sys.exit("loopback only")
    if args.populate:
        populate(args, corpus(args.messages))
    first_n, first = one_run(args, True)
    print("%s: %d messages" % (args.label or "%s:%d" % (args.host, args.port), first_n))
    for k, (t, payload) in first.items():
        digest = hashlib.sha1(payload).hexdigest()[:12]
        print("  first  %-22s %8.1f ms  (%d bytes, sha1 %s)" % (k, t * 1000, len(payload), digest))
    times = {}
    for _ in range(args.runs - 1):
        _, out = one_run(args, False)
        for k, (t, _) in out.items():
            times.setdefault(k, []).append(t * 1000)
    for k, v in times.items():
        print("  again  %-22s median %8.1f ms  min %8.1f  max %8.1f  (%d runs)"
              % (k, statistics.median(v), min(v), max(v), len(v)))


if __name__ == "__main__":
    main()
