#!/usr/bin/env bash
# benches/redis-callgrind.sh: user-space instructions per command of dgf's Redis route (audit
# on or off) and of twemproxy (nutcracker) under the same load, counted by valgrind's callgrind
# (load-independent, unlike wall-clock numbers on a shared machine).
#
# The proxy runs under callgrind with instrumentation off; after a warm-up, instrumentation is
# switched on, `redis-benchmark -t get,set -n REQUESTS -c CLIENTS -P P` runs, the counts are
# dumped and the instruction count (all threads: session workers and the audit writer) is
# divided by the commands of the window (dgf: dgf_queries_total; twemproxy: 2 x REQUESTS).
# Kernel work (syscalls) is not in the count.
#
# valgrind does not offer SHA-NI, so sha2 falls back to its software SHA-256 under callgrind:
# the result also gives the count without sha2's compression function (natively the audit
# chain and key fingerprints run on SHA-NI when the CPU has it).
#
# Environment (all optional):
#   TARGET=dgf           dgf or twemproxy
#   P=1                  redis-benchmark pipeline depth
#   REQUESTS=20000       requests per test (GET and SET) in the measured window
#   CLIENTS=50           redis-benchmark clients
#   POOL=4               dgf pool.size / twemproxy server_connections
#   AUDIT=1              dgf audit on (0: off)
#   DGF_BIN=path         dgf binary (default: $CARGO_TARGET_DIR or target, release)
#   OUT_DIR=dir          logs and callgrind output
set -euo pipefail
# shellcheck source=benches/twemproxy.sh
source "$(dirname "${BASH_SOURCE[0]}")/twemproxy.sh"
# shellcheck source=benches/callgrind.sh
source "$(dirname "${BASH_SOURCE[0]}")/callgrind.sh"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET="${TARGET:-dgf}"
P="${P:-1}"
REQUESTS="${REQUESTS:-20000}"
CLIENTS="${CLIENTS:-50}"
POOL="${POOL:-4}"
AUDIT="${AUDIT:-1}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench/redis-callgrind-$TARGET-P$P-$(date +%Y%m%d-%H%M%S)}"
DGF="${DGF_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/dgf}"
mkdir -p "$OUT_DIR"
log() { printf '[redis-callgrind] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
for t in valgrind callgrind_control callgrind_annotate redis-benchmark; do
  command -v "$t" >/dev/null || die "$t not found (apt-get install valgrind redis-tools)"
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
ADMIN_PORT=$(free_port)
VG_PID=""
cleanup() {
  if [[ -n $VG_PID ]] && kill -0 "$VG_PID" 2>/dev/null; then
    kill "$VG_PID" 2>/dev/null || true
    wait "$VG_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

case $TARGET in
  dgf)
    [[ -x $DGF ]] || die "dgf binary not found at $DGF (cargo build --release -p dgf --bin dgf)"
    cat >"$OUT_DIR/dgf.toml" <<TOML
[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[server]
workers = 1

[[routes]]
name = "bench"
protocol = "redis"
listen = "127.0.0.1:$PORT"
upstream = "redis://127.0.0.1:6379"
pool = { size = $POOL }
TOML
    if [[ $AUDIT != 0 ]]; then
      printf '\n[audit]\npath = "%s"\n' "$OUT_DIR/audit.jsonl" >>"$OUT_DIR/dgf.toml"
    fi
    cmd=("$DGF" run --config "$OUT_DIR/dgf.toml")
    ;;
  twemproxy)
    command -v nutcracker >/dev/null || die "nutcracker not found (apt-get install nutcracker)"
    twemproxy_config "$OUT_DIR/nutcracker.yml" "$PORT" "$POOL"
    cmd=(nutcracker -c "$OUT_DIR/nutcracker.yml" -s "$ADMIN_PORT" -o "$OUT_DIR/nutcracker.log")
    ;;
  *) die "TARGET must be dgf or twemproxy" ;;
esac

DGF_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT_DIR/callgrind.out" \
  "${cmd[@]}" >"$OUT_DIR/proxy.log" 2>&1 &
VG_PID=$!
for _ in $(seq 600); do
  redis-cli -p "$PORT" PING >/dev/null 2>&1 && break
  sleep 0.2
done
kill -0 "$VG_PID" || die "proxy did not start: $(tail -5 "$OUT_DIR/proxy.log")"

commands() {
  if [[ $TARGET == dgf ]]; then
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^dgf_queries_total/ {s += $2} END {print s + 0}'
  else
    echo 0
  fi
}
bench() { # requests
  redis-benchmark -h 127.0.0.1 -p "$PORT" -t get,set -n "$1" -c "$CLIENTS" -P "$P" -q --csv
}
log "warm-up ($TARGET)"
bench 2000 >"$OUT_DIR/warmup.log" 2>&1 || die "warm-up failed: $(tail -5 "$OUT_DIR/warmup.log")"
log "measuring $REQUESTS GET + $REQUESTS SET, -c $CLIENTS -P $P"
cmds=$(cg_window "$VG_PID" commands "$OUT_DIR/run.log" bench "$REQUESTS") || die "redis-benchmark failed"
sleep 1
DUMP=$(ls "$OUT_DIR"/callgrind.out.*.1 "$OUT_DIR"/callgrind.out.1 2>/dev/null | head -1 || true)
[[ -n $DUMP && -s $DUMP ]] || die "no callgrind dump"
[[ $TARGET == twemproxy ]] && cmds=$((2 * REQUESTS))
label="$TARGET P=$P"
[[ $TARGET == dgf ]] && label="$label audit=$AUDIT"
cg_report "$DUMP" "$cmds" command "$label" | tee "$OUT_DIR/result.txt"
log "callgrind output in $OUT_DIR (callgrind_annotate $DUMP)"
