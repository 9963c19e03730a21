#!/usr/bin/env bash
# Side-by-side benchmark of FormatData servers, in one run on one machine:
#   formatdata          this crate, release build, default flags
#   formatdata+metrics  the same with --metrics-addr 127.0.0.1:0 (the Prometheus endpoint on)
#   formatdata+tracing  the same with OpenTelemetry on, 1% of calls sampled
#                       (OTEL_TRACES_SAMPLER=traceidratio, _ARG=0.01), spans exported over OTLP
#                       to a sink on LOAD_CPUS (bench/floor-h2, which answers any gRPC call)
#   tonic-tuned         bench/baseline-tonic-tuned: the stock server as a user tunes it in ten
#                       minutes (mimalloc, fat LTO, codegen-units 1, current-thread runtime)
#   h2-floor            bench/floor-h2: the `h2` crate alone, no gRPC layer, built the same way
#   tonic               bench/baseline-tonic: stock tonic, written like tonic's helloworld example
#   python              the Python grpcio server from the interop tests
#
# For each server, pinned to SERVER_CPUS with taskset while the load generator runs on LOAD_CPUS:
#   1. throughput: h2load, unary DoFormat "hello,world!", CONNECTIONS x STREAMS, WARMUP s then
#      DURATION s measured; the server's CPU seconds per 100k calls, its peak RSS (VmHWM, the
#      highest of the rounds) and the calls h2load saw fail;
#   2. latency: h2load with 1 connection x 1 stream (mean), in each round after its throughput
#      run (median of the rounds: one run of a few seconds moves by 10 us on a shared VM);
#   3. latency at a fixed rate: `client bench --rate` at half of the tuned tonic's median peak
#      (median p50 and p99 of ROUNDS runs), STREAMS calls in flight at most over CONNECTIONS
#      connections (open loop: calls start on schedule, and a late one counts from when it was
#      due). A server whose peak is below that rate is not run: its queue would only grow.
# Then, for formatdata and the tuned tonic, what real clients send: the same throughput and 1x1
# runs with the request headers of grpcio, grpc-js, grpc-go, and grpc-go with a deadline on its
# calls (HEADER_SETS, captured from the real clients by bench/capture-headers.sh into
# bench/headers/), and a fixed-rate latency run driven by grpcio itself (bench/fixed_rate.py,
# PY_RATE calls a second, median of ROUNDS).
# Then the same throughput run for TWO_CPU_SERVERS given 2 CPUs (the load generator shares them).
# Last, formatdata's ratio to each server and the goals beside the figures.
#
# Usage: bench/compare.sh [--smoke]     (--smoke: 2-second runs, for CI; figures meaningless)
# Settings (environment): SERVERS="formatdata tonic-tuned h2-floor" to run only some (the
#   fixed rate then comes from the tuned tonic if it runs, else from the first server; RATE=N
#   sets it); DURATION, WARMUP, LATENCY_DURATION, ROUNDS, CONNECTIONS, STREAMS, SERVER_CPUS,
#   LOAD_CPUS, TWO_CPUS, TWO_CPU_SERVERS, HEADER_SETS ("" for none), PY_RATE.
# Needs: h2load (Debian: nghttp2-client), taskset, python3. Builds what it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} LATENCY_DURATION=${LATENCY_DURATION:-5} ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16} STREAMS=${STREAMS:-64}
SERVER_CPUS=${SERVER_CPUS:-0} LOAD_CPUS=${LOAD_CPUS:-1} TWO_CPUS=${TWO_CPUS:-0,1}
SERVERS=${SERVERS:-formatdata formatdata+metrics formatdata+tracing tonic-tuned h2-floor tonic python}
TWO_CPU_SERVERS=${TWO_CPU_SERVERS:-tonic formatdata}
HEADER_SETS=${HEADER_SETS-grpcio grpc-js grpc-go grpc-go-deadline} PY_RATE=${PY_RATE:-1000}
if [ "${1:-}" = "--smoke" ]; then
  DURATION=2 WARMUP=1 LATENCY_DURATION=1 ROUNDS=1
