#!/usr/bin/env bash
# benches/redis-compare.sh: side-by-side Redis benchmark of
#   direct Redis (127.0.0.1:6379)  vs  dgf  vs  twemproxy (nutcracker)  vs  HAProxy (mode tcp)
# on this machine, in one run: `redis-benchmark -t get,set` at -c 50 with -P 1 and -P 16.
# Prints requests/s per target, ratios to direct and to twemproxy, and each proxy's CPU time
# (utime+stime from /proc/PID/stat) per request. dgf runs with audit on by default.
#
# Environment (all optional):
#   REQUESTS=200000     requests per redis-benchmark run
#   CLIENTS=50          parallel clients
#   PIPELINES="1 16"    pipeline depths
#   KEYSPACE=           redis-benchmark -r: random keys out of this many (default: one key,
#                       redis-benchmark's own default)
#   ROUNDS=1            rounds over all targets, taken in turn (direct, dgf, twemproxy, ...;
#                       then again): the ratios printed are the medians of the per-round
#                       ratios, so one slow run of one target does not decide them
#   POOL=4              dgf pool.size
#   AUDIT=1             dgf writes an audit record per command (0: off)
#   AUDIT_PRIORITY=auto  dgf `audit.writer_priority` (auto | normal | idle; see docs/configuration.md)
#   KEEP_AUDIT=0        1: keep the audit files (by default they are counted, then removed)
#   DGF_WORKERS=        dgf `server.workers` (unset: dgf's default; 0 = one per core,
#                       1 = single-threaded)
#   REDIS_THREADS=1     dgf `server.redis_threads` (event-loop threads of the Redis routes)
#   HAPROXY=1           also run HAProxy in `mode tcp` (one thread, no multiplexing, parses
#                       nothing): the cost of the extra hop alone, the floor of any proxy (0: skip)
#   DGF_BIN=path        dgf binary to use; default: cargo build --release -p dgf
#   OUT_DIR=dir         logs and results (default: target/bench/redis-compare-<timestamp>)
#
# Every address is 127.0.0.1. Everything the script starts is stopped on exit.
set -euo pipefail
# shellcheck source=benches/twemproxy.sh
source "$(dirname "${BASH_SOURCE[0]}")/twemproxy.sh"
# shellcheck source=benches/haproxy.sh
source "$(dirname "${BASH_SOURCE[0]}")/haproxy.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
REQUESTS="${REQUESTS:-200000}"
CLIENTS="${CLIENTS:-50}"
PIPELINES="${PIPELINES:-1 16}"
ROUNDS="${ROUNDS:-1}"
KEYSPACE_ARGS=()
[[ -n ${KEYSPACE:-} ]] && KEYSPACE_ARGS=(-r "$KEYSPACE")
POOL="${POOL:-4}"
AUDIT="${AUDIT:-1}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench/redis-compare-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"

have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
DGF_SERVICES=redis bash "$ROOT/scripts/ensure-services.sh" >&2
have redis-benchmark || { as_root apt-get update -qq; as_root apt-get install -y -qq redis-tools; }
if ! have nutcracker; then
  as_root apt-get update -qq && as_root apt-get install -y -qq nutcracker || echo "nutcracker unavailable: twemproxy skipped" >&2
fi

if [[ ${HAPROXY:-1} != 0 ]] && ! have haproxy && [[ ! -x /usr/sbin/haproxy ]]; then
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends haproxy >/dev/null \
    || echo "haproxy unavailable: L4 floor skipped" >&2
fi

if [[ -z "${DGF_BIN:-}" ]]; then
  cargo build --release -q -p dgf --bin dgf
  DGF_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/dgf"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not listening" >&2; return 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

DGF_PORT=$(free_port); ADMIN_PORT=$(free_port)
AUDIT_TOML=""
[[ $AUDIT == 1 ]] && AUDIT_TOML=$(printf '[audit]\npath = "%s/audit.jsonl"\nwriter_priority = "%s"' "$OUT_DIR" "${AUDIT_PRIORITY:-auto}")
cat >"$OUT_DIR/dgf.toml" <<TOML
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[log]
level = "warn"
[server]
${DGF_WORKERS:+workers = $DGF_WORKERS}
redis_threads = ${REDIS_THREADS:-1}
[[routes]]
name = "bench"
protocol = "redis"
listen = "127.0.0.1:$DGF_PORT"
upstream = "redis://127.0.0.1:6379"
pool = { size = $POOL }
$AUDIT_TOML
TOML
setsid "$DGF_BIN" run --config "$OUT_DIR/dgf.toml" >"$OUT_DIR/dgf.log" 2>&1 &
DGF_PID=$!; PIDS+=("$DGF_PID")
wait_port "$DGF_PORT"

