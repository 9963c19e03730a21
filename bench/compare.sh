#!/usr/bin/env bash
# Side-by-side benchmark of FormatData servers, in one run on one machine:
#   formatdata (this crate, release build), a stock tonic server (bench/baseline-tonic, written
#   like tonic's helloworld example), and the Python grpcio server from the interop tests.
#
# For each server, pinned to SERVER_CPUS with taskset while the load generator runs on LOAD_CPUS:
#   1. throughput: h2load, unary DoFormat "hello,world!", CONNECTIONS x STREAMS, WARMUP s then
#      DURATION s measured; the server's CPU seconds per 100k calls and its peak RSS;
#   2. latency: h2load with 1 connection x 1 stream (mean);
#   3. latency at a fixed rate: `client bench --rate` at half of the baseline's peak (p50, p99),
#      STREAMS calls in flight at most over CONNECTIONS connections (open loop: calls start on
#      schedule, and a late one counts from when it was due).
# Then the same throughput run with the servers given 2 CPUs (the load generator shares them).
#
# Usage: bench/compare.sh [--smoke]     (--smoke: 2-second runs, for CI; figures meaningless)
# Needs: h2load (Debian: nghttp2-client), taskset, python3. Builds what it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} LATENCY_DURATION=${LATENCY_DURATION:-5} ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16} STREAMS=${STREAMS:-64}
SERVER_CPUS=${SERVER_CPUS:-0} LOAD_CPUS=${LOAD_CPUS:-1} TWO_CPUS=${TWO_CPUS:-0,1}
if [ "${1:-}" = "--smoke" ]; then
  DURATION=2 WARMUP=1 LATENCY_DURATION=1 ROUNDS=1
fi

for tool in h2load taskset python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found (h2load: apt-get install nghttp2-client)" >&2; exit 1; }
done

work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "building (release)..." >&2
cargo build --release --quiet --bins
cargo build --release --quiet --manifest-path bench/baseline-tonic/Cargo.toml
# The virtual environment the interop tests set up (tests/support/src/env.rs), made here if the
# tests have not run yet.
python=target/test-env/python/bin/python
[ -x "$python" ] || python3 -m venv target/test-env/python
"$python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$python" -m grpc_tools.protoc -Iproto --python_out="$work" --grpc_python_out="$work" data.proto
client=target/release/client

# The request h2load sends: one gRPC frame holding example.Data{text: "hello,world!"}.
printf '\x00\x00\x00\x00\x0e\x0a\x0chello,world!' > "$work/request.bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME CPUS: starts server NAME pinned to CPUS on a free port; sets server_pid and port.
start() {
  port=$(free_port)
  case $1 in
    formatdata) taskset -c "$2" target/release/server --addr "127.0.0.1:$port" 2>/dev/null & ;;
    tonic) taskset -c "$2" bench/baseline-tonic/target/release/baseline-tonic "127.0.0.1:$port" >/dev/null & ;;
    python) PYTHONPATH="$work" taskset -c "$2" "$python" tests/python/tutorial_server.py "127.0.0.1:$port" >/dev/null & ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
  # Every reply checked once before measuring: a fast wrong server would be no result.
  errors=$(taskset -c "$LOAD_CPUS" "$client" bench --addr "127.0.0.1:$port" --requests 200 --concurrency 4 --json | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["errors"].values()))')
  [ "$errors" = 0 ] || { echo "compare.sh: $1 gave $errors wrong replies" >&2; exit 1; }
}

# SIGTERM: background jobs of a script ignore SIGINT, and the baseline installs no handler.
stop() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

