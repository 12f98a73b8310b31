#!/usr/bin/env bash
# benches/mysql-compare.sh: side-by-side MySQL benchmark of
#   direct MariaDB/MySQL (127.0.0.1:3306)  vs  HAProxy (mode tcp)  vs  dgf (MySQL route,
#   transaction pooling)
# on this machine, in one run: sysbench oltp_read_only and oltp_point_select, THREADS
# threads, DURATION seconds each; throughput ratios and dgf CPU time (utime+stime from
# /proc/PID/stat) per transaction. Audit is on for the dgf run.
#
# HAProxy in TCP mode copies bytes and parses nothing: it is the floor of what any proxy that
# adds a hop can reach on this machine (the kernel cost of the extra loopback hop, with no
# protocol work at all). `haproxy/direct` below 0.85 means the issue's target cannot be
# met by any proxy here; dgf/haproxy is then the ratio that measures dgf's own cost.
# HAPROXY=0 skips it (installed with apt-get when missing).
#
# Environment (all optional):
#   DURATION=20          seconds per sysbench run
#   THREADS=8            sysbench threads
#   TESTS="oltp_read_only oltp_point_select"
#   TABLES=4 TABLE_SIZE=10000   sysbench prepare size
#   POOL_SIZE=8          dgf server connections
#   DGF_BIN=path         dgf binary; when unset: cargo build --release -p dgf --bin dgf
#   OUT_DIR=dir          logs and results (default target/bench/mysql-compare-<timestamp>)
#   KEEP_DB=1            keep the dgf_sbtest database
#   AUDIT=0              run dgf without an audit file (default 1: audit on)
#   KEEP_AUDIT=0         1: keep the audit files (by default counted, then removed)
#
# Every address is 127.0.0.1; everything the script starts is stopped on exit.
set -euo pipefail
# shellcheck source=benches/mysql-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/mysql-lib.sh"
# shellcheck source=benches/haproxy.sh
source "$(dirname "${BASH_SOURCE[0]}")/haproxy.sh"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
HOST=127.0.0.1
MY_PORT="${MY_PORT:-3306}"
DB=dgf_sbtest
DURATION="${DURATION:-20}"
THREADS="${THREADS:-8}"
TESTS="${TESTS:-oltp_read_only oltp_point_select}"
TABLES="${TABLES:-4}"
TABLE_SIZE="${TABLE_SIZE:-10000}"
POOL_SIZE="${POOL_SIZE:-8}"
KEEP_DB="${KEEP_DB:-0}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench/mysql-compare-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"

