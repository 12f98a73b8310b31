#!/usr/bin/env bash
# ensure-services.sh: make sure the tools and local services that dgf's build,
# tests and benchmarks need are present, and that the servers listen on
# 127.0.0.1.
#
# Idempotent and fast (well under 2 s) when everything is already there.
# It installs (apt-get) only what is missing, runs `apt-get update` at most
# once and only when something has to be installed, and starts only servers
# that are not listening. A server that was already running is never
# restarted or reconfigured: it may be shared with other users.
#
# Ensured:
#   tools     gcc, make, pkg-config, libc headers, openssl, psql, pg_isready,
#             pgbench, python3 with venv support
#   postgres  127.0.0.1:5432, `psql -h 127.0.0.1 -U postgres` works without a
#             password (trust for 127.0.0.1/32 and ::1/128 is configured only
#             on a cluster that this script had to install or start)
#   redis     127.0.0.1:6379
#   mariadb   127.0.0.1:3306, root without a password (configured only on a
#             server that this script had to install or start)
#
# Environment:
#   DGF_SERVICES     which servers to ensure, space or comma separated, among
#                    postgres, redis, mariadb (default: all three); "none" for
#                    tools only
#   DGF_NO_INSTALL=1 never install or start anything, only report (exit 1 if
#                    something is missing)
#
# Runs as root, or as a normal user with sudo (used only when something must
# be installed or a system service started).
set -euo pipefail

PG_PORT=5432
REDIS_PORT=6379
MARIADB_PORT=3306
SERVICES="${DGF_SERVICES:-postgres redis mariadb}"
SERVICES="${SERVICES//,/ }"
SERVICES="${SERVICES//mysql/mariadb}"
NO_INSTALL="${DGF_NO_INSTALL:-0}"

failed=0

status() { printf '[ensure-services] %-9s %s\n' "$1" "$2"; }
die() {
  printf '[ensure-services] error: %s\n' "$*" >&2
  exit 1
}
wants() { [[ " $SERVICES " == *" $1 "* ]]; }
have() { command -v "$1" >/dev/null 2>&1; }

# Run a command as root: directly when we are root, else through sudo.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif have sudo; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