TARGETS="direct:6379 dgf:$DGF_PORT"
if have nutcracker; then
  TW_PORT=$(free_port); TW_STATS=$(free_port)
  twemproxy_config "$OUT_DIR/nutcracker.yml" "$TW_PORT" "$POOL"
  setsid nutcracker -c "$OUT_DIR/nutcracker.yml" -s "$TW_STATS" -o "$OUT_DIR/nutcracker.log" &
  TW_PID=$!; PIDS+=("$TW_PID")
  wait_port "$TW_PORT"
  TARGETS="$TARGETS twemproxy:$TW_PORT"
fi

if [[ ${HAPROXY:-1} != 0 ]] && [[ -x /usr/sbin/haproxy ]]; then
  HA_PORT=$(free_port)
  haproxy_start "$OUT_DIR" redis "$HA_PORT" 127.0.0.1:6379
  PIDS+=("$HA_PID")
  wait_port "$HA_PORT"
  TARGETS="$TARGETS haproxy:$HA_PORT"
fi

# machine_ticks: "busy idle" clock ticks of the whole machine from /proc/stat (busy: user,
# nice, system, irq, softirq; idle: idle, iowait; steal is neither).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6; exit}' /proc/stat; }

declare -A RPS RRPS MACHINE
# median: the median of the numbers on stdin (the mean of the middle two for an even count).
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf '%-10s %-4s %-4s %12s\n' target P test rps | tee "$OUT_DIR/results.txt"
for ((round = 1; round <= ROUNDS; round++)); do
  ((ROUNDS > 1)) && echo "round $round of $ROUNDS" | tee -a "$OUT_DIR/results.txt"
  for P in $PIPELINES; do
    for t in $TARGETS; do
      name=${t%%:*}; port=${t##*:}
      pid=""; [[ $name == dgf ]] && pid=$DGF_PID; [[ $name == twemproxy ]] && pid=$TW_PID; [[ $name == haproxy ]] && pid=$HA_PID
      c0=0; [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
      read -r m0busy m0idle < <(machine_ticks)
      out=$(redis-benchmark -h 127.0.0.1 -p "$port" -t get,set -n "$REQUESTS" -c "$CLIENTS" -P "$P" "${KEYSPACE_ARGS[@]}" -q --csv 2>/dev/null | tr -d '"')
      read -r m1busy m1idle < <(machine_ticks)
      c1=0; [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
      read -r sb si sp <<<"${MACHINE[$name,$P]:-0 0 0}"
      MACHINE[$name,$P]="$((sb + m1busy - m0busy)) $((si + m1idle - m0idle)) $((sp + c1 - c0))"
      if [[ -n $pid ]]; then
        hz=$(getconf CLK_TCK)
        us=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v n=$((2 * REQUESTS)) 'BEGIN{printf "%.2f", (b-a)/hz*1e6/n}')
        echo "$name CPU per request at P=$P: ${us} us" | tee -a "$OUT_DIR/results.txt"
      fi
      while IFS=, read -r test rps _; do
        [[ $test == test || -z $test ]] && continue
        RRPS[$name,$P,$test,$round]=$rps
        printf '%-10s %-4s %-4s %12s\n' "$name" "$P" "$test" "$rps" | tee -a "$OUT_DIR/results.txt"
      done <<<"$out"
    done
  done
done
# Per target: the median requests/s over the rounds.
for P in $PIPELINES; do
  for t in $TARGETS; do
    name=${t%%:*}
    for test in SET GET; do
      RPS[$name,$P,$test]=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${RRPS[$name,$P,$test,$r]:-0}"; done | median)
    done
  done
done
# ratio A B: the median over the rounds of A's requests/s over B's in the same round ("" when
# B has no number).
ratio() {
  local a=$1 b=$2 P=$3 test=$4 r x y
  for ((r = 1; r <= ROUNDS; r++)); do
    x=${RRPS[$a,$P,$test,$r]:-0}; y=${RRPS[$b,$P,$test,$r]:-0}
    awk -v x="$x" -v y="$y" 'BEGIN{if (y > 0) print x / y}'
  done | median | awk '{if ($1 > 0) printf "%.2f", $1}'
}
if ((ROUNDS > 1)); then
  echo | tee -a "$OUT_DIR/results.txt"
  echo "dgf/twemproxy per round (the ratios below are their medians):" | tee -a "$OUT_DIR/results.txt"
  for P in $PIPELINES; do
    for test in SET GET; do
      line=""
      for ((r = 1; r <= ROUNDS; r++)); do
        line+=" $(awk -v x="${RRPS[dgf,$P,$test,$r]:-0}" -v y="${RRPS[twemproxy,$P,$test,$r]:-0}" 'BEGIN{if (y > 0) printf "%.2f", x / y; else printf "n/a"}')"
      done
      printf 'P=%-3s %-4s%s\n' "$P" "$test" "$line" | tee -a "$OUT_DIR/results.txt"
    done
  done
fi
echo | tee -a "$OUT_DIR/results.txt"
for P in $PIPELINES; do
  for test in SET GET; do
    gd=$(ratio dgf direct "$P" "$test"); gw=$(ratio dgf twemproxy "$P" "$test")
    hd=$(ratio haproxy direct "$P" "$test"); hw=$(ratio haproxy twemproxy "$P" "$test")
    printf 'P=%-3s %-4s dgf/direct %s  dgf/twemproxy %s  haproxy/direct %s  haproxy/twemproxy %s\n' \
      "$P" "$test" "${gd:-n/a}" "${gw:-n/a}" "${hd:-n/a}" "${hw:-n/a}" | tee -a "$OUT_DIR/results.txt"
  done
done
{
  echo
  echo "Where the machine's CPU went per request (rest = everything but the proxy: redis-benchmark,"
  echo "Redis, kernel network work, other processes; bound = requests/s the same rest would allow if"
  echo "the proxy cost nothing, $(nproc) cores / rest; SET and GET and all rounds together):"
  printf '%-10s %-4s %12s %14s %13s %8s %12s %16s\n' target P "rps (mean)" "proxy us/req" "rest us/req" "idle %" "bound rps" "bound/twemproxy"
  hz=$(getconf CLK_TCK)
  for P in $PIPELINES; do
    tw_mean=$(awk -v a="${RPS[twemproxy,$P,SET]:-0}" -v b="${RPS[twemproxy,$P,GET]:-0}" 'BEGIN{print (a+b)/2}')
    for t in $TARGETS; do
      name=${t%%:*}
      [[ -n ${MACHINE[$name,$P]:-} ]] || continue
      read -r busy idle proxy <<<"${MACHINE[$name,$P]}"
      awk -v busy="$busy" -v idle="$idle" -v proxy="$proxy" -v hz="$hz" -v n=$((2 * REQUESTS * ROUNDS)) -v cores="$(nproc)" \
        -v a="${RPS[$name,$P,SET]:-0}" -v b="${RPS[$name,$P,GET]:-0}" -v tw="$tw_mean" -v name="$name" -v P="$P" \
        'BEGIN{rest=(busy-proxy)/hz*1e6/n; bound=(rest>0?cores*1e6/rest:0);
               printf "%-10s %-4s %12.0f %14.2f %13.2f %8.1f %12.0f %16s\n", name, P, (a+b)/2, proxy/hz*1e6/n, rest,
                 (busy+idle>0?100*idle/(busy+idle):0), bound, (tw>0?sprintf("%.2f", bound/tw):"n/a")}'
    done
  done
} | tee -a "$OUT_DIR/results.txt"
[[ $AUDIT == 1 ]] && echo "audit records (rotated files included): $(cat "$OUT_DIR"/audit.jsonl* | wc -l)" | tee -a "$OUT_DIR/results.txt"
# About 360 bytes per command: a run of the defaults leaves gigabytes of audit files behind.
if [[ $AUDIT == 1 && ${KEEP_AUDIT:-0} != 1 ]]; then
  rm -f "$OUT_DIR"/audit.jsonl*
  echo "audit files removed (KEEP_AUDIT=1 keeps them)"
fi
echo "results: $OUT_DIR/results.txt"
