# benches/twemproxy.sh: twemproxy (Debian `nutcracker`) config for the Redis benchmarks
# (sourced by redis-compare.sh and redis-callgrind.sh, not run).

# twemproxy_config FILE PORT POOL: one pool in front of the local Redis (127.0.0.1:6379),
# POOL server connections, listening on 127.0.0.1:PORT.
twemproxy_config() {
  cat >"$1" <<YML
bench:
  listen: 127.0.0.1:$2
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: $3
  servers:
   - 127.0.0.1:6379:1
YML
}
