#!/bin/bash
# IMAP fetch with 10 clients three ways (issue 28): one node on sled, one node on
# PostgreSQL, two nodes on the same PostgreSQL database with the clients split between them.
#
#   benches/imap_nodes.sh postgres://postgres@127.0.0.1:5499/mg [RUNS]
#
# Needs the release binary (cargo build --release) and ../shared/bench (populate_imap.py,
# bench_imap.py). The database named in the URL is dropped and created again. Each way:
# fresh store, 10 accounts (big1..big5, big11..big15) of 2,000 x 5 KB put there by APPEND
# through imaplib, then per client LOGIN, SELECT, UID FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)
# and UID FETCH of every BODY.PEEK[]; RUNS runs (default 3) after one warm-up run; the
# msgs/s is all messages fetched over the longer half's wall time (the halves run at once).
set -euo pipefail
url=${1:?postgres URL}
runs=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${MAILGATE_BIN:-$here/target/release/mailgate}
bench=${BENCH_DIR:-$here/../shared/bench}
db=${url##*/}
admin=${url%/*}/postgres
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

# node NAME PORT [postgres]: writes NAME.toml and starts a server on it.
node() {
    local store=""
    [ "${3:-}" = postgres ] && store=$'[store]\nbackend = "postgres"\n[store.postgres]\nurl = "'"$url"$'"\n'
    cat > "$work/$1.toml" <<EOF
[server]
data_dir = "$work/$1-data"
[imap]
max_connections_per_ip = 200
$store
[[listener]]
protocol = "imap"
bind = "127.0.0.1:$2"
tls = "none"
EOF
    "$bin" --config "$work/$1.toml" serve > "$work/$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q "listening imap" "$work/$1.log" && return
        sleep 0.1
    done
    echo "node $1 did not start:"; cat "$work/$1.log"; exit 1
}

accounts() {
    for u in 1 2 3 4 5 11 12 13 14 15; do
        echo pass | "$bin" --config "$work/$1.toml" user add "big$u@localhost" --password-stdin > /dev/null
    done
}

populate() {
    python3 "$bench/populate_imap.py" 127.0.0.1 "$1" --user 'big%d@localhost' --clients 5 --count 2000 > /dev/null 2>&1
    python3 "$bench/populate_imap.py" 127.0.0.1 "$1" --user 'big1%d@localhost' --clients 5 --count 2000 > /dev/null 2>&1
}

# fetch PORT_A [PORT_B]: 5 clients on big1..5 through A and 5 on big11..15 through B (or A).
fetch() {
    local a=$1 b=${2:-$1}
    python3 "$bench/bench_imap.py" 127.0.0.1 "$a" --user 'big%d@localhost' --clients 5 --expect 2000 > "$work/fa" &
    local fa=$!
    python3 "$bench/bench_imap.py" 127.0.0.1 "$b" --user 'big1%d@localhost' --clients 5 --expect 2000 > "$work/fb"
    wait $fa
    python3 - "$work/fa" "$work/fb" <<'EOF'
import re, sys
runs = [open(f).read() for f in sys.argv[1:]]
field = lambda r, k: float(re.search(k + r"=([0-9.]+)", r).group(1))
assert all(field(r, "errors") == 0 for r in runs), runs
print("%.0f" % (sum(field(r, "msgs") for r in runs) / max(field(r, "wall_s") for r in runs)))
EOF
}

measure() {
    fetch "$@" > /dev/null
    local out=()
    for _ in $(seq "$runs"); do out+=("$(fetch "$@")"); done
    echo "${out[*]}"
}

reset_db() {
    psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
}

node sled 24301
accounts sled
populate 24301
echo "sled, one node:         $(measure 24301) msgs/s"
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()

reset_db
node pga 24302 postgres
accounts pga
populate 24302
echo "PostgreSQL, one node:   $(measure 24302) msgs/s"
node pgb 24303 postgres
echo "PostgreSQL, two nodes:  $(measure 24302 24303) msgs/s"
