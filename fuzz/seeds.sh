#!/usr/bin/env bash
# Seeds each target's corpus (fuzz/corpus/TARGET/) from the tests' transcripts and the
# shipped examples. Run from anywhere; safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
seed() { mkdir -p "$here/corpus/$1"; printf '%b' "$2" > "$here/corpus/$1/$(printf '%s' "$2" | sha1sum | cut -c1-16)"; }
# SMTP and IMAP commands: every client line of the transcripts.
for f in "$root"/tests/transcripts/smtp/*.txt "$root"/tests/transcripts/submission/*.txt; do
  grep '^C: ' "$f" | sed 's/^C: //' | while IFS= read -r l; do seed smtp_command "$l"; done
done
for f in "$root"/tests/transcripts/imap/*.txt; do
  grep '^C: ' "$f" | sed 's/^C: //' | while IFS= read -r l; do seed imap_command "$l\r\n"; done
done
for f in "$root"/tests/transcripts/pop3/*.txt; do
  grep '^C: ' "$f" | sed 's/^C: //' | while IFS= read -r l; do seed pop3_command "$l"; done
done
# DATA streams: a limit byte, two cut bytes, then the stream.
seed smtp_data '\x40\x03\x09Subject: a\r\n\r\n..dot\r\nbody\r\n.\r\n'
seed smtp_data '\x40\x01\x02line\n.\r\n'
seed smtp_data '\x02\x05\x06.\r\n'
# Messages: the test fixtures that look like mail.
for f in "$root"/tests/fixtures/*.eml "$root"/examples/*.eml; do
  [ -f "$f" ] && cp "$f" "$here/corpus/mime_fetch/" || true
done
seed mime_fetch 'From: Ann <ann@x.org>\r\nTo: a@b (A), <@r:u@h>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db =\r\nc\r\n--X\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nin\r\n--X--\r\n'
# Configs: the shipped examples.
mkdir -p "$here/corpus/config_toml"
cp "$root"/examples/*.toml "$here/corpus/config_toml/"
mkdir -p "$here/corpus/journal_replay"
seed journal_replay '\x00\x00\x00\x00'
echo "seeded: $(ls "$here/corpus" | tr '\n' ' ')"
