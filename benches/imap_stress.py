#!/usr/bin/env python3
"""Many IMAP clients on one mailbox doing random things at once, against any server.

  imap_stress.py HOST PORT --user U --pass P [--clients 20] [--seconds 120] [--seed 1]

The INBOX is emptied, then every client (one process each, own connection, all on the same
mailbox) runs a random mix until the time is up: APPEND (a message with its own Message-ID),
UID FETCH of flags and of headers, UID STORE of flags on any message, SEARCH and UID SEARCH,
SORT and THREAD, NOOP, STATUS, IDLE for a moment, and expunging messages of its own (UID
STORE \\Deleted, UID EXPUNGE). One command in a hundred drops the connection without LOGOUT
and reconnects. Commands on messages another client expunged meanwhile are fine (a UID that
is gone matches nothing); any NO or BAD, or a response the client cannot parse, is an error.

Afterwards the mailbox is checked: every message some client appended and did not expunge
is there exactly once, and nothing else. Prints commands per second by kind, errors by kind,
and the check.
"""
import argparse
import collections
import imaplib
import multiprocessing as mp
import random
import re
import socket
import sys
import time

imaplib._MAXLINE = 50_000_000
RE_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")
RE_MID = re.compile(rb"<(c\d+\.\d+)@stress\.test>")


def connect(args):
    m = imaplib.IMAP4(args.host, args.port, timeout=60)
    m.login(args.user, args.password)
    typ, _ = m.select("INBOX")
    if typ != "OK":
        raise RuntimeError("SELECT failed")
    return m


def client(args, idx, deadline, seed):
    rnd = random.Random(seed * 1000 + idx)
    counts = collections.Counter()
    errors = collections.Counter()
    appended = []  # message-id keys
    expunged = []
    own = {}  # uid -> key, of messages this client appended and has not expunged
    m = connect(args)
    k = 0

    def check(kind, typ, data):
        counts[kind] += 1
        if typ != "OK":
            errors["%s %s" % (kind, typ)] += 1

    while time.time() < deadline:
        r = rnd.random()
        try:
            if r < 0.15:
                k += 1
                key = "c%d.%d" % (idx, k)
                msg = ("From: c%d@stress.test\r\nSubject: stress %d %s\r\nMessage-ID: <%s@stress.test>\r\n"
                       "Date: %s\r\n\r\n%s\r\n" % (idx, k, rnd.choice(["alpha", "beta", "gamma"]), key,
                                                   time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                                                   "body " * rnd.randint(10, 200)))
                typ, data = m.append("INBOX", None, None, msg.encode())
                check("APPEND", typ, data)
                if typ == "OK":
                    appended.append(key)
                    mt = RE_APPENDUID.search(data[0] or b"")
                    if mt:
                        own[int(mt.group(1))] = key
            elif r < 0.27:
                typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
                check("FETCH FLAGS", typ, data)
            elif r < 0.35:
                lo = rnd.randint(1, max(1, k * args.clients))
                typ, data = m.uid("FETCH", "%d:%d" % (lo, lo + 20), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")
                check("FETCH HEADER", typ, data)
            elif r < 0.52:
                uid = rnd.randint(1, max(1, k * args.clients))
                op = rnd.choice(["+FLAGS", "-FLAGS", "+FLAGS.SILENT"])
                flag = rnd.choice(["(\\Flagged)", "(\\Seen)", "($Label1)"])
                typ, data = m.uid("STORE", str(uid), op, flag)
                check("STORE", typ, data)
            elif r < 0.62:
                if rnd.random() < 0.5:
                    typ, data = m.uid("SEARCH", None, "FLAGGED")
                else:
                    typ, data = m.search(None, "SUBJECT", rnd.choice(["alpha", "beta", "gamma"]))
                check("SEARCH", typ, data)
            elif r < 0.66:
                if rnd.random() < 0.5:
                    typ, data = m.sort("(REVERSE DATE)", "UTF-8", "ALL")
                    check("SORT", typ, data)
                else:
                    typ, data = m.thread("REFERENCES", "UTF-8", "ALL")
                    check("THREAD", typ, data)
            elif r < 0.76:
                if own:
                    uids = rnd.sample(sorted(own), min(len(own), rnd.randint(1, 3)))
                    s = ",".join(map(str, uids))
                    typ, data = m.uid("STORE", s, "+FLAGS.SILENT", "(\\Deleted)")
                    check("STORE", typ, data)
                    typ, data = m.uid("EXPUNGE", s)
                    check("UID EXPUNGE", typ, data)
                    if typ == "OK":
                        for u in uids:
                            expunged.append(own.pop(u))
            elif r < 0.86:
                typ, data = m.noop()
                check("NOOP", typ, data)
            elif r < 0.91:
                typ, data = m.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)")
                check("STATUS", typ, data)
            elif r < 0.99:
                # IDLE for a moment: wait for the continuation, then DONE.
                tag = m._new_tag()
                m.send(tag + b" IDLE\r\n")
                line = m.readline()
                while not line.startswith(b"+"):
                    if line.startswith(tag):
                        raise imaplib.IMAP4.error("IDLE refused: %r" % line)
                    line = m.readline()
                time.sleep(rnd.random() * 0.05)
                m.send(b"DONE\r\n")
                while True:
                    line = m.readline()
                    if not line:
                        raise imaplib.IMAP4.abort("closed during IDLE")
                    if line.startswith(tag):
                        check("IDLE", "OK" if b" OK" in line else "NO", None)
                        break
            else:
                # Gone without LOGOUT, then back.
                counts["drop"] += 1
                m.shutdown()
                m = connect(args)
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError) as e:
            errors[type(e).__name__ + ": " + str(e)[:60]] += 1
            try:
                m.shutdown()
            except Exception:
                pass
            m = connect(args)
    try:
        m.logout()
    except Exception:
        pass
    return counts, errors, appended, expunged