log() { printf '[mysql-compare] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

if ! have sysbench; then
  log "installing sysbench (apt-get)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sysbench >/dev/null
fi
if [[ ${HAPROXY:-1} != 0 ]] && ! have haproxy && [[ ! -x /usr/sbin/haproxy ]]; then
  log "installing haproxy (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
have mysql || die "mysql client not found (run scripts/ensure-services.sh)"
mysql --protocol=TCP -h "$HOST" -P "$MY_PORT" -u root -e "SELECT 1" >/dev/null ||
  die "no MySQL/MariaDB on $HOST:$MY_PORT as root (run scripts/ensure-services.sh)"

if [[ -n ${DGF_BIN:-} ]]; then
  DGF=$DGF_BIN
else
  log "building dgf (release)"
  cargo build --release -p dgf --bin dgf >&2
  DGF="${CARGO_TARGET_DIR:-$ROOT/target}/release/dgf"
fi
[[ -x $DGF ]] || die "dgf binary not found at $DGF"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DGF_PORT=$(free_port)
ADMIN_PORT=$(free_port)
DGF_PID=""
HA_PID=""
HA_PORT=$(free_port)
cleanup() {
  [[ -n $HA_PID ]] && kill "$HA_PID" 2>/dev/null

  if [[ -n $DGF_PID ]] && kill -0 "$DGF_PID" 2>/dev/null; then
    kill "$DGF_PID" 2>/dev/null || true
    wait "$DGF_PID" 2>/dev/null || true
  fi
  if [[ $KEEP_DB != 1 ]]; then
    mysql --protocol=TCP -h "$HOST" -P "$MY_PORT" -u root -e "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
  fi
}
trap cleanup EXIT

log "preparing $DB ($TABLES tables x $TABLE_SIZE rows)"
mysql_prepare "$DB" "$TABLES" "$TABLE_SIZE" "$OUT_DIR/prepare.log"
audit=""
[[ ${AUDIT:-1} != 0 ]] && audit="$OUT_DIR/audit.jsonl"
mysql_dgf_config "$OUT_DIR/dgf.toml" "$ADMIN_PORT" "$DGF_PORT" "$DB" "{ size = $POOL_SIZE }" "$audit"
DGF_LOG=warn setsid "$DGF" run --config "$OUT_DIR/dgf.toml" >"$OUT_DIR/dgf.log" 2>&1 &
DGF_PID=$!
mysql_wait_dgf "$DGF_PID" "$DGF_PORT" "$OUT_DIR/dgf.log"

if [[ ${HAPROXY:-1} != 0 ]]; then
  haproxy_start "$OUT_DIR" mysql "$HA_PORT" "$HOST:$MY_PORT"
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK=$(getconf CLK_TCK)

run() { # target test
  local target=$1 test=$2 port user pass
  case $target in
    direct) port=$MY_PORT user=root pass="" ;;
    haproxy) port=$HA_PORT user=root pass="" ;;
    *) port=$DGF_PORT user=sbtest pass=sbtest_pw ;;
  esac
  sysbench "$test" --db-driver=mysql --mysql-host=$HOST --mysql-port="$port" --mysql-user="$user" \
    --mysql-password="$pass" --mysql-db=$DB --mysql-ssl=off --tables="$TABLES" --table-size="$TABLE_SIZE" \
    --threads="$THREADS" --time="$DURATION" --report-interval=0 run >"$OUT_DIR/$target-$test.log" 2>&1 ||
    die "sysbench $test against $target failed: $(tail -5 "$OUT_DIR/$target-$test.log")"
  awk '/transactions:/ {gsub("\\(",""); print $3}' "$OUT_DIR/$target-$test.log"
}

us_per_tx() { python3 -c "print(f'{($2-$1)/$CLK*1e6/max(1,$3*$DURATION):.1f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}' if $2 else '-')"; }
printf '%-18s %10s %10s %10s %10s %10s %10s %10s %10s\n' test direct_tps haproxy_tps dgf_tps \
  dgf/direct ha/direct dgf/ha ha_cpu_us dgf_cpu_us | tee "$OUT_DIR/results.txt"
for test in $TESTS; do
  direct=$(run direct "$test")
  ha=0 ha_cpu=-
  if [[ -n $HA_PID ]]; then
    before=$(cpu_ticks "$HA_PID")
    ha=$(run haproxy "$test")
    ha_cpu=$(us_per_tx "$before" "$(cpu_ticks "$HA_PID")" "$ha")
  fi
  before=$(cpu_ticks "$DGF_PID")
  viadgf=$(run dgf "$test")
  cpu=$(us_per_tx "$before" "$(cpu_ticks "$DGF_PID")" "$viadgf")
  printf '%-18s %10s %10s %10s %10s %10s %10s %10s %10s\n' "$test" "$direct" "$ha" "$viadgf" \
    "$(ratio "$viadgf" "$direct")" "$(ratio "$ha" "$direct")" "$(ratio "$viadgf" "$ha")" "$ha_cpu" "$cpu" |
    tee -a "$OUT_DIR/results.txt"
done
log "results in $OUT_DIR (audit records: $(cat "$OUT_DIR"/audit.jsonl* 2>/dev/null | wc -l))"
if [[ -n $audit && ${KEEP_AUDIT:-0} != 1 ]]; then
  rm -f "$OUT_DIR"/audit.jsonl*
  log "audit files removed (KEEP_AUDIT=1 keeps them)"
fi
