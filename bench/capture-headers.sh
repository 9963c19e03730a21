#!/usr/bin/env bash
# Learns what real gRPC clients send with every call, for bench/compare.sh's rows: points grpcio
# (the seed tutorial's client, from the interop tests' venv), grpc-js (bench/capture/) and
# grpc-go (Debian's golang-google-grpc-dev) at bench/floor-h2 with FLOOR_PRINT_HEADERS=1, one
# unary DoFormat call each with the library's defaults (grpc-go also with a deadline), and writes
# each client's request headers to bench/headers/CLIENT.txt, one `name: value` a line, the
# version on a `#` line.
#
# Usage: bench/capture-headers.sh     (needs python3, node/npm; installs Go from Debian if absent)
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
floor_pid=""
trap '[ -n "$floor_pid" ] && kill "$floor_pid" 2>/dev/null; rm -rf "$work"' EXIT

cargo build --release --quiet --manifest-path bench/floor-h2/Cargo.toml
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
FLOOR_PRINT_HEADERS=1 bench/floor-h2/target/release/floor-h2 "127.0.0.1:$port" > "$work/seen.jsonl" &
floor_pid=$!
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# capture CLIENT VERSION HOW COMMAND...: runs one call and keeps the headers it sent.
capture() {
  local client=$1 version=$2 how=$3
  shift 3
  local before
  before=$(grep -c '"path"' "$work/seen.jsonl" || true)
  "$@" >&2
  sleep 0.2
  python3 - "$work/seen.jsonl" "$before" "$client" "$version" "$how" > "bench/headers/$client.txt" <<'PY'
import json, sys
path, before, client, version, how = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
calls = [json.loads(line) for line in open(path) if line.startswith("{")]
call = calls[before]
assert call["path"] == "/example.FormatData/DoFormat", call
print(f"# {client} {version}: the request headers of one unary DoFormat call {how},"
      " captured by bench/capture-headers.sh")
for name, value in call["headers"]:
    print(f"{name}: {value}")
PY
  echo "bench/headers/$client.txt:" >&2
  grep -v '^#' "bench/headers/$client.txt" | sed 's/^/  /' >&2
}
mkdir -p bench/headers

# grpcio: the interop tests' venv (tests/support/src/env.rs), made here if the tests have not run.
python=target/test-env/python/bin/python
[ -x "$python" ] || python3 -m venv target/test-env/python
"$python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$python" -m grpc_tools.protoc -Iproto --python_out="$work" --grpc_python_out="$work" data.proto
defaults="with the library's defaults"
capture grpcio "$("$python" -c 'import grpc; print(grpc.__version__)')" "$defaults" \
  env PYTHONPATH="$work" "$python" tests/python/tutorial_client.py "127.0.0.1:$port"

(cd bench/capture && npm install --silent --no-audit --no-fund)
capture grpc-js "$(node -p 'require("./bench/capture/node_modules/@grpc/grpc-js/package.json").version')" "$defaults" \
  node bench/capture/grpc_js_client.mjs "127.0.0.1:$port"

if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/google.golang.org/grpc ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-google-grpc-dev >/dev/null
fi
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/go-cache" \
  go build -o "$work/grpc_go_client" bench/capture/grpc_go_client.go
capture grpc-go "$(dpkg-query -W -f '${Version}' golang-google-grpc-dev)" "$defaults" \
  "$work/grpc_go_client" "127.0.0.1:$port"
# The same with a deadline on the call's context, as production code sets one: grpc-timeout.
capture grpc-go-deadline "$(dpkg-query -W -f '${Version}' golang-google-grpc-dev)" \
  "with the library's defaults and a 10 s deadline" "$work/grpc_go_client" "127.0.0.1:$port" 10s