def run_client(a):
    return client(*a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--user", default="stress1")
    ap.add_argument("--pass", dest="password", default="pass")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    if not args.host.startswith(("127.", "localhost")):
        sys.exit("loopback only")
    m = connect(args)
    typ, data = m.search(None, "ALL")
    if data[0]:
        m.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        m.expunge()
    m.logout()
    deadline = time.time() + args.seconds
    t0 = time.time()
    with mp.Pool(args.clients) as pool:
        results = pool.map(run_client, [(args, i + 1, deadline, args.seed) for i in range(args.clients)])
    took = time.time() - t0
    counts = collections.Counter()
    errors = collections.Counter()
    appended, expunged = [], []
    for c, e, a, x in results:
        counts.update(c)
        errors.update(e)
        appended += a
        expunged += x
    total = sum(v for k, v in counts.items() if k != "drop")
    print("%s: %d clients, %.0f s, %d commands, %.0f commands/s, %d drops"
          % (args.label or "%s:%d" % (args.host, args.port), args.clients, took, total, total / took, counts["drop"]))
    for k, v in sorted(counts.items()):
        if k != "drop":
            print("  %-14s %7d  %7.1f/s" % (k, v, v / took))
    print("errors: %d" % sum(errors.values()))
    for k, v in errors.most_common(10):
        print("  %6d  %s" % (v, k))
    # The mailbox: what was appended and not expunged, each exactly once.
    m = connect(args)
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])") if m.select("INBOX")[1][0] != b"0" else ("OK", [])
    found = collections.Counter()
    for item in data:
        if isinstance(item, tuple):
            mt = RE_MID.search(item[1])
            found[mt.group(1).decode() if mt else "?"] += 1
    m.logout()
    want = collections.Counter(appended) - collections.Counter(expunged)
    missing = want - found
    extra = found - want
    dups = [k for k, v in found.items() if v > 1]
    ok = not missing and not extra and not dups
    print("mailbox: %d messages, %d expected (%d appended, %d expunged): %s"
          % (sum(found.values()), sum(want.values()), len(appended), len(expunged),
             "exact" if ok else "MISMATCH missing %d extra %d duplicated %d" % (len(missing), len(extra), len(dups))))
    sys.exit(0 if ok and not errors else 1)


if __name__ == "__main__":
    main()