fi
read -r -a servers <<<"$SERVERS"
running() { [[ " ${servers[*]} " == *" $1 "* ]]; }
for name in "${servers[@]}"; do
  case $name in
    formatdata | formatdata+metrics | formatdata+tracing | tonic-tuned | h2-floor | tonic | python) ;;
    *) echo "compare.sh: unknown server '$name' in SERVERS" >&2; exit 1 ;;
  esac
done

for tool in h2load taskset python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found (h2load: apt-get install nghttp2-client)" >&2; exit 1; }
done

work=$(mktemp -d)
server_pid="" sink_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Each build timed, since CI pays for them: the baselines are crates of their own, built from
# scratch on a fresh clone.
build() {
  local started=$SECONDS
  "$@"
  echo "   ($((SECONDS - started)) s)" >&2
}
echo "building (release)..." >&2
# The client is always needed: it checks every server's replies before it is measured.
build cargo build --release --quiet --bins
if running tonic; then build cargo build --release --quiet --manifest-path bench/baseline-tonic/Cargo.toml; fi
if running tonic-tuned; then build cargo build --release --quiet --manifest-path bench/baseline-tonic-tuned/Cargo.toml; fi
if running h2-floor || running formatdata+tracing; then build cargo build --release --quiet --manifest-path bench/floor-h2/Cargo.toml; fi
# The real-client rows compare formatdata with the tuned tonic.
real_clients() { running formatdata && running tonic-tuned; }
# The virtual environment the interop tests set up (tests/support/src/env.rs), made here if the
# tests have not run yet: for the Python server, and for grpcio driving the fixed-rate row.
python=target/test-env/python/bin/python
if running python || real_clients; then
  [ -x "$python" ] || python3 -m venv target/test-env/python
  "$python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  "$python" -m grpc_tools.protoc -Iproto --python_out="$work" --grpc_python_out="$work" data.proto
fi
# Each header set as h2load arguments: -H 'name: value' for every line of bench/headers/SET.txt.
declare -A header_args
for set in $HEADER_SETS; do
  [ -f "bench/headers/$set.txt" ] || { echo "compare.sh: no bench/headers/$set.txt (bench/capture-headers.sh makes it)" >&2; exit 1; }
  header_args[$set]=$(python3 -c '
import shlex, sys
print(" ".join("-H " + shlex.quote(line.strip()) for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")))' "bench/headers/$set.txt")
done
client=target/release/client

# The request h2load sends: one gRPC frame holding example.Data{text: "hello,world!"}.
printf '\x00\x00\x00\x00\x0e\x0a\x0chello,world!' > "$work/request.bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME CPUS: starts server NAME pinned to CPUS on a free port; sets server_pid and port.
start() {
  port=$(free_port)
  case $1 in
    formatdata) taskset -c "$2" target/release/server --addr "127.0.0.1:$port" 2>/dev/null & ;;
    # Its log names the metrics port it was given.
    formatdata+metrics) taskset -c "$2" target/release/server --addr "127.0.0.1:$port" \
      --metrics-addr 127.0.0.1:0 2>"$work/metrics.log" & ;;
    formatdata+tracing)
      if [ -z "$sink_pid" ]; then
        sink_port=$(free_port)
        taskset -c "$LOAD_CPUS" bench/floor-h2/target/release/floor-h2 "127.0.0.1:$sink_port" >/dev/null &
        sink_pid=$!
      fi
      OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 taskset -c "$2" \
        target/release/server --addr "127.0.0.1:$port" --otlp-endpoint "http://127.0.0.1:$sink_port" \
        2>/dev/null & ;;
    tonic-tuned) taskset -c "$2" bench/baseline-tonic-tuned/target/release/baseline-tonic-tuned "127.0.0.1:$port" >/dev/null & ;;
    h2-floor) taskset -c "$2" bench/floor-h2/target/release/floor-h2 "127.0.0.1:$port" >/dev/null & ;;
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
  if [ "$1" = formatdata+metrics ]; then
    # The endpoint must be up and counting, or this variant measures nothing more than the first.
    python3 - "$work/metrics.log" <<'PY' >&2 || exit 1