apt_updated=0
apt_install() {
  [[ $# -gt 0 ]] || return 0
  if [[ $NO_INSTALL == 1 ]]; then
    status install "missing: $* (DGF_NO_INSTALL=1, not installing)"
    failed=1
    return 0
  fi
  have apt-get || die "apt-get not found; install by hand: $*"
  if [[ $apt_updated -eq 0 ]]; then
    status apt "apt-get update"
    as_root apt-get update -qq >/dev/null
    apt_updated=1
  fi
  status apt "installing: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "$@" >/dev/null
}

# True when something accepts TCP connections on 127.0.0.1:$1.
listening() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Wait up to $2 seconds for 127.0.0.1:$1 to accept connections.
wait_listening() {
  local port=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    listening "$port" && return 0
    sleep 0.3
  done
  return 1
}

# True when the Debian package $1 is installed.
pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

# ---------------------------------------------------------------- tools ----
# Each check runs once (pg_wrapper and pyenv shims are slow to start).
psql_v="" pgisready_ok=0 pgbench_ok=0 python_v=""
check_tools() {
  psql_v=$(psql --version 2>/dev/null | head -1) || psql_v=""
  pgisready_ok=0 pgbench_ok=0 python_v=""
  pg_isready --version >/dev/null 2>&1 && pgisready_ok=1
  pgbench --version >/dev/null 2>&1 && pgbench_ok=1
  if have python3; then
    python_v=$(python3 -c 'import sys, ensurepip, venv; print(sys.version.split()[0])' 2>/dev/null) || python_v=""
  fi
}
check_tools

missing=()
have gcc || missing+=(gcc)
have make || missing+=(make)
have pkg-config || missing+=(pkg-config)
[[ -e /usr/include/stdio.h ]] || missing+=(libc6-dev)
have openssl || missing+=(openssl)
[[ -n $psql_v && $pgisready_ok -eq 1 ]] || missing+=(postgresql-client)
# pgbench ships with the server package (postgresql-contrib pulls it in).
[[ $pgbench_ok -eq 1 ]] || missing+=(postgresql-contrib)
[[ -n $python_v ]] || missing+=(python3 python3-venv)

# Server packages, only for servers that are not listening and not installed.
pg_up=0 redis_up=0 mariadb_up=0
if wants postgres; then
  if listening "$PG_PORT"; then
    pg_up=1
  elif ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    missing+=(postgresql postgresql-contrib)
  fi
fi
if wants redis; then
  if listening "$REDIS_PORT"; then
    redis_up=1
  elif ! have redis-server; then
    missing+=(redis-server)
  fi
fi
if wants mariadb; then
  if listening "$MARIADB_PORT"; then
    mariadb_up=1
  elif [[ ! -x /usr/sbin/mariadbd ]] || ! pkg_installed mariadb-server; then
    missing+=(mariadb-server mariadb-client)
  fi
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  # de-duplicate, keep order
  declare -A seen=()
  uniq=()
  for p in "${missing[@]}"; do
    [[ -n ${seen[$p]:-} ]] && continue
    seen[$p]=1
    uniq+=("$p")
  done
  apt_install "${uniq[@]}"
fi

[[ $apt_updated -eq 1 ]] && check_tools

# status LABEL BAD-LIST DETAIL
tool_status() {
  if [[ -z $2 ]]; then
    status "$1" "ok ($3)"
  else
    failed=1
    status "$1" "MISSING:$2"
  fi
}
bad=""
for t in gcc make pkg-config; do have "$t" || bad+=" $t"; done
tool_status build "$bad" "gcc, make, pkg-config"
bad=""
[[ -n $psql_v ]] || bad+=" psql"
[[ $pgisready_ok -eq 1 ]] || bad+=" pg_isready"
[[ $pgbench_ok -eq 1 ]] || bad+=" pgbench"
tool_status pg-tools "$bad" "$psql_v, pgbench"
bad=""
have openssl || bad+=" openssl"
tool_status openssl "$bad" "$(openssl version 2>/dev/null | cut -d' ' -f1-2)"
bad=""
[[ -n $python_v ]] || bad+=" python3-with-venv"
tool_status python "$bad" "python3 $python_v, venv"

# ------------------------------------------------------------- postgres ----
# Prepend trust lines for loopback TCP to a cluster's pg_hba.conf (first match
# wins in pg_hba). Only called for a cluster this script starts itself.
pg_trust_loopback() {
  local hba=$1
  if as_root grep -q '^# dgf ensure-services: trust loopback' "$hba"; then
    return 0
  fi
  local tmp
  tmp=$(mktemp)
  {
    echo '# dgf ensure-services: trust loopback (added because the script installed/started this cluster)'
    echo 'host    all             all             127.0.0.1/32            trust'
    echo 'host    all             all             ::1/128                 trust'
    as_root cat "$hba"
  } >"$tmp"
  as_root cp "$tmp" "$hba"
  rm -f "$tmp"
}

ensure_postgres() {
  if [[ $pg_up -eq 1 ]]; then
    if psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -Atqc 'select 1' >/dev/null 2>&1; then
      status postgres "ok: 127.0.0.1:$PG_PORT already running, passwordless login as postgres works"
    else
      status postgres "FAIL: 127.0.0.1:$PG_PORT is running but 'psql -h 127.0.0.1 -U postgres' needs a password (not reconfiguring a running server; set PGPASSWORD)"
      failed=1
    fi
    return 0
  fi
  if [[ $NO_INSTALL == 1 ]]; then
    status postgres "FAIL: nothing listens on 127.0.0.1:$PG_PORT (DGF_NO_INSTALL=1)"
    failed=1
    return 0
  fi
  have pg_lsclusters || die "postgresql-common (pg_lsclusters) missing after install"
  local ver
  ver=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
    awk -F/ '{print $5}' | sort -n | tail -1)
  [[ -n $ver ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"

  # Find a cluster of that version on our port; create one when there is none.
  local name
  name=$(pg_lsclusters -h 2>/dev/null | awk -v v="$ver" -v p="$PG_PORT" '$1 == v && $3 == p {print $2; exit}')
  if [[ -z $name ]]; then
    name=main
    if pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" {f=1} END {exit !f}'; then
      name=dgf
    fi
    status postgres "creating cluster $ver/$name on port $PG_PORT"
    as_root pg_createcluster "$ver" "$name" --port "$PG_PORT" >/dev/null
  fi
  pg_trust_loopback "/etc/postgresql/$ver/$name/pg_hba.conf"
  status postgres "starting cluster $ver/$name"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start ||
    die "pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
  local deadline=$((SECONDS + 30))
  until pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 1; do
    ((SECONDS < deadline)) || die "postgres $ver/$name did not come up on 127.0.0.1:$PG_PORT in 30 s"
    sleep 0.3
  done
  if psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -Atqc 'select 1' >/dev/null 2>&1; then
    status postgres "ok: started cluster $ver/$name on 127.0.0.1:$PG_PORT (trust for loopback)"
  else
    status postgres "FAIL: started $ver/$name but passwordless login as postgres fails"
    failed=1
  fi
}

# ---------------------------------------------------------------- redis ----
ensure_redis() {
  if [[ $redis_up -eq 1 ]]; then
    status redis "ok: 127.0.0.1:$REDIS_PORT already running"
    return 0
  fi
  if [[ $NO_INSTALL == 1 ]]; then
    status redis "FAIL: nothing listens on 127.0.0.1:$REDIS_PORT (DGF_NO_INSTALL=1)"
    failed=1
    return 0
  fi
  have redis-server || die "redis-server missing after install"
  # Runs as the invoking user; keeps nothing on disk.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save '' --appendonly no --dir /tmp --logfile '' >/dev/null
  if wait_listening "$REDIS_PORT" 15; then
    status redis "ok: started redis-server on 127.0.0.1:$REDIS_PORT"
  else
    status redis "FAIL: redis-server did not come up on 127.0.0.1:$REDIS_PORT"
    failed=1
  fi
}

# -------------------------------------------------------------- mariadb ----
ensure_mariadb() {
  if [[ $mariadb_up -eq 1 ]]; then
    status mariadb "ok: 127.0.0.1:$MARIADB_PORT already running"
    return 0
  fi
  if [[ $NO_INSTALL == 1 ]]; then
    status mariadb "FAIL: nothing listens on 127.0.0.1:$MARIADB_PORT (DGF_NO_INSTALL=1)"
    failed=1
    return 0
  fi
  [[ -x /usr/sbin/mariadbd ]] || die "/usr/sbin/mariadbd missing after install"
  as_root install -d -o mysql -g mysql -m 0755 /run/mysqld
  if ! as_root test -d /var/lib/mysql/mysql; then
    status mariadb "initialising /var/lib/mysql"
    as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  # A pidfile of our own: start-stop-daemon must not match some other mariadbd.
  as_root start-stop-daemon --start --oknodo --background \
    --pidfile /run/mysqld/dgf-ensure-services.pid --make-pidfile \
    --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1 --port="$MARIADB_PORT"
  if ! wait_listening "$MARIADB_PORT" 60; then
    status mariadb "FAIL: mariadbd did not come up on 127.0.0.1:$MARIADB_PORT"
    failed=1
    return 0
  fi
  # We started it: let root in over TCP without a password, drop anonymous
  # users, and provide the conventional `test` database.
  local deadline=$((SECONDS + 30))
  until as_root mariadb -uroot -e 'select 1' >/dev/null 2>&1; do
    ((SECONDS < deadline)) || break
    sleep 0.5
  done
  as_root mariadb -uroot <<'SQL' || true
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS test;
SQL
  if mariadb -h 127.0.0.1 -P "$MARIADB_PORT" -uroot -e 'select 1' >/dev/null 2>&1; then
    status mariadb "ok: started mariadbd on 127.0.0.1:$MARIADB_PORT (root, no password)"
  else
    status mariadb "FAIL: started mariadbd but root login over 127.0.0.1 fails"
    failed=1
  fi
}

for s in $SERVICES; do
  case $s in
    postgres) ensure_postgres ;;
    redis) ensure_redis ;;
    mariadb) ensure_mariadb ;;
    none) ;;
    *) die "unknown service in DGF_SERVICES: $s" ;;
  esac
done

exit "$failed"
