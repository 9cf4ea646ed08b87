#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 600) on this machine's stable toolchain:
# cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1 allows here only (the normal build
# never sets it). Usage: fuzz/run.sh TARGET [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target="$1"; secs="${2:-600}"
cd "$here"
[ -d "corpus/$target" ] || ./seeds.sh
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=4096 2>&1 | tail -n 30
