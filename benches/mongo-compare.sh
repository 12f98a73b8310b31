#!/usr/bin/env bash
# benches/mongo-compare.sh: side-by-side MongoDB benchmark, direct secantusdb vs through dgf,
# in one run: pymongo threads doing find-by-_id (reads) and insert_one (writes) for
# DURATION seconds each; reports ops/s, the dgf/direct ratio, and dgf CPU time
# (utime+stime from /proc/PID/stat) per operation.
#
# Environment (all optional):
#   DURATION=10        seconds per workload and target
#   THREADS=8          pymongo client threads
#   POOL=4             dgf pool.size
#   DGF_BIN=path       dgf binary to use as is; when unset the script runs
#                      `cargo build --release -p dgf --bin dgf` and uses
#                      ${CARGO_TARGET_DIR:-target}/release/dgf
#   OUT_DIR=dir        logs and results (default: target/bench/mongo-compare-<timestamp>)
#
# Every address is 127.0.0.1; everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DURATION="${DURATION:-10}"
THREADS="${THREADS:-8}"
POOL="${POOL:-4}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench/mongo-compare-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"
VENV=$(bash scripts/py-venv.sh)
PY="$VENV/bin/python"

if [[ -z ${DGF_BIN:-} ]]; then
  cargo build --release -p dgf --bin dgf >&2
  DGF_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/dgf"
fi

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  return 1
}

MPORT=$(free_port)
DPORT=$(free_port)
APORT=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

setsid "$PY" -m secantus --host 127.0.0.1 --port "$MPORT" --storage-path "$OUT_DIR/data" --standalone \
  --log-level WARNING >"$OUT_DIR/secantus.log" 2>&1 &
pids+=($!)
wait_port "$MPORT"

cat >"$OUT_DIR/dgf.toml" <<TOML
[admin]
listen = "127.0.0.1:$APORT"

[[routes]]
name = "bench"
protocol = "mongodb"
listen = "127.0.0.1:$DPORT"
upstream = "mongodb://127.0.0.1:$MPORT/?directConnection=true"
pool = { size = $POOL }
TOML
DGF_LOG=warn setsid "$DGF_BIN" run --config "$OUT_DIR/dgf.toml" >"$OUT_DIR/dgf.log" 2>&1 &
DGF_PID=$!
pids+=($DGF_PID)
wait_port "$DPORT"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$DGF_PID/stat"; }
TCK=$(getconf CLK_TCK)

load() { # target port, workload -> ops
  "$PY" - "$1" "$2" "$DURATION" "$THREADS" <<'PY'
import sys, threading, time, pymongo
port, work, dur, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", maxPoolSize=threads)
col = c.bench.items
if work == "find" and col.estimated_document_count() < 1000:
    col.insert_many([{"_id": i, "v": "x" * 64} for i in range(1000)])
counts = [0] * threads
end = time.time() + dur
def run(k):
    n = 0
    i = k
    while time.time() < end:
        if work == "find":
            col.find_one({"_id": i % 1000})
        else:
            col.insert_one({"k": k, "v": "y" * 64})
        i += threads
        n += 1
    counts[k] = n
ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(counts))
PY
}

{
  printf '%-8s %12s %12s %8s %16s\n' workload direct_ops/s dgf_ops/s ratio dgf_cpu_us/op
  for work in find insert; do
    d=$(load "$MPORT" "$work")
    t0=$(cpu_ticks)
    g=$(load "$DPORT" "$work")
    t1=$(cpu_ticks)
    awk -v d="$d" -v g="$g" -v dur="$DURATION" -v w="$work" -v c=$((t1 - t0)) -v tck="$TCK" \
      'BEGIN { printf "%-8s %12.0f %12.0f %8.2f %16.1f\n", w, d/dur, g/dur, g/d, (c/tck*1e6)/g }'
  done
} | tee "$OUT_DIR/results.txt"
