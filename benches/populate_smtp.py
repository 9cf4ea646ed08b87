#!/usr/bin/env python3
"""Fill mailboxes over SMTP for the POP3/IMAP download benchmarks.

  populate_smtp.py HOST PORT --user 'big%d@localhost' --users 10 --messages 2000 [--size 5000]

Sends --messages messages of about --size bytes to each of --users accounts (the accounts
must exist: `mailgate user add big0@localhost --password-stdin` ...), one SMTP session per
account, in parallel. Message text comes from ../shared/bench/msggen.py's shape: plain
synthetic text, nothing from any corpus.
"""
import argparse
import smtplib
import sys
from concurrent.futures import ThreadPoolExecutor


def body(n, size):
    head = "From: bench@example.org\r\nTo: user\r\nSubject: bench %d\r\nMessage-ID: <bench-%d@example.org>\r\n\r\n" % (n, n)
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem\r\n"
    text = head
    while len(text) + len(line) <= size:
        text += line
    return text


def fill(args, idx):
    user = args.user % idx
    with smtplib.SMTP(args.host, args.port) as s:
        for n in range(args.messages):
            s.sendmail("bench@example.org", [user], body(n, args.size))
    return user


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--user", default="big%d@localhost")
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=5000)
    args = ap.parse_args()
    with ThreadPoolExecutor(args.users) as ex:
        for u in ex.map(lambda i: fill(args, i), range(args.users)):
            print("filled", u, file=sys.stderr)


if __name__ == "__main__":
    main()
