#!/usr/bin/env bash
# py-venv.sh: create (or update) the Python virtualenv that end-to-end tests use for
# real Python clients (psycopg, asyncpg, redis-py, PyMySQL, pymongo, ...) and for the
# MongoDB-wire test server `secantusdb`.
#
# Packages are listed in scripts/requirements-test.txt. The venv lives at
# ${DGF_VENV:-$HOME/.cache/dgf/venv}; a stamp file holding the hash of the
# requirements file makes repeated calls instant. Prints the venv path on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DGF_VENV:-$HOME/.cache/dgf/venv}"
REQ="$ROOT/scripts/requirements-test.txt"
stamp="$VENV/.dgf-requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)

mkdir -p "$(dirname "$VENV")"
exec 9>"${VENV%/}.lock"
flock 9
if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $VENV/bin/python ]]; then
  echo "$VENV"
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  bash "$ROOT/scripts/ensure-services.sh" >&2 || true
fi
python3 -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" >&2
echo "$want" >"$stamp"
echo "$VENV"