cpu_seconds() { awk -v tck="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / tck }' "/proc/$server_pid/stat"; }
rss_mib() { awk -v key="$1:" '$1 == key { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"; }

# h2load CONNECTIONS STREAMS SECONDS CPUS: prints "req/s mean_latency_us succeeded".
h2() {
  taskset -c "$4" h2load -c "$1" -m "$2" -D "$3" -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$work/request.bin" "http://127.0.0.1:$port/example.FormatData/DoFormat" 2>&1 | awk '
      function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1000000 }
      /^finished in/ { rps = $4 }
      /^requests:/ { ok = $8 }
      /^time for request:/ { mean = us($6) }
      END { printf "%s %.0f %s\n", rps, mean, ok }'
}

declare -A rps mean cpu idle peak p50 p99 rps2 cores2 rounds_rps rounds_cpu
servers=(tonic formatdata python)
median() { python3 -c 'import statistics, sys; print(statistics.median(float(v) for v in sys.argv[1:]))' "$@"; }

# Throughput, ROUNDS times with the servers taking turns, so a slow patch of this (shared,
# noisy) machine hits all of them alike; the table shows the medians.
for round in $(seq "$ROUNDS"); do
  for name in "${servers[@]}"; do
    echo "== round $round/$ROUNDS: $name, 1 CPU ($SERVER_CPUS)" >&2
    start "$name" "$SERVER_CPUS"
    [ "$round" = 1 ] && idle[$name]=$(rss_mib VmRSS)
    h2 "$CONNECTIONS" "$STREAMS" "$WARMUP" "$LOAD_CPUS" >/dev/null
    before=$(cpu_seconds)
    read -r r _ done <<<"$(h2 "$CONNECTIONS" "$STREAMS" "$DURATION" "$LOAD_CPUS")"
    after=$(cpu_seconds)
    rounds_rps[$name]+=" $r"
    rounds_cpu[$name]+=" $(python3 -c "print(($after - $before) / max(int('${done:-0}'), 1) * 100000)")"
    peak[$name]=$(rss_mib VmHWM)
    stop
  done
done
for name in "${servers[@]}"; do
  # shellcheck disable=SC2086 # word splitting of the per-round lists is intended
  rps[$name]=$(median ${rounds_rps[$name]})
  # shellcheck disable=SC2086
  cpu[$name]=$(python3 -c "print(f'{$(median ${rounds_cpu[$name]}):.2f}')")
done

# Latency: one call at a time, then a fixed rate of half the baseline's median peak.
rate=$(python3 -c "print(max(int(float('${rps[tonic]}') / 2), 1))")
for name in "${servers[@]}"; do
  echo "== latency: $name" >&2
  start "$name" "$SERVER_CPUS"
  read -r _ mean[$name] _ <<<"$(h2 1 1 "$LATENCY_DURATION" "$LOAD_CPUS")"
  read -r p50[$name] p99[$name] <<<"$(taskset -c "$LOAD_CPUS" "$client" bench --addr "127.0.0.1:$port" \
    --connections "$CONNECTIONS" --concurrency "$STREAMS" --rate "$rate" --duration "$DURATION" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["latency_us"]; print(r["p50"], r["p99"])')"
  if [ "$name" = formatdata ]; then
    # The load generator's own efficiency: client bench with h2load's connections and calls
    # in flight (CONNECTIONS x STREAMS), on the same single CPU, against the same server.
    read -r h2load_rps _ _ <<<"$(h2 "$CONNECTIONS" "$STREAMS" "$DURATION" "$LOAD_CPUS")"
    bench_rps=$(taskset -c "$LOAD_CPUS" "$client" bench --addr "127.0.0.1:$port" \
      --connections "$CONNECTIONS" --concurrency "$((CONNECTIONS * STREAMS))" --duration "$DURATION" --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])')
  fi
  peak[$name]=$(python3 -c "print(max(float('${peak[$name]}'), float('$(rss_mib VmHWM)')))")
  stop
done

for name in tonic formatdata; do
  echo "== $name, 2 CPUs ($TWO_CPUS), load generator sharing them" >&2
  start "$name" "$TWO_CPUS"
  h2 "$CONNECTIONS" "$STREAMS" "$WARMUP" "$TWO_CPUS" >/dev/null
  before=$(cpu_seconds)
  read -r rps2[$name] _ _ <<<"$(h2 "$CONNECTIONS" "$STREAMS" "$DURATION" "$TWO_CPUS")"
  after=$(cpu_seconds)
  # CPUs the server kept busy: above 1 means it spread over both.
  cores2[$name]=$(python3 -c "print(f'{($after - $before) / $DURATION:.2f}')")
  stop
done

ratio() { python3 -c "a, b = float('$1' or 0), float('$2' or 0); print(f'{a / b:.2f}x' if b else '-')"; }
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "h2load: ${CONNECTIONS} connections x ${STREAMS} streams, ${DURATION} s after ${WARMUP} s warm-up, median of $ROUNDS rounds; fixed rate ${rate}/s"
printf '%-11s %9s %7s %12s %9s %9s %11s %9s %9s %11s %10s\n' server "req/s" "vs fd" "mean(1x1)us" "p50@rate" "p99@rate" "CPU s/100k" "idle MiB" "peak MiB" "req/s 2CPU" "CPUs used"
for name in "${servers[@]}"; do
  printf '%-11s %9.0f %7s %12s %9s %9s %11s %9s %9s %11s %10s\n' "$name" "${rps[$name]}" \
    "$(ratio "${rps[formatdata]}" "${rps[$name]}")" "${mean[$name]}" "${p50[$name]}" "${p99[$name]}" \
    "${cpu[$name]}" "${idle[$name]}" "${peak[$name]}" "${rps2[$name]:--}" "${cores2[$name]:--}"
done
echo "(vs fd: formatdata's req/s divided by this server's; latencies in microseconds; 2CPU: the"
echo " server given CPUs $TWO_CPUS with h2load sharing them, and how many CPUs' worth it kept busy)"
python3 - "$h2load_rps" "$bench_rps" <<'PY'
import sys
h2load, bench = map(float, sys.argv[1:])
print(f"client bench vs h2load, one CPU each, against formatdata, same connections and calls in"
      f" flight: {bench:.0f} req/s = {bench / h2load:.0%} of h2load's {h2load:.0f}")
PY
