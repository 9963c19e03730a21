#!/usr/bin/env bash
# Instructions per unary DoFormat call, counted by callgrind: repeatable to a fraction of a
# percent whatever else the machine is doing, unlike req/s on a shared machine.
#
# Each server runs on one thread under valgrind while h2load sends FEW, then MANY calls (16
# connections x 64 streams, "hello,world!"); the difference of the two totals divided by the
# difference of the counts leaves out startup and shutdown.
#
# Usage: bench/callgrind.sh [NAME=SERVER_BINARY ...]   (default: formatdata's release build)
#        FEW=2000 MANY=22000 bench/callgrind.sh old=/tmp/old/server new=target/release/server
#        HEADERS=grpcio bench/callgrind.sh   (a real client's headers, from bench/headers/)
#        PROTOCOL=connect-json bench/callgrind.sh   (the call as Connect: connect-json, connect-proto)
# Needs: valgrind, h2load (Debian: valgrind, nghttp2-client), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

FEW=${FEW:-2000} MANY=${MANY:-22000} HEADERS=${HEADERS:-} PROTOCOL=${PROTOCOL:-grpc}
headers=(-H 'content-type: application/grpc' -H 'te: trailers')
request='\x00\x00\x00\x00\x0e\x0a\x0chello,world!'
case $PROTOCOL in
  grpc) ;;
  # What Connect-ES and connect-go send for a unary call, less the user agent.
  connect-json) headers=(-H 'content-type: application/json' -H 'connect-protocol-version: 1')
    request='{"text":"hello,world!"}' ;;
  connect-proto) headers=(-H 'content-type: application/proto' -H 'connect-protocol-version: 1')
    request='\x0a\x0chello,world!' ;;
  *) echo "callgrind.sh: PROTOCOL is grpc, connect-json or connect-proto" >&2; exit 1 ;;
esac
if [ -n "$HEADERS" ]; then
  headers=()
  while IFS= read -r line; do
    [[ -z $line || $line == \#* ]] || headers+=(-H "$line")
  done < "bench/headers/$HEADERS.txt"
fi
for tool in valgrind h2load python3; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool not found" >&2; exit 1; }
done
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin server
  set -- formatdata=target/release/server
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf "$request" > "$work/request.bin"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# instructions BINARY CALLS: total instructions of a server run that served CALLS calls.
instructions() {
  local port out
  port=$(free_port)
  out="$work/callgrind.out"
  rm -f "$out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" --addr "127.0.0.1:$port" --threads 1 \
    2>/dev/null &
  local pid=$!
  for _ in $(seq 300); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  h2load -n "$2" -c 16 -m 64 "${headers[@]}" \
    -d "$work/request.bin" "http://127.0.0.1:$port/example.FormatData/DoFormat" |
    awk -v want="$2" '/^requests:/ && $8 != want { print "h2load: " $0 > "/dev/stderr"; exit 1 }'
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  awk '/^summary:/ { print $2 }' "$out"
}

for pair in "$@"; do
  name=${pair%%=*} binary=${pair#*=}
  few=$(instructions "$binary" "$FEW")
  many=$(instructions "$binary" "$MANY")
  python3 -c "print(f'$name: {($many - $few) / ($MANY - $FEW):,.0f} instructions per call')"
done
