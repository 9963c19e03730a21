#!/usr/bin/env bash
# `cat BIG | client --stream` against a local server: checks the output is the uppercase of the
# input, and reports both processes' peak RSS (the target: under 50 MiB each).
#
# Usage: bench/stream_rss.sh [MEGABYTES]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
megabytes=${1:-200}
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet --bins
python3 - "$work/in.txt" "$megabytes" <<'PY'
import random, sys
words = ["hello", "world", "straße", "ﬁne", "αβγ", "привет", "😀", "grpc", "stream", "ŉ"]
path, megabytes = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
with open(path, "w", encoding="utf-8") as out:
    written = 0
    while written < megabytes * 1_000_000:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(1, 20))) + "\n"
        written += out.write(line)
    out.write("a last line without newline ß")
PY

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/server --addr "127.0.0.1:$port" 2>/dev/null &
server_pid=$!
sleep 1

start=$(date +%s.%N)
# shellcheck disable=SC2002 # the point is a pipe, as users write it
cat "$work/in.txt" | target/release/client --addr "127.0.0.1:$port" --stream > "$work/out.txt" &
client_pid=$!
client_peak=0
while kill -0 "$client_pid" 2>/dev/null; do
  now=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$client_pid/status" 2>/dev/null || true)
  [ -n "$now" ] && client_peak=$now
  sleep 0.05
done
wait "$client_pid"
elapsed=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
server_peak=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$server_pid/status")

python3 - "$work/in.txt" "$work/out.txt" <<'PY'
import itertools, sys
# Line by line (keeping line endings), so gigabytes compare in bounded memory.
with open(sys.argv[1], encoding="utf-8", newline="") as source, \
        open(sys.argv[2], encoding="utf-8", newline="") as result:
    equal = all(a is not None and b is not None and a.upper() == b
                for a, b in itertools.zip_longest(source, result))
print("output equals the uppercase of the input:", equal)
sys.exit(0 if equal else 1)
PY
echo "input: $(stat -c %s "$work/in.txt") bytes, $(wc -l < "$work/in.txt") lines, streamed in ${elapsed} s"
echo "peak RSS: client $((client_peak / 1024)) MiB, server $((server_peak / 1024)) MiB"
