# benches/haproxy.sh: HAProxy in `mode tcp` as the floor of a proxy hop (one thread, copies
# bytes, parses nothing), shared by mysql-compare.sh and redis-compare.sh (sourced, not run).

# haproxy_start OUT_DIR NAME LISTEN_PORT UPSTREAM_HOST:PORT: writes OUT_DIR/haproxy.cfg, starts
# HAProxy in the background (log in OUT_DIR/haproxy.log) and sets HA_PID.
haproxy_start() {
  cat >"$1/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen $2
  bind 127.0.0.1:$3
  server db $4
HA
  setsid /usr/sbin/haproxy -f "$1/haproxy.cfg" -db >"$1/haproxy.log" 2>&1 &
  HA_PID=$!
}