import re, sys, urllib.request
url = re.search(r"http://[0-9.:]+/metrics", open(sys.argv[1]).read()).group(0)
text = urllib.request.urlopen(url, timeout=5).read().decode()
calls = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("grpc_server_handled_total{"))
if calls < 200:
    sys.exit(f"compare.sh: {url} counted {calls:.0f} calls of the 200 just made")
print(f"   metrics at {url}: {calls:.0f} calls counted")
PY
  fi
}

# SIGTERM: background jobs of a script ignore SIGINT, and the baselines install no handler.
stop() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

cpu_seconds() { awk -v tck="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / tck }' "/proc/$server_pid/stat"; }
rss_mib() { awk -v key="$1:" '$1 == key { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"; }

# h2load CONNECTIONS STREAMS SECONDS CPUS [HEADER_SET]: prints "req/s mean_latency_us succeeded
# failed". Without a header set, h2load's bare request (content-type and te); with one, that
# client's headers. h2load counts a call as failed on a non-2xx status or a stream or connection
# error; it does not read grpc-status, which start's check and the fixed-rate runs do.
h2() {
  local headers="-H 'content-type: application/grpc' -H 'te: trailers'"
  [ -n "${5:-}" ] && headers=${header_args[$5]}
  eval "taskset -c \"\$4\" h2load -c \"\$1\" -m \"\$2\" -D \"\$3\" $headers" \
    -d "$work/request.bin" "http://127.0.0.1:$port/example.FormatData/DoFormat" 2>&1 | awk '
      function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1000000 }
      /^finished in/ { rps = $4 }
      /^requests:/ { ok = $8; failed = $10 }
      /^time for request:/ { mean = us($6) }
      END { printf "%s %.0f %s %s\n", rps, mean, ok, failed }'
}

declare -A rps mean cpu idle peak failed p50 p99 rps2 cores2 rounds_rps rounds_cpu rounds_mean set_rps set_mean py_p50 py_p99
median() { python3 -c 'import statistics, sys; print(statistics.median(float(v) for v in sys.argv[1:]))' "$@"; }
median_int() { python3 -c 'import statistics, sys; print(round(statistics.median(float(v) for v in sys.argv[1:])))' "$@"; }
max() { python3 -c 'import sys; print(max(float(v) for v in sys.argv[1:]))' "$@"; }

# Throughput, ROUNDS times with the servers taking turns, so a slow patch of this (shared,
# noisy) machine hits all of them alike; the table shows the medians.
for round in $(seq "$ROUNDS"); do
  for name in "${servers[@]}"; do
    echo "== round $round/$ROUNDS: $name, 1 CPU ($SERVER_CPUS)" >&2
    start "$name" "$SERVER_CPUS"
    [ "$round" = 1 ] && idle[$name]=$(rss_mib VmRSS)
    h2 "$CONNECTIONS" "$STREAMS" "$WARMUP" "$LOAD_CPUS" >/dev/null
    before=$(cpu_seconds)
    read -r r _ done fails <<<"$(h2 "$CONNECTIONS" "$STREAMS" "$DURATION" "$LOAD_CPUS")"
    after=$(cpu_seconds)
    rounds_rps[$name]+=" $r"
    rounds_cpu[$name]+=" $(python3 -c "print(($after - $before) / max(int('${done:-0}'), 1) * 100000)")"
    failed[$name]=$((${failed[$name]:-0} + ${fails:-0}))
    # One call at a time.
    read -r _ m _ _ <<<"$(h2 1 1 "$LATENCY_DURATION" "$LOAD_CPUS")"
    rounds_mean[$name]+=" $m"
    # What real clients send, on the same server process: both runs with each client's headers.
    if real_clients && [[ $name == formatdata || $name == tonic-tuned ]]; then
      for set in $HEADER_SETS; do
        read -r r _ _ fails <<<"$(h2 "$CONNECTIONS" "$STREAMS" "$DURATION" "$LOAD_CPUS" "$set")"
        rounds_rps[$name/$set]+=" $r"
        failed[$name]=$((${failed[$name]} + ${fails:-0}))
        read -r _ m _ _ <<<"$(h2 1 1 "$LATENCY_DURATION" "$LOAD_CPUS" "$set")"
        rounds_mean[$name/$set]+=" $m"
      done
    fi
    peak[$name]=$(max "${peak[$name]:-0}" "$(rss_mib VmHWM)")
    stop
  done
done
for key in "${!rounds_rps[@]}"; do
  [[ $key == */* ]] || continue
  # shellcheck disable=SC2086
  set_rps[$key]=$(median ${rounds_rps[$key]})
  # shellcheck disable=SC2086
  set_mean[$key]=$(median_int ${rounds_mean[$key]})
done
for name in "${servers[@]}"; do
  # shellcheck disable=SC2086 # word splitting of the per-round lists is intended
  rps[$name]=$(median ${rounds_rps[$name]})
  # shellcheck disable=SC2086
  mean[$name]=$(median_int ${rounds_mean[$name]})
  # shellcheck disable=SC2086
  cpu[$name]=$(python3 -c "print(f'{$(median ${rounds_cpu[$name]}):.2f}')")
done

# The issue's latency goal is set against the tuned tonic at half its peak.
if [ -n "${RATE:-}" ]; then
  rate=$RATE rate_from="RATE"
elif running tonic-tuned; then
  rate_from="half the tuned tonic's median peak"
  rate=$(python3 -c "print(max(int(float('${rps[tonic-tuned]}') / 2), 1))")
else
  rate_from="half of ${servers[0]}'s median peak"
  rate=$(python3 -c "print(max(int(float('${rps[${servers[0]}]}') / 2), 1))")
fi

# Latency at the fixed rate.
for name in "${servers[@]}"; do
  echo "== latency: $name" >&2
  start "$name" "$SERVER_CPUS"
  if python3 -c "import sys; sys.exit(float('${rps[$name]}') < $rate)"; then
    # ROUNDS runs, the median p50 and p99: on a shared VM one stall of the whole machine for
    # tens of milliseconds delays every call due meanwhile, enough to move one run's p99.
    for round in $(seq "$ROUNDS"); do
      taskset -c "$LOAD_CPUS" "$client" bench --addr "127.0.0.1:$port" --connections "$CONNECTIONS" \
        --concurrency "$STREAMS" --rate "$rate" --duration "$DURATION" --json > "$work/rate-$round.json"
    done
    read -r p50[$name] p99[$name] errors <<<"$(python3 - "$work"/rate-*.json <<'PY'
import json, statistics, sys
runs = [json.load(open(path)) for path in sys.argv[1:]]
p50 = statistics.median_low(run["latency_us"]["p50"] for run in runs)
p99 = statistics.median_low(run["latency_us"]["p99"] for run in runs)
print(p50, p99, sum(sum(run["errors"].values()) for run in runs))
PY
)"
    rm -f "$work"/rate-*.json
    failed[$name]=$((${failed[$name]} + errors))
  else
    p50[$name]=sat. p99[$name]=sat.
  fi
  if real_clients && [[ $name == formatdata || $name == tonic-tuned ]]; then
    for round in $(seq "$ROUNDS"); do
      taskset -c "$LOAD_CPUS" "$python" bench/fixed_rate.py "127.0.0.1:$port" "$PY_RATE" "$DURATION" > "$work/py-$round.json"
    done
    read -r py_p50[$name] py_p99[$name] errors <<<"$(python3 - "$work"/py-*.json <<'PY'
import json, statistics, sys
runs = [json.load(open(path)) for path in sys.argv[1:]]
print(statistics.median_low(run["p50_us"] for run in runs),
      statistics.median_low(run["p99_us"] for run in runs), sum(run["errors"] for run in runs))
PY
)"
    rm -f "$work"/py-*.json
    failed[$name]=$((${failed[$name]} + errors))
  fi
  if [ "$name" = formatdata ]; then
    # The load generator's own efficiency: client bench with h2load's connections and calls
    # in flight (CONNECTIONS x STREAMS), on the same single CPU, against the same server.
    read -r h2load_rps _ _ _ <<<"$(h2 "$CONNECTIONS" "$STREAMS" "$DURATION" "$LOAD_CPUS")"
    # Its rate, and whether it said it was the bottleneck (`client_bound`).
    read -r bench_rps bench_bound <<<"$(taskset -c "$LOAD_CPUS" "$client" bench \
      --addr "127.0.0.1:$port" --connections "$CONNECTIONS" \
      --concurrency "$((CONNECTIONS * STREAMS))" --duration "$DURATION" --json |
      python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["rps"], s["client_bound"])')"
  fi
  stop
done

for name in $TWO_CPU_SERVERS; do
  running "$name" || continue
  echo "== $name, 2 CPUs ($TWO_CPUS), load generator sharing them" >&2
  start "$name" "$TWO_CPUS"
  h2 "$CONNECTIONS" "$STREAMS" "$WARMUP" "$TWO_CPUS" >/dev/null
  before=$(cpu_seconds)
  read -r r _ _ _ <<<"$(h2 "$CONNECTIONS" "$STREAMS" "$DURATION" "$TWO_CPUS")"
  after=$(cpu_seconds)
  rps2[$name]=$(python3 -c "print(round(float('${r:-0}')))")
  # CPUs the server kept busy: above 1 means it spread over both.
  cores2[$name]=$(python3 -c "print(f'{($after - $before) / $DURATION:.2f}')")
  stop
done

ratio() { python3 -c "a, b = float('$1' or 0), float('$2' or 0); print(f'{a / b:.2f}x' if b else '-')"; }
echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "h2load: ${CONNECTIONS} connections x ${STREAMS} streams, ${DURATION} s after ${WARMUP} s warm-up, median of $ROUNDS rounds; fixed rate ${rate}/s ($rate_from)"
printf '%-18s %9s %7s %12s %9s %9s %11s %9s %9s %7s %11s %10s\n' server "req/s" "vs fd" "mean(1x1)us" \
  "p50@rate" "p99@rate" "CPU s/100k" "idle MiB" "peak MiB" failed "req/s 2CPU" "CPUs used"
for name in "${servers[@]}"; do
  printf '%-18s %9.0f %7s %12s %9s %9s %11s %9s %9s %7s %11s %10s\n' "$name" "${rps[$name]}" \
    "$(running formatdata && ratio "${rps[formatdata]}" "${rps[$name]}" || echo -)" "${mean[$name]}" \
    "${p50[$name]}" "${p99[$name]}" "${cpu[$name]}" "${idle[$name]}" "${peak[$name]}" "${failed[$name]}" \
    "${rps2[$name]:--}" "${cores2[$name]:--}"
done
echo "(vs fd: formatdata's req/s divided by this server's; latencies in microseconds; sat.: peak"
echo " below the fixed rate, not run; peak: VmHWM, highest of the throughput rounds; failed: calls"
echo " h2load saw fail in the measured throughput runs plus errors at the fixed rate; 2CPU: the"
echo " server given CPUs $TWO_CPUS with h2load sharing them, and how many CPUs' worth it kept busy)"
if real_clients && [ -n "$HEADER_SETS" ]; then
  echo
  echo "what real clients send (bench/headers/, captured by bench/capture-headers.sh), same h2load runs:"
  printf '%-10s %-12s %9s %9s %12s\n' headers server "req/s" "vs tuned" "mean(1x1)us"
  for set in $HEADER_SETS; do
    for name in formatdata tonic-tuned; do
      printf '%-10s %-12s %9.0f %9s %12s\n' "$set" "$name" "${set_rps[$name/$set]}" \
        "$(ratio "${set_rps[$name/$set]}" "${set_rps[tonic-tuned/$set]}")" "${set_mean[$name/$set]}"
    done
  done
  echo "grpcio at a fixed rate ($PY_RATE/s, bench/fixed_rate.py, median of $ROUNDS): formatdata p50 ${py_p50[formatdata]} us p99 ${py_p99[formatdata]} us; tuned tonic p50 ${py_p50[tonic-tuned]} us p99 ${py_p99[tonic-tuned]} us"
fi

# The goals, from this run's figures. Noisy machine: compare ratios over several runs.
if running formatdata; then
  echo
  goal() { # NAME LABEL GOAL: formatdata's ratio to NAME, and its goal if any
    running "$1" || return 0
    python3 - "${rps[formatdata]}" "${rps[$1]}" "$2" "$3" <<'PY'
import sys
fd, other, label, goal = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
r = fd / other if other else 0
line = f"formatdata vs {label}: {r:.2f}x"
if goal:
    line += f" (goal >= {goal}x: {'met' if r >= float(goal) else 'NOT met'})"
print(line)
PY
  }
  goal tonic-tuned "tuned tonic" 1.4
  if real_clients; then
    for set in $HEADER_SETS; do
      python3 - "${set_rps[formatdata/$set]}" "${set_rps[tonic-tuned/$set]}" "${set_mean[formatdata/$set]}" "${set_mean[tonic-tuned/$set]}" "$set" <<'PY'
import sys
fd, tuned, fd_mean, tuned_mean = map(float, sys.argv[1:5])
r = fd / tuned if tuned else 0
print(f"formatdata vs tuned tonic, {sys.argv[5]}'s headers: {r:.2f}x (goal >= 1.4x: {'met' if r >= 1.4 else 'NOT met'});"
      f" 1x1 mean {fd_mean:.0f} vs {tuned_mean:.0f} us (goal: no worse: {'met' if fd_mean <= tuned_mean else 'NOT met'})")
PY
    done
  fi
  goal h2-floor "h2 floor" 0.75
  goal tonic "stock tonic" ""
  goal python "python grpcio" ""
  if running formatdata+metrics; then
    python3 - "${rps[formatdata+metrics]}" "${rps[formatdata]}" <<'PY'
import sys
m, fd = map(float, sys.argv[1:])
print(f"formatdata+metrics vs formatdata: {m / fd:.2f}x (goal >= 0.95x: {'met' if m >= 0.95 * fd else 'NOT met'})")
PY
  fi
  if running formatdata+tracing; then
    python3 - "${rps[formatdata+tracing]}" "${rps[formatdata]}" <<'PY'
import sys
t, fd = map(float, sys.argv[1:])
print(f"formatdata+tracing (1% sampled) vs formatdata: {t / fd:.2f}x (cost {100 * (1 - t / fd):.1f}%)")
PY
  fi
  python3 -c "p = float('${peak[formatdata]}'); print(f'formatdata peak RSS: {p} MiB (goal <= 12 MiB: ' + ('met' if p <= 12 else 'NOT met') + ')')"
  python3 -c "m = float('${mean[formatdata]}'); t = float('${mean[tonic-tuned]:-0}') or float('inf'); print(f'1x1 mean, h2load: formatdata {m:.0f} us, tuned tonic {t:.0f} us (goal: no worse: ' + ('met' if m <= t else 'NOT met') + ')')"
  if running tonic-tuned; then
    python3 - "${p99[formatdata]}" "${p99[tonic-tuned]}" "$rate" <<'PY'
import sys
fd, tuned, rate = sys.argv[1:]
verdict = "met" if fd != "sat." and (tuned == "sat." or float(fd) <= float(tuned)) else "NOT met"
print(f"p99 at {rate}/s: formatdata {fd} us, tuned tonic {tuned} us (goal: no worse: {verdict})")
PY
  fi
  echo "formatdata failed calls: ${failed[formatdata]} (goal: 0)"
  python3 - "$h2load_rps" "$bench_rps" "$bench_bound" <<'PY'
import sys
h2load, bench = map(float, sys.argv[1:3])
bound = sys.argv[3] == "True"
print(f"client bench vs h2load, one CPU each, against formatdata, same connections and calls in"
      f" flight: {bench:.0f} req/s = {bench / h2load:.0%} of h2load's {h2load:.0f}"
      f" (goal >= 85%, or client-bound said: {'met' if bench >= 0.85 * h2load or bound else 'NOT met'};"
      f" it said client-bound: {'yes' if bound else 'no'})")
PY
fi
