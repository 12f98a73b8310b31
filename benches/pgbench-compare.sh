#!/usr/bin/env bash
# benches/pgbench-compare.sh: side-by-side Postgres benchmark of
#   direct PostgreSQL (127.0.0.1:5432)  vs  dgf  vs  PgBouncer
# on this machine, in one run. See benches/README.md.
#
# 1. Throughput: `pgbench -S` (select-only), modes simple and prepared, at 10,
#    50 and 500 clients, -j 2, DURATION seconds each, against every target;
#    proxy CPU time (utime+stime from /proc/PID/stat) per 1,000 transactions.
# 2. Idle connections: IDLE_CONNS idle, logged-in client connections to dgf and
#    to PgBouncer; proxy VmRSS before/after, KB per idle client.
#
# Both proxies: transaction pooling, 10 server connections, trust auth for the
# client user `bench`, upstream login as `postgres`.
#
# Environment (all optional):
#   ONLY=direct,dgf,dgfgov,pgbouncer  targets to run (default: all four; dgfgov = dgf with
#                              governance on: audit file, 20 rules, 3 masked columns)
#   DURATION=15                seconds per pgbench run
#   CLIENTS="10 50 500"        client counts
#   MODES="simple prepared"    pgbench query modes
#   SCALE=10                   pgbench -i scale of the dgf_bench database
#   IDLE_CONNS=10000           idle connections per proxy (0 skips the idle test)
#   DGF_BIN=path               dgf binary to use as is; when unset the script runs
#                              `cargo build --release --locked -p dgf --bin dgf` and uses
#                              ${CARGO_TARGET_DIR:-target}/release/dgf
#   OUT_DIR=dir                where logs and results go
#                              (default: target/bench/pgbench-compare-<timestamp>)
#   KEEP_DB=1                  keep the dgf_bench database afterwards
#   WARMUP=10                  seconds of direct `pgbench -S` (not measured) after a CHECKPOINT,
#                              before the first measured run: without it the first target
#                              measured runs against a cold cache and a pending checkpoint
#                              (0 skips it)
#   PGPORT=5432                port of the local Postgres (host is always 127.0.0.1)
#   DGF_WORKERS=               dgf `server.workers` (unset: dgf's default, one loop on 1-2
#                              cores; 0 = one per core, 1 = single-threaded)
#   AUDIT_PRIORITY=auto        dgfgov `audit.writer_priority` (auto | normal | idle)
#   KEEP_AUDIT=0               1: keep dgfgov's audit files (by default removed at the end)
#   ROUNDS=1                   runs of every (mode, clients, target); the targets' order
#                              rotates each round, the tables report per-key medians and
#                              the log lists each round's tps (a noisy VM's drift then
#                              lands on every target alike; the "where the CPU went"
#                              table shows the last round); results.md also lists each
#                              round's ratios between targets and their medians
#
# Every address used is 127.0.0.1. Everything the script starts is stopped on
# exit, and every wait is bounded in time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

HOST=127.0.0.1
PG_PORT="${PGPORT:-5432}"
PG_SUPERUSER=postgres
DB=dgf_bench
BENCH_USER=bench
POOL_SIZE=10

ONLY="${ONLY:-direct,dgf,dgfgov,pgbouncer}"
DURATION="${DURATION:-15}"
CLIENTS="${CLIENTS:-10 50 500}"
MODES="${MODES:-simple prepared}"
SCALE="${SCALE:-10}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
KEEP_DB="${KEEP_DB:-0}"
OUT_DIR="${OUT_DIR:-$ROOT/target/bench/pgbench-compare-$(date +%Y%m%d-%H%M%S)}"

# Keep libpq and pgbench from picking up anything else from the environment.
unset PGHOST PGHOSTADDR PGDATABASE PGUSER PGPASSWORD PGSERVICE PGOPTIONS
export PGCONNECT_TIMEOUT=10
# Every hop plaintext, for all three targets alike: libpq's default (prefer) would encrypt
# pgbench->Postgres and dgf->Postgres (the local server has ssl=on) while PgBouncer's server
# side defaults to plaintext, and TLS costs dominate a loopback benchmark. Override with
# BENCH_SSLMODE=require to compare encrypted hops (set up TLS on the proxies first).
BENCH_SSLMODE="${BENCH_SSLMODE:-disable}"
export PGSSLMODE="$BENCH_SSLMODE"

