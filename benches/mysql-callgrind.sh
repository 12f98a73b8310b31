#!/usr/bin/env bash
# benches/mysql-callgrind.sh: instructions per statement of dgf's MySQL route, counted by
# valgrind's callgrind (load-independent, unlike wall-clock numbers on a shared machine).
#
# dgf (release build) runs under callgrind with instrumentation off; after login and warm-up,
# instrumentation is switched on, sysbench runs EVENTS events, the counts are dumped, and the
# instruction count (all threads: session workers and the audit writer) is divided by the
# statements dgf counted in dgf_queries_total during the window. Kernel work (syscalls) is
# not in the count; the script reports the syscalls per statement separately with strace
# when STRACE=1.
#
# Environment (all optional):
#   TEST=oltp_point_select   sysbench test (oltp_read_only, oltp_point_select, ...)
#   EVENTS=4000              sysbench events in the measured window
#   THREADS=8                sysbench threads
#   POOL_SIZE=8              dgf server connections
#   AUDIT=1                  audit on (0: off)
#   DGF_BIN=path             dgf binary (default: $CARGO_TARGET_DIR or target, release)
#   OUT_DIR=dir              logs and callgrind output
set -euo pipefail
# shellcheck source=benches/callgrind.sh
source "$(dirname "${BASH_SOURCE[0]}")/callgrind.sh"
# shellcheck source=benches/mysql-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/mysql-lib.sh"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
HOST=127.0.0.1
MY_PORT="${MY_PORT:-3306}"
DB=dgf_sbcg
TEST="${TEST:-oltp_point_select}"
EVENTS="${EVENTS:-4000}"
THREADS="${THREADS:-8}"
POOL_SIZE="${POOL_SIZE:-8}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench/mysql-callgrind-$(date +%Y%m%d-%H%M%S)}"
DGF="${DGF_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/dgf}"
mkdir -p "$OUT_DIR"
log() { printf '[mysql-callgrind] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
for t in valgrind callgrind_control sysbench mysql; do
  command -v "$t" >/dev/null || die "$t not found (apt-get install valgrind sysbench mariadb-client)"
done
[[ -x $DGF ]] || die "dgf binary not found at $DGF (cargo build --release -p dgf --bin dgf)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DGF_PORT=$(free_port)
ADMIN_PORT=$(free_port)
VG_PID=""
cleanup() {
  if [[ -n $VG_PID ]] && kill -0 "$VG_PID" 2>/dev/null; then
    kill "$VG_PID" 2>/dev/null || true
    wait "$VG_PID" 2>/dev/null || true
  fi
  mysql --protocol=TCP -h "$HOST" -P "$MY_PORT" -u root -e "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
}
trap cleanup EXIT

mysql_prepare "$DB" 4 10000 "$OUT_DIR/prepare.log"
audit=""
[[ ${AUDIT:-1} != 0 ]] && audit="$OUT_DIR/audit.jsonl"
# no RSA key: its generation (startup, background thread) would land in the measured window
mysql_dgf_config "$OUT_DIR/dgf.toml" "$ADMIN_PORT" "$DGF_PORT" "$DB" "{ size = $POOL_SIZE, wait_timeout_ms = 60000 }" \
  "$audit" 'options = { rsa_private_key = "none" }'

DGF_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT_DIR/callgrind.out" \
  "$DGF" run --config "$OUT_DIR/dgf.toml" >"$OUT_DIR/dgf.log" 2>&1 &
VG_PID=$!
mysql_wait_dgf "$VG_PID" "$DGF_PORT" "$OUT_DIR/dgf.log"

queries() {
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^dgf_queries_total/ {s += $2} END {print s + 0}'
}
sb() { # events
  sysbench "$TEST" --db-driver=mysql --mysql-host=$HOST --mysql-port="$DGF_PORT" --mysql-user=sbtest \
    --mysql-password=sbtest_pw --mysql-db=$DB --mysql-ssl=off --tables=4 --table-size=10000 \
    --threads="$THREADS" --events="$1" --time=0 --report-interval=0 run
}
log "warm-up"
sb 400 >"$OUT_DIR/warmup.log" 2>&1 || die "sysbench warm-up failed: $(tail -5 "$OUT_DIR/warmup.log")"
log "measuring $EVENTS events of $TEST"
stmts=$(cg_window "$VG_PID" queries "$OUT_DIR/run.log" sb "$EVENTS") || die "sysbench failed"
sleep 1
DUMP="$OUT_DIR/callgrind.out.1"
[[ -s $DUMP ]] || die "no callgrind dump"
cg_report "$DUMP" "$stmts" statement "$TEST ($EVENTS events)" | tee "$OUT_DIR/result.txt"
log "callgrind output in $OUT_DIR (callgrind_annotate $OUT_DIR/callgrind.out*)"
