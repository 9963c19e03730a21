#!/usr/bin/env bash
# Memory of idle connections, side by side: for each server, COUNT connections that each made one
# unary DoFormat call (with grpcio's headers) and then stay open and idle; the server's RSS
# before and with them, and the difference per connection. Servers: formatdata (release, default
# flags), the tuned tonic (bench/baseline-tonic-tuned) and the raw h2 floor (bench/floor-h2).
#
# Usage: bench/idle_connections.sh [COUNT]   (default 5000)
#        SERVERS="formatdata h2-floor" bench/idle_connections.sh
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5000}
SERVERS=${SERVERS:-formatdata tonic-tuned h2-floor}
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet --bin server
cargo build --release --quiet --manifest-path bench/floor-h2/Cargo.toml
[[ " $SERVERS " == *" tonic-tuned "* ]] && cargo build --release --quiet --manifest-path bench/baseline-tonic-tuned/Cargo.toml
# Both ends hold COUNT sockets.
ulimit -n "$(( count * 2 + 1000 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rss_kib() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/$server_pid/status"; }
printf '%-12s %10s %12s %12s %14s\n' server connections "idle KiB" "held KiB" "KiB/connection"
for name in $SERVERS; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  case $name in
    formatdata) target/release/server --addr "127.0.0.1:$port" --max-connections-per-peer "$count" 2>/dev/null & ;;
    tonic-tuned) bench/baseline-tonic-tuned/target/release/baseline-tonic-tuned "127.0.0.1:$port" >/dev/null & ;;
    h2-floor) bench/floor-h2/target/release/floor-h2 "127.0.0.1:$port" >/dev/null & ;;
    *) echo "idle_connections.sh: unknown server $name" >&2; exit 1 ;;
  esac
  server_pid=$!
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  sleep 1
  idle=$(rss_kib VmRSS)
  mkfifo "$work/hold"
  bench/floor-h2/target/release/idle-clients "127.0.0.1:$port" "$count" < "$work/hold" > "$work/ready" &
  clients=$!
  exec 3> "$work/hold"
  while ! grep -q ready "$work/ready" 2>/dev/null; do sleep 0.2; done
  sleep 2
  held=$(rss_kib VmRSS)
  printf '%-12s %10s %12s %12s %14.1f\n' "$name" "$count" "$idle" "$held" \
    "$(python3 -c "print(($held - $idle) / $count)")"
  exec 3>&-
  wait "$clients" || true
  rm -f "$work/hold" "$work/ready"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
done