log() { printf '[pgbench-compare] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
wants() { [[ ",$ONLY," == *",$1,"* ]]; }
have() { command -v "$1" >/dev/null 2>&1; }

for t in ${ONLY//,/ }; do
  case $t in direct | dgf | dgfgov | pgbouncer) ;; *) die "unknown target in ONLY: $t (use direct, dgf, dgfgov, pgbouncer)" ;; esac
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer"
[[ $IDLE_CONNS =~ ^[0-9]+$ ]] || die "IDLE_CONNS must be a non-negative integer"

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif have sudo; then
    sudo "$@"
  else
    die "need root (or sudo) for: $*"
  fi
}

# ------------------------------------------------------------- tooling ----
have pgbench || die "pgbench not found (run scripts/ensure-services.sh)"
have psql || die "psql not found (run scripts/ensure-services.sh)"
have python3 || die "python3 not found (run scripts/ensure-services.sh)"
PGBOUNCER_BIN=""
if wants pgbouncer; then
  if [[ -x /usr/sbin/pgbouncer ]]; then
    PGBOUNCER_BIN=/usr/sbin/pgbouncer
  elif have pgbouncer; then
    PGBOUNCER_BIN=$(command -v pgbouncer)
  else
    log "installing pgbouncer (apt-get)"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
    PGBOUNCER_BIN=/usr/sbin/pgbouncer
  fi
fi

DGF_BIN_RESOLVED=""
if wants dgf || wants dgfgov; then
  if [[ -n ${DGF_BIN:-} ]]; then
    DGF_BIN_RESOLVED=$DGF_BIN
  else
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
    log "building dgf (cargo build --release --locked -p dgf --bin dgf)"
    cargo build --release --locked -p dgf --bin dgf >&2
    DGF_BIN_RESOLVED="$target_dir/release/dgf"
  fi
  [[ -x $DGF_BIN_RESOLVED ]] || die "dgf binary not found at $DGF_BIN_RESOLVED"
fi

pg_isready -q -h "$HOST" -p "$PG_PORT" -t 5 ||
  die "no Postgres on $HOST:$PG_PORT (run scripts/ensure-services.sh)"
