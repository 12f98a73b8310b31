# benches/mysql-lib.sh: pieces shared by the MySQL benchmarks (sourced by mysql-compare.sh and
# mysql-callgrind.sh, not run). Uses HOST, MY_PORT and die() of the sourcing script.

# mysql_prepare DB TABLES ROWS LOG: a fresh database with sysbench's tables.
mysql_prepare() {
  mysql --protocol=TCP -h "$HOST" -P "$MY_PORT" -u root -e "DROP DATABASE IF EXISTS $1; CREATE DATABASE $1"
  sysbench oltp_read_only --db-driver=mysql --mysql-host="$HOST" --mysql-port="$MY_PORT" --mysql-user=root \
    --mysql-db="$1" --tables="$2" --table-size="$3" prepare >"$4"
}

# mysql_dgf_config FILE ADMIN_PORT DGF_PORT DB POOL AUDIT_FILE [ROUTE_LINE...]: a dgf config
# with one MySQL route in front of DB (user sbtest / sbtest_pw, one worker, pool POOL); audit
# to AUDIT_FILE unless it is empty; ROUTE_LINEs are appended to the route table.
mysql_dgf_config() {
  local file=$1 admin=$2 port=$3 db=$4 pool=$5 audit=$6
  shift 6
  {
    printf '[admin]\nlisten = "127.0.0.1:%s"\n\n[server]\nworkers = 1\n\n' "$admin"
    printf '[[users]]\nname = "sbtest"\npassword = "sbtest_pw"\n\n'
    printf '[[routes]]\nname = "mysql"\nprotocol = "mysql"\nlisten = "127.0.0.1:%s"\n' "$port"
    printf 'upstream = "mysql://root@%s:%s/%s?ssl-mode=DISABLED"\npool = %s\n' "$HOST" "$MY_PORT" "$db" "$pool"
    for line in "$@"; do printf '%s\n' "$line"; done
    if [[ -n $audit ]]; then printf '\n[audit]\npath = "%s"\n' "$audit"; fi
  } >"$file"
}

# mysql_wait_dgf PID PORT LOG: wait until dgf (or valgrind running it) accepts sbtest logins.
mysql_wait_dgf() {
  for _ in $(seq 600); do
    mysql --protocol=TCP -h "$HOST" -P "$2" -u sbtest -psbtest_pw -e "SELECT 1" >/dev/null 2>&1 && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.2
  done
  die "dgf did not start: $(tail -5 "$3")"
}
