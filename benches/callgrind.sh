# benches/callgrind.sh: helpers shared by the callgrind benchmarks (sourced, not run):
# mysql-callgrind.sh, redis-callgrind.sh, pg-instructions.sh.

# cg_total DUMP: instructions counted in a callgrind dump (all threads).
cg_total() { awk '/^summary:/ {s += $2} END {print s + 0}' "$1"; }

# cg_soft_sha DUMP: instructions spent in sha2's software SHA-256. valgrind does not offer
# SHA-NI, so under callgrind sha2 falls back to it; natively the audit chain hash (and Redis
# key fingerprints) run on SHA-NI when the CPU has it, so counts are reported without it too.
cg_soft_sha() {
  callgrind_annotate --inclusive=yes "$1" 2>/dev/null |
    awk '/sha2::sha256::soft::compress / && !done {gsub(",", "", $1); print $1; done = 1}' || true
}

# cg_report DUMP UNITS WHAT LABEL: one line with instructions per unit, with and without
# software SHA-256 (e.g. `cg_report out.1 40000 command "dgf P=1"`).
cg_report() {
  local ir soft
  ir=$(cg_total "$1")
  soft=$(cg_soft_sha "$1")
  python3 - "$ir" "${soft:-0}" "$2" "$3" "$4" <<'PY'
import sys
ir, soft, n, what, label = int(sys.argv[1]), int(sys.argv[2]), max(1, int(sys.argv[3])), sys.argv[4], sys.argv[5]
print(f"{label}: {ir:,} instructions, {n:,} {what}s: {ir / n:,.0f} instructions/{what} "
      f"({(ir - soft) / n:,.0f} without software SHA-256)")
PY
}

# cg_window PID COUNTER LOGFILE CMD...: run CMD (its output to LOGFILE) with instrumentation
# on in the valgrind process PID, then dump the counts; prints how much the shell function
# COUNTER grew over the run. Fails (with CMD's last lines on stderr) when CMD fails.
cg_window() {
  local pid=$1 counter=$2 logf=$3 before after
  shift 3
  before=$($counter)
  callgrind_control -i on "$pid" >/dev/null
  "$@" >"$logf" 2>&1 || { tail -5 "$logf" >&2; return 1; }
  callgrind_control -d "$pid" >/dev/null
  callgrind_control -i off "$pid" >/dev/null
  after=$($counter)
  echo $((after - before))
}
