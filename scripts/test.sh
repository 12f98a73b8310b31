#!/usr/bin/env bash
# scripts/test.sh: the project's full check, run by CI (.ci/run) and by hand.
#
#   1. scripts/ensure-services.sh (tools, Postgres/Redis/MariaDB on 127.0.0.1)
#   2. rustfmt + clippy components present (rustup component add if missing)
#   3. cargo fmt --all -- --check
#   4. cargo clippy --workspace --all-targets --locked -- -D warnings
#   5. cargo build --locked -p dgf --bin dgf   (integration tests run the binary)
#   6. cargo test --workspace --locked          (RUST_BACKTRACE=1)
#
# Environment:
#   DGF_TEST_SKIP_LINT=1  skip steps 2-4 (fast local runs)
#   CARGO_TARGET_DIR      respected; DGF_BIN is exported as the path of the
#                         debug dgf binary for tests in other packages
#   DGF_SERVICES          passed on to ensure-services.sh
#   extra arguments       passed to `cargo test` (e.g. a test name filter)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

target_dir="${CARGO_TARGET_DIR:-target}"
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
export DGF_BIN="${DGF_BIN:-$target_dir/debug/dgf}"

timings=()
current=""
phase_t0=""
run_t0=$EPOCHREALTIME

elapsed_since() {
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

phase_begin() {
  current=$1
  phase_t0=$EPOCHREALTIME
  printf '\n==> [test.sh] %s\n' "$current"
}

phase_end() {
  local took
  took=$(elapsed_since "$phase_t0")
  timings+=("$(printf '%-10s %7s s' "$current" "$took")")
  printf '<== [test.sh] %s: ok in %s s\n' "$current" "$took"
  current=""
}

on_exit() {
  local rc=$?
  printf '\n[test.sh] phase timings:\n'
  local t
  for t in "${timings[@]}"; do
    printf '  %s\n' "$t"
  done
  if [[ $rc -ne 0 ]]; then
    if [[ -n $current ]]; then
      printf '  %-10s FAILED after %s s\n' "$current" "$(elapsed_since "$phase_t0")"
    fi
    printf '[test.sh] FAILED (exit %d) after %s s\n' "$rc" "$(elapsed_since "$run_t0")"
  else
    printf '[test.sh] all phases passed in %s s\n' "$(elapsed_since "$run_t0")"
  fi
}
trap on_exit EXIT

phase_begin services
bash "$ROOT/scripts/ensure-services.sh"
phase_end

if [[ ! -f Cargo.lock ]]; then
  echo "[test.sh] Cargo.lock is missing: run 'cargo generate-lockfile' and commit it (cargo runs with --locked)" >&2
  exit 1
fi

if [[ ${DGF_TEST_SKIP_LINT:-0} == 1 ]]; then
  echo "[test.sh] DGF_TEST_SKIP_LINT=1: skipping rustfmt and clippy"
else
  phase_begin toolchain
  for comp in rustfmt clippy; do
    sub=${comp/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null 2>&1 || {
        echo "[test.sh] cargo $sub is missing and rustup is not available to add $comp" >&2
        exit 1
      }
      rustup component add "$comp"
    fi
  done
  cargo --version
  phase_end

  phase_begin fmt
  cargo fmt --all -- --check
  phase_end

  phase_begin clippy
  cargo clippy --workspace --all-targets --locked -- -D warnings
  phase_end
fi

phase_begin build
cargo build --locked -p dgf --bin dgf
[[ -x $DGF_BIN ]] || {
  echo "[test.sh] expected the dgf binary at $DGF_BIN" >&2
  exit 1
}
phase_end

phase_begin test
cargo test --workspace --locked "$@"
phase_end
