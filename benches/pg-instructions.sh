#!/usr/bin/env bash
# benches/pg-instructions.sh: user-space instructions per pgbench transaction of dgf and of
# PgBouncer, each run under `valgrind --tool=callgrind`, in one run. Instruction counts do not
# depend on what else the machine is doing, so this comparison holds on a busy 2-core box
# where wall-clock tps ratios do not (see docs/benchmarks.md). Kernel time (syscalls) is not
# counted: `perf trace -s -p PID` during a pgbench run gives syscalls per transaction.
#
# Both proxies: transaction pooling, 10 server connections, trust auth, plaintext, dgf with
# one worker thread (governance off). pgbench -S, CLIENTS clients, TX transactions each, after
# a warm-up run; logins are part of the measured run (pgbench reconnects), so use TX >= 400.
#
# GOV=1 measures dgf with governance on as well (the same policy as pgbench-compare.sh's
# dgfgov: audit file, 20 rules, 3 masked columns), so the cost of governance per transaction
# is the difference of two lines of one run.
#
# KEEP_OUT=dir keeps the callgrind dumps (cg-dgf.out.1, ...) for callgrind_annotate.
#
# Environment: CLIENTS=50 TX=400 MODE=simple|prepared GOV=0|1 DGF_BIN=target/release/dgf
#              PGPORT=5432 (local Postgres, user postgres, trust)
set -euo pipefail
# shellcheck source=benches/callgrind.sh
source "$(dirname "${BASH_SOURCE[0]}")/callgrind.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
C=${CLIENTS:-50}; T=${TX:-400}; M=${MODE:-simple}; PGPORT=${PGPORT:-5432}
DGF_BIN=${DGF_BIN:-target/release/dgf}
[[ -x $DGF_BIN ]] || cargo build --release --locked -p dgf --bin dgf >&2
DGF_BIN=$(realpath "$DGF_BIN")
for tool in valgrind callgrind_control callgrind_annotate pgbench; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install valgrind postgresql-client)" >&2; exit 1; }
done
PGB=/usr/sbin/pgbouncer
[[ -x $PGB ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
D=$(mktemp -d /tmp/dgf-pginstr.XXXXXX); chmod 755 "$D"
PIDS=()
cleanup() { [[ -n ${KEEP_OUT:-} ]] && mkdir -p "$KEEP_OUT" && cp "$D"/cg-*.out.1 "$KEEP_OUT"/ 2>/dev/null; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; pkill -f "callgrind-out-file=$D" 2>/dev/null || true; psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS dgf_pginstr WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; return 1; }
export PGSSLMODE=disable
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qc "CREATE DATABASE dgf_pginstr" >/dev/null
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s 1 -q dgf_pginstr >/dev/null 2>&1
DP=$(free_port); AP=$(free_port); BP=$(free_port); GP=$(free_port); GA=$(free_port)
cat >"$D/dgf.toml" <<E2
[server]
workers = 1
[admin]
listen = "127.0.0.1:$AP"
[log]
level = "warn"
[[users]]
name = "bench"
auth = "trust"
[[routes]]
name = "bench"
protocol = "postgres"
listen = "127.0.0.1:$DP"
upstream = "postgres://postgres@127.0.0.1:$PGPORT/?sslmode=disable"
pool = { mode = "transaction", size = 10, wait_timeout_ms = 60000 }
[guards]
copy_program = false
set_role = false
functions = false
E2
{
  sed '/^\[guards\]/,$d' "$D/dgf.toml"
  printf '[audit]\npath = "%s"\n' "$D/audit.jsonl"
  printf '\n[[labels]]\nname = "pii"\nmatch = ["public.customers.email", "public.customers.ssn", "public.customers.card"]\n'
  printf '\n[[rules]]\nname = "mask pii"\nroles = ["bench"]\naction = "mask"\nlabels = ["pii"]\nwith = "redact"\n'
  printf '\n[[rules]]\nname = "no drop"\naction = "deny"\nstatements = ["drop", "truncate"]\n'
  for i in $(seq 1 18); do
    printf '\n[[rules]]\nname = "deny t%s"\nroles = ["bench"]\naction = "deny"\ntables = ["secret_%s"]\n' "$i" "$i"
  done
} >"$D/dgfgov.toml"
sed -i "s/^listen = \"127.0.0.1:$DP\"/listen = \"127.0.0.1:$GP\"/; s/^listen = \"127.0.0.1:$AP\"/listen = \"127.0.0.1:$GA\"/" "$D/dgfgov.toml"
printf '"bench" ""\n"postgres" ""\n' >"$D/userlist.txt"
cat >"$D/pgbouncer.ini" <<E3
[databases]
* = host=127.0.0.1 port=$PGPORT user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BP
unix_socket_dir =
auth_type = trust
auth_file = $D/userlist.txt
pool_mode = transaction
default_pool_size = 10
server_tls_sslmode = disable
max_client_conn = 5000
ignore_startup_parameters = extra_float_digits
logfile = $D/pgbouncer.log
E3
as_owner() { if [[ $(id -u) -eq 0 ]]; then chown -R postgres: "$D"; runuser -u postgres -- "$@"; else "$@"; fi; }
measure() { # NAME PORT OWNER(dgf|pgb) CMD...
  local name=$1 port=$2 who=$3; shift 3
  local out="$D/cg-$name.out"
  if [[ $who == pgb ]]; then as_owner valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$D/$name.vg" 2>&1 &
  else valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$D/$name.vg" 2>&1 & fi
  PIDS+=($!)
  wait_port "$port" || { echo "$name did not start" >&2; cat "$D/$name.vg" >&2; exit 1; }
  pgbench -h 127.0.0.1 -p "$port" -U bench -S -M "$M" -c "$C" -j 2 -t 20 dgf_pginstr >/dev/null 2>&1
  local ctl=(callgrind_control); [[ $who == pgb && $(id -u) -eq 0 ]] && ctl=(runuser -u postgres -- callgrind_control)
  "${ctl[@]}" -z >/dev/null
  pgbench -h 127.0.0.1 -p "$port" -U bench -S -M "$M" -c "$C" -j 2 -t "$T" dgf_pginstr 2>&1 | grep -q "processed: $((C * T))/" || { echo "$name: pgbench failed" >&2; exit 1; }
  "${ctl[@]}" -d >/dev/null
  sleep 1
  pkill -f "callgrind-out-file=$out" || true
  sleep 2
  local tot
  tot=$(callgrind_annotate "$out".1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$tot"
}
dgf_ir=$(measure dgf "$DP" dgf "$DGF_BIN" run --config "$D/dgf.toml")
pgb_ir=$(measure pgbouncer "$BP" pgb "$PGB" "$D/pgbouncer.ini")
gov_ir=0
[[ ${GOV:-0} == 1 ]] && gov_ir=$(measure dgfgov "$GP" dgf "$DGF_BIN" run --config "$D/dgfgov.toml")
n=$((C * T))
printf 'pgbench -S -M %s, %d clients x %d tx, pool 10, transaction mode\n' "$M" "$C" "$T"
printf '%-10s %14s %12s\n' target instructions per_tx
printf '%-10s %14s %12s\n' dgf "$dgf_ir" "$((dgf_ir / n))" pgbouncer "$pgb_ir" "$((pgb_ir / n))"
if [[ $gov_ir -gt 0 ]]; then
  printf '%-10s %14s %12s\n' dgfgov "$gov_ir" "$((gov_ir / n))"
  # natively the audit chain hash runs on SHA-NI: the count without software SHA-256 is the one to read
  soft=$(cg_soft_sha "$D/cg-dgfgov.out.1")
  printf '%-10s %14s %12s\n' dgfgov-sha "$((gov_ir - ${soft:-0}))" "$(((gov_ir - ${soft:-0}) / n))"
fi
awk -v a="$dgf_ir" -v b="$pgb_ir" 'BEGIN { printf "dgf/pgbouncer instructions per tx: %.2f\n", a / b }'
[[ $gov_ir -gt 0 ]] && awk -v a="$gov_ir" -v b="$pgb_ir" 'BEGIN { printf "dgfgov/pgbouncer instructions per tx: %.2f\n", a / b }'
if [[ -n ${KEEP:-} ]]; then cp "$D"/cg-*.out.1 "$KEEP"/ && echo "callgrind outputs copied to $KEEP"; fi