psql_su() { PGOPTIONS='-c client_min_messages=warning' psql -h "$HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -w -X -v ON_ERROR_STOP=1 -Atq "$@"; }
psql_su -d postgres -c 'select 1' >/dev/null ||
  die "cannot log in to $HOST:$PG_PORT as $PG_SUPERUSER without a password"

# File descriptors: the idle test holds IDLE_CONNS sockets in the client and
# in the proxy (both inherit this limit).
hard_nofile=$(ulimit -Hn)
want_nofile=$((IDLE_CONNS + 4096))
((want_nofile < 65536)) || want_nofile=65536
if [[ $hard_nofile != unlimited ]] && ((hard_nofile < want_nofile)); then
  want_nofile=$hard_nofile
fi
ulimit -n "$want_nofile" 2>/dev/null || true
nofile=$(ulimit -n)
if ((IDLE_CONNS > 0 && IDLE_CONNS + 200 > nofile)); then
  log "open-file limit is $nofile: lowering IDLE_CONNS from $IDLE_CONNS to $((nofile - 200))"
  IDLE_CONNS=$((nofile - 200))
fi

CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$OUT_DIR/runs"
RUN_DIR=$(mktemp -d /tmp/dgf-pgbench-compare.XXXXXX)
chmod 0711 "$RUN_DIR"

# ------------------------------------------------------------- cleanup ----
DGF_PID=""
DGFGOV_PID=""
PGB_PID=""
CHILD_PID="" # the pgbench or idle client running right now
DB_CREATED=0

stop_pid() { # stop_pid PID NAME: TERM, wait up to 10 s, then KILL
  local pid=$1 name=$2 i
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || as_root kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "$name (pid $pid) did not stop in 10 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || as_root kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [[ -n $CHILD_PID ]] && kill -TERM "$CHILD_PID" 2>/dev/null
  stop_pid "$DGF_PID" dgf
  stop_pid "$DGFGOV_PID" dgfgov
  stop_pid "$PGB_PID" pgbouncer
  wait 2>/dev/null
  [[ -f $RUN_DIR/pgbouncer/pgbouncer.log ]] && cp "$RUN_DIR/pgbouncer/pgbouncer.log" "$OUT_DIR/" 2>/dev/null
  if [[ $DB_CREATED -eq 1 && $KEEP_DB != 1 ]]; then
    psql_su -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 ||
      log "could not drop database $DB"
  fi
  rm -rf "$RUN_DIR"
  log "logs in $OUT_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------- helpers ----
# A free port on 127.0.0.1 below the ephemeral range, not in $USED_PORTS.
USED_PORTS=" "
free_port() {
  local p i
  for ((i = 0; i < 500; i++)); do
    p=$((16000 + RANDOM % 16000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    if ! timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$p" 2>/dev/null; then
      USED_PORTS+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

wait_port() { # wait_port PORT SECONDS PID
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    kill -0 "$3" 2>/dev/null || return 1
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

cpu_ticks() { # utime+stime of PID, in clock ticks
  local stat rest
  stat=$(<"/proc/$1/stat") || {
    echo 0
    return
  }
  rest=${stat##*) }
  # shellcheck disable=SC2206 # word splitting of the stat fields is intended
  local f=($rest)
  echo $((f[11] + f[12]))
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ------------------------------------------------------------- database ---
log "creating database $DB (pgbench -i -s $SCALE)"
psql_su -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
psql_su -d postgres -c "CREATE DATABASE $DB"
DB_CREATED=1
timeout 900 pgbench -h "$HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -i -s "$SCALE" -q "$DB" \
  >"$OUT_DIR/pgbench-init.log" 2>&1 || die "pgbench -i failed: see $OUT_DIR/pgbench-init.log"

# A fresh database has a checkpoint pending and a cold cache: whichever target ran first would
# pay for both. Checkpoint now, then read the tables once, directly, before anything is measured.
WARMUP="${WARMUP:-10}"
if ((WARMUP > 0)); then
  log "warm-up: CHECKPOINT, then ${WARMUP}s of direct pgbench -S (not measured)"
  psql_su -d "$DB" -c "CHECKPOINT"
  timeout $((WARMUP + 60)) pgbench -h "$HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -n -S -c 10 -j 2 \
    -T "$WARMUP" "$DB" >"$OUT_DIR/warmup.log" 2>&1 || die "warm-up failed: see $OUT_DIR/warmup.log"
fi

MAX_CONN=$(psql_su -d postgres -c 'show max_connections')
RESERVED=$(psql_su -d postgres -c 'show superuser_reserved_connections')

# ------------------------------------------------------------- proxies ----
TARGETS=()
declare -A PORT=() USER_OF=() PID_OF=() BROKEN=()

if wants direct; then
  TARGETS+=(direct)
  PORT[direct]=$PG_PORT
  USER_OF[direct]=$PG_SUPERUSER
fi

# start_dgf TARGET GOVERNANCE: one dgf instance. GOVERNANCE=off turns every built-in guard off
# and configures no rules and no audit (the pure pooler); GOVERNANCE=on adds an audit file,
# 20 rules and 3 masked columns that the benchmark query does not touch.
start_dgf() {
  local t=$1 gov=$2 port admin cfg=$OUT_DIR/$1.toml
  TARGETS+=("$t")
  port=$(free_port)
  admin=$(free_port)
  cat >"$cfg" <<EOF
# generated by benches/pgbench-compare.sh (governance $gov)
[server]
max_client_connections = $((IDLE_CONNS + 1000 > 20000 ? IDLE_CONNS + 1000 : 20000))
shutdown_timeout_ms = 2000
${DGF_WORKERS:+workers = $DGF_WORKERS}

[admin]
listen = "$HOST:$admin"

[log]
level = "warn"

[[users]]
name = "$BENCH_USER"
auth = "trust"
roles = ["app"]

[[routes]]
name = "bench"
protocol = "postgres"
listen = "$HOST:$port"
upstream = "postgres://$PG_SUPERUSER@$HOST:$PG_PORT/?sslmode=$BENCH_SSLMODE"
pool = { mode = "transaction", size = $POOL_SIZE, wait_timeout_ms = 60000 }
EOF
  if [[ $gov == off ]]; then
    printf '\n[guards]\ncopy_program = false\nset_role = false\nfunctions = false\n' >>"$cfg"
  else
    {
      printf '\n[audit]\npath = "%s"\nwriter_priority = "%s"\n' "$OUT_DIR/$t-audit.jsonl" "${AUDIT_PRIORITY:-auto}"
      printf '\n[[labels]]\nname = "pii"\nmatch = ["public.customers.email", "public.customers.ssn", "public.customers.card"]\n'
      printf '\n[[rules]]\nname = "mask pii"\nroles = ["app"]\naction = "mask"\nlabels = ["pii"]\nwith = "redact"\n'
      printf '\n[[rules]]\nname = "no drop"\naction = "deny"\nstatements = ["drop", "truncate"]\n'
      for i in $(seq 1 18); do
        printf '\n[[rules]]\nname = "deny t%s"\nroles = ["app"]\naction = "deny"\ntables = ["secret_%s"]\n' "$i" "$i"
      done
    } >>"$cfg"
  fi
  log "starting $t (governance $gov) on $HOST:$port, admin $admin"
  # Its own session, as PgBouncer gets by daemonizing (and a service by its unit or container):
  # with the kernel's autogroup scheduling (sched_autogroup_enabled = 1) a process that shares
  # this script's session also shares pgbench's CPU weight, which cost dgf up to 20% of its
  # tps at 500 clients on a saturated 2-core machine (docs/benchmarks.md, twenty-first machine).
  DGF_LOG=warn setsid "$DGF_BIN_RESOLVED" run --config "$cfg" >"$OUT_DIR/$t.log" 2>&1 &
  PID_OF[$t]=$!
  PORT[$t]=$port
  USER_OF[$t]=$BENCH_USER
  if ! wait_port "$port" 20 "${PID_OF[$t]}"; then
    BROKEN[$t]="did not start (see $OUT_DIR/$t.log)"
    tail -n 20 "$OUT_DIR/$t.log" >&2 || true
  fi
}

if wants dgf || wants dgfgov; then
  "$DGF_BIN_RESOLVED" --version >"$OUT_DIR/dgf-version.txt" 2>&1 || true
fi
if wants dgf; then
  start_dgf dgf off
  DGF_PID=${PID_OF[dgf]}
fi
if wants dgfgov; then
  start_dgf dgfgov on
  DGFGOV_PID=${PID_OF[dgfgov]}
fi

if wants pgbouncer; then
  TARGETS+=(pgbouncer)
  PGB_PORT=$(free_port)
  PGB_DIR=$RUN_DIR/pgbouncer
  mkdir -p "$PGB_DIR"
  printf '"%s" ""\n"%s" ""\n' "$BENCH_USER" "$PG_SUPERUSER" >"$PGB_DIR/userlist.txt"
  cat >"$PGB_DIR/pgbouncer.ini" <<EOF
; generated by benches/pgbench-compare.sh
[databases]
* = host=$HOST port=$PG_PORT user=$PG_SUPERUSER

[pgbouncer]
listen_addr = $HOST
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
server_tls_sslmode = $BENCH_SSLMODE
max_client_conn = 20000
ignore_startup_parameters = extra_float_digits
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
  cp "$PGB_DIR/pgbouncer.ini" "$OUT_DIR/pgbouncer.ini"
  # PgBouncer refuses to run as root: run it as postgres then. runuser/su go
  # through PAM, which resets the open-file limit: raise it again inside.
  # shellcheck disable=SC2016 # expanded by the inner sh
  pgb_start=(sh -c 'ulimit -n "$1" && exec "$2" -d "$3"' sh "$nofile" "$PGBOUNCER_BIN" "$PGB_DIR/pgbouncer.ini")
  if [[ $(id -u) -eq 0 ]]; then
    chown -R postgres: "$PGB_DIR"
    if have runuser; then
      runuser -u postgres -- "${pgb_start[@]}"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "${pgb_start[@]}")"
    fi
  else
    "${pgb_start[@]}"
  fi
  for ((i = 0; i < 100; i++)); do
    [[ -s $PGB_DIR/pgbouncer.pid ]] && break
    sleep 0.1
  done
  PGB_PID=$(cat "$PGB_DIR/pgbouncer.pid" 2>/dev/null || true)
  [[ -n $PGB_PID ]] || die "pgbouncer did not start (see $PGB_DIR/pgbouncer.log)"
  PID_OF[pgbouncer]=$PGB_PID
  PORT[pgbouncer]=$PGB_PORT
  USER_OF[pgbouncer]=$BENCH_USER
  log "started $("$PGBOUNCER_BIN" --version | head -1) (pid $PGB_PID) on $HOST:$PGB_PORT, open-file limit $(awk '/^Max open files/ {print $4}' "/proc/$PGB_PID/limits")"
  if ! wait_port "$PGB_PORT" 20 "$PGB_PID"; then
    BROKEN[pgbouncer]="did not start (see $OUT_DIR/pgbouncer.log)"
  fi
fi

# Smoke test every proxy before measuring anything.
for t in "${TARGETS[@]}"; do
  [[ -z ${BROKEN[$t]:-} ]] || continue
  if ! out=$(timeout 20 psql -h "$HOST" -p "${PORT[$t]}" -U "${USER_OF[$t]}" -w -X -Atq -d "$DB" \
    -c 'select count(*) from pgbench_branches' 2>&1); then
    BROKEN[$t]="smoke test failed: $(echo "$out" | head -1)"
    log "$t: ${BROKEN[$t]}"
  fi
done

# ----------------------------------------------------------- throughput ---
declare -A TPS=() CPU=() NOTE=() REST=() IDLE=()

# machine_ticks: "busy idle" clock ticks of the whole machine from /proc/stat (busy: user,
# nice, system, irq, softirq; idle: idle, iowait; steal, taken by the hypervisor, is neither).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6; exit}' /proc/stat; }

# direct_slots: client connections Postgres still accepts for a normal user
direct_slots() {
  local used
  used=$(psql_su -d postgres -c "select count(*) from pg_stat_activity where backend_type = 'client backend'")
  echo $((MAX_CONN - RESERVED - used))
}

run_one() { # run_one MODE CLIENTS TARGET
  local mode=$1 c=$2 t=$3 key="$1,$2,$3" logf pid before after rc tps tx
  if [[ -n ${BROKEN[$t]:-} ]]; then
    TPS[$key]="fails"
    NOTE[$key]="${BROKEN[$t]}"
    return 0
  fi
  if [[ $t == direct ]] && ((c > $(direct_slots))); then
    TPS[$key]="n/a (max_connections=$MAX_CONN)"
    return 0
  fi
  logf="$OUT_DIR/runs/$mode-c$c-$t.log"
  pid=${PID_OF[$t]:-}
  [[ -n $pid ]] && before=$(cpu_ticks "$pid")
  local m0 m1
  m0=$(machine_ticks)
  log "$t: pgbench -S -M $mode -c $c -j 2 -T $DURATION"
  rc=0
  # In the background + wait, so that a signal to this script is handled at once.
  timeout $((DURATION + 120)) pgbench -h "$HOST" -p "${PORT[$t]}" -U "${USER_OF[$t]}" \
    -n -S -M "$mode" -c "$c" -j 2 -T "$DURATION" "$DB" >"$logf" 2>&1 &
  CHILD_PID=$!
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  [[ -n $pid ]] && after=$(cpu_ticks "$pid")
  m1=$(machine_ticks)
  tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$logf")
  tx=$(awk -F': ' '/^number of transactions actually processed/ {split($2, a, "/"); print a[1]; exit}' "$logf")
  # pgbench keeps going (and may exit 0) when only some clients hit errors.
  if [[ $rc -ne 0 || -z $tps ]] || grep -q '^pgbench: error:' "$logf"; then
    TPS[$key]="fails"
    NOTE[$key]="exit $rc: $(grep -m1 -iE 'error|fatal|abort' "$logf" || tail -n1 "$logf")"
    log "$t: fails (${NOTE[$key]})"
    return 0
  fi
  TPS[$key]=$tps
  if [[ -n $pid && -n $tx && $tx -gt 0 ]]; then
    CPU[$key]=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v tx="$tx" 'BEGIN {printf "%.4f", d / hz / (tx / 1000)}')
  fi
  if [[ -n $tx && $tx -gt 0 ]]; then
    # Everything but the proxy: pgbench, Postgres, the kernel's softirq work, other processes.
    REST[$key]=$(awk -v m0="$m0" -v m1="$m1" -v p=$((${after:-0} - ${before:-0})) -v hz="$CLK_TCK" -v tx="$tx" \
      'BEGIN {split(m0, a, " "); split(m1, b, " "); printf "%.4f", (b[1] - a[1] - p) / hz / (tx / 1000)}')
    IDLE[$key]=$(awk -v m0="$m0" -v m1="$m1" \
      'BEGIN {split(m0, a, " "); split(m1, b, " "); t = b[1] - a[1] + b[2] - a[2]; printf "%.0f", (t > 0 ? 100 * (b[2] - a[2]) / t : 0)}')
  fi
  log "$t: $tps tps${CPU[$key]:+, ${CPU[$key]} CPU s/1k tx}"
}

ROUNDS=${ROUNDS:-1}
declare -A ALL_TPS ALL_CPU
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
for mode in $MODES; do
  for c in $CLIENTS; do
    for ((r = 0; r < ROUNDS; r++)); do
      n=${#TARGETS[@]}
      for ((i = 0; i < n; i++)); do
        t=${TARGETS[$(((i + r) % n))]}
        run_one "$mode" "$c" "$t"
        key="$mode,$c,$t"
        ALL_TPS[$key]="${ALL_TPS[$key]:-} ${TPS[$key]:-}"
        ALL_CPU[$key]="${ALL_CPU[$key]:-} ${CPU[$key]:-}"
        sleep 1
      done
    done
  done
done
if ((ROUNDS > 1)); then
  for key in "${!ALL_TPS[@]}"; do
    log "rounds $key: tps${ALL_TPS[$key]}"
    m=$(echo "${ALL_TPS[$key]}" | median)
    [[ -n $m ]] && TPS[$key]=$(printf '%.0f' "$m")
    m=$(echo "${ALL_CPU[$key]}" | median)
    [[ -n $m ]] && CPU[$key]=$(printf '%.4f' "$m")
  done
fi

ratio() { # ratio A B: A/B when both are numbers
  if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ && $2 -gt 0 ]]; then
    awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'
  else
    echo "-"
  fi
}

paired() { # paired KEY_A KEY_B: per-round A/B (targets of a round ran back to back) and their median
  local -a a b
  local out="" i q
  read -ra a <<<"${ALL_TPS[$1]:-}"
  read -ra b <<<"${ALL_TPS[$2]:-}"
  for ((i = 0; i < ${#a[@]} && i < ${#b[@]}; i++)); do
    q=$(ratio "${a[$i]}" "${b[$i]}")
    [[ $q != - ]] && out="$out $q"
  done
  [[ -n $out ]] && echo "$out (median $(echo "$out" | median))"
}

cell() { # cell KEY: the tps or "-" when the target was not selected
  local v=${TPS[$1]:-}
  echo "${v:--}"
}

RESULTS=$OUT_DIR/results.md
{
  echo "# pgbench-compare $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- host: $(nproc) cores, $(uname -r); Postgres: $(psql_su -d postgres -c 'show server_version'), max_connections=$MAX_CONN"
  [[ -n $PGBOUNCER_BIN ]] && echo "- pgbouncer: $("$PGBOUNCER_BIN" --version | head -1)"
  [[ -n $DGF_BIN_RESOLVED ]] && echo "- dgf: $(head -1 "$OUT_DIR/dgf-version.txt" 2>/dev/null) ($DGF_BIN_RESOLVED)"
  echo "- pgbench -S -j 2 -T $DURATION, scale $SCALE; proxies: transaction pooling, $POOL_SIZE server connections"
  echo "- git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo
  echo "| mode | clients | direct tps | dgf tps | dgf+gov tps | pgbouncer tps | dgf/pgbouncer | dgf/direct | gov-on/gov-off | gov-on/pgbouncer | dgf CPU s/1k tx | dgf+gov CPU s/1k tx | pgbouncer CPU s/1k tx |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for mode in $MODES; do
    for c in $CLIENTS; do
      d=$(cell "$mode,$c,direct")
      g=$(cell "$mode,$c,dgf")
      v=$(cell "$mode,$c,dgfgov")
      b=$(cell "$mode,$c,pgbouncer")
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$c" "$d" "$g" "$v" "$b" \
        "$(ratio "$g" "$b")" "$(ratio "$g" "$d")" "$(ratio "$v" "$g")" "$(ratio "$v" "$b")" \
        "${CPU[$mode,$c,dgf]:--}" "${CPU[$mode,$c,dgfgov]:--}" "${CPU[$mode,$c,pgbouncer]:--}"
    done
  done
  echo
  echo "Where the machine's CPU went (rest = everything but the proxy: pgbench, Postgres, kernel"
  echo "network work, other processes; bound = tps the same rest would allow if the proxy cost"
  echo "nothing at all, $(nproc) cores x 1000 / rest):"
  echo
  echo "| mode | clients | target | tps | proxy CPU s/1k tx | rest CPU s/1k tx | machine idle % | bound tps |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|"
  for mode in $MODES; do
    for c in $CLIENTS; do
      for t in "${TARGETS[@]}"; do
        r=${REST[$mode,$c,$t]:-}
        [[ -n $r ]] || continue
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$c" "$t" "${TPS[$mode,$c,$t]}" \
          "${CPU[$mode,$c,$t]:--}" "$r" "${IDLE[$mode,$c,$t]:--}" \
          "$(awk -v r="$r" -v n="$(nproc)" 'BEGIN {printf "%.0f", (r > 0 ? n * 1000 / r : 0)}')"
      done
    done
  done
  if ((ROUNDS > 1)); then
    echo
    echo "Per-round ratios (the targets of one round ran back to back, so these cancel drift over the"
    echo "run; the first table's ratios are of per-target medians):"
    echo
    for mode in $MODES; do
      for c in $CLIENTS; do
        for pair in "dgfgov dgf gov-on/gov-off" "dgfgov pgbouncer gov-on/pgbouncer" "dgf pgbouncer dgf/pgbouncer"; do
          read -r x y name <<<"$pair"
          q=$(paired "$mode,$c,$x" "$mode,$c,$y")
          [[ -n $q ]] && echo "- $mode, $c clients, $name:$q"
        done
      done
    done
  fi
  notes=0
  for mode in $MODES; do
    for c in $CLIENTS; do
      for t in "${TARGETS[@]}"; do
        n=${NOTE[$mode,$c,$t]:-}
        [[ -n $n ]] || continue
        ((notes++ == 0)) && printf '\nFailures:\n'
        echo "- $t, $mode, $c clients: $n"
      done
    done
  done
} >"$RESULTS"

# ------------------------------------------------------- idle clients ----
IDLE_PY=$RUN_DIR/idle_clients.py
cat >"$IDLE_PY" <<'PY'
"""Open N idle Postgres client connections to 127.0.0.1:PORT, log each in
(StartupMessage v3 + trust), hold them, and report the VmRSS of PID before and
after. Standard library only."""
import asyncio
import json
import resource
import struct
import sys
import time

port, pid, n, user, db = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
CONCURRENCY, LOGIN_TIMEOUT, LOGIN_PHASE, SETTLE = 200, 20.0, 180.0, 2.0


def rss_kb(p):
    try:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def startup_message():
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", db), ("application_name", "dgf-idle-bench")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


async def login(sem, conns, errors):
    async with sem:
        w = None
        try:
            async def handshake():
                nonlocal w
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(startup_message())
                await w.drain()
                while True:
                    hdr = await r.readexactly(5)
                    kind, length = hdr[:1], struct.unpack("!i", hdr[1:])[0]
                    body = await r.readexactly(length - 4)
                    if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                        raise RuntimeError("server asks for a password (need trust)")
                    if kind == b"E":
                        fields = dict((f[:1], f[1:]) for f in body.split(b"\0") if f)
                        raise RuntimeError("ErrorResponse: " + fields.get(b"M", b"?").decode(errors="replace"))
                    if kind == b"Z":
                        return
            await asyncio.wait_for(handshake(), LOGIN_TIMEOUT)
            conns.append(w)
        except Exception as e:  # noqa: BLE001 - count every failure kind
            key = f"{type(e).__name__}: {e}"[:120]
            errors[key] = errors.get(key, 0) + 1
            if w is not None:
                w.close()


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n + 256) if hard == resource.RLIM_INFINITY else min(hard, max(soft, n + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    before = rss_kb(pid)
    sem, conns, errors = asyncio.Semaphore(CONCURRENCY), [], {}
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(login(sem, conns, errors)) for _ in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=LOGIN_PHASE)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
        errors[f"login phase over after {LOGIN_PHASE:.0f} s"] = len(pending)
    took = time.monotonic() - t0
    await asyncio.sleep(SETTLE)
    after = rss_kb(pid)
    ok = len(conns)
    print(json.dumps({
        "ok": ok, "failed": n - ok, "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:3]),
        "rss_before_kb": before, "rss_after_kb": after, "login_seconds": round(took, 1),
        "kb_per_client": round((after - before) / ok, 2) if ok else None,
    }), flush=True)
    for w in conns:
        try:
            w.write(b"X\0\0\0\x04")  # Terminate
            w.close()
        except Exception:  # noqa: BLE001
            pass
    await asyncio.sleep(0.5)


asyncio.run(main())
PY

declare -A IDLE=()
if ((IDLE_CONNS > 0)); then
  for t in dgf pgbouncer; do
    wants "$t" || continue
    if [[ -n ${BROKEN[$t]:-} ]]; then
      IDLE[$t]='{"error": "proxy not running"}'
      continue
    fi
    log "$t: opening $IDLE_CONNS idle client connections"
    sleep 2
    timeout 300 python3 "$IDLE_PY" "${PORT[$t]}" "${PID_OF[$t]}" "$IDLE_CONNS" "$BENCH_USER" "$DB" \
      >"$OUT_DIR/idle-$t.json" 2>"$OUT_DIR/idle-$t.err" &
    CHILD_PID=$!
    wait "$CHILD_PID" || true
    CHILD_PID=""
    IDLE[$t]=$(tail -n1 "$OUT_DIR/idle-$t.json")
    if [[ -z ${IDLE[$t]} ]]; then
      err=$(tail -n1 "$OUT_DIR/idle-$t.err" | tr -dc '[:alnum:] :._/()-')
      IDLE[$t]="{\"error\": \"client failed: $err\"}"
    fi
    log "$t: ${IDLE[$t]}"
    sleep 2
  done

  {
    echo
    echo "Idle connections ($IDLE_CONNS logged-in clients held open, proxy VmRSS):"
    echo
    echo "| proxy | idle clients | failed | RSS before KB | RSS after KB | KB per idle client | login time s |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    idle_args=()
    for t in dgf pgbouncer; do
      [[ -n ${IDLE[$t]:-} ]] && idle_args+=("$t" "${IDLE[$t]}")
    done
    python3 - "${idle_args[@]}" <<'PY'
import json
import sys

args = sys.argv[1:]
notes = []
for t, raw in zip(args[::2], args[1::2]):
    d = json.loads(raw)
    if "error" in d:
        print(f"| {t} | - | - | - | - | fails | - |")
        notes.append(f"- {t}: {d['error']}")
        continue
    print(f"| {t} | {d['ok']} | {d['failed']} | {d['rss_before_kb']} | {d['rss_after_kb']} "
          f"| {d['kb_per_client']} | {d['login_seconds']} |")
    notes += [f"- {t}: {k} x {e}" for e, k in d["errors"].items()]
if notes:
    print("\nIdle-test failures:")
    print("\n".join(notes))
PY
  } >>"$RESULTS"
fi

echo
cat "$RESULTS"
if [[ ${KEEP_AUDIT:-0} != 1 ]] && compgen -G "$OUT_DIR/*-audit.jsonl*" >/dev/null; then
  rm -f "$OUT_DIR"/*-audit.jsonl*
  log "audit files removed (KEEP_AUDIT=1 keeps them)"
fi
