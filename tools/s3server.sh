#!/usr/bin/env bash
# A real S3-compatible server on loopback for the gateway's S3 blob store: SeaweedFS (Apache-2.0),
# built once from the Go module proxy into a cache outside the repository.
#
#   tools/s3server.sh build        build `weed` if missing (first time ~15 min on 2 cores); print its path
#   tools/s3server.sh path         print the built binary's path; exit 1 if it is not built
#   tools/s3server.sh up DIR       start master+volume+filer+S3 on 127.0.0.1, free random ports, data in
#                                  DIR; wait until S3 answers; write DIR/env (S3_ENDPOINT,
#                                  S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, fresh random keys) and DIR/pid
#   tools/s3server.sh down DIR     stop the server started in DIR (its process group) and wait for it
#
# The module's go.mod has replace directives, so `go install pkg@version` refuses it; the module is
# downloaded (`go mod download`) and built as the main module in its own directory, like upstream.
# The binary is built into a temporary name and renamed into place, so an interrupted build never
# leaves a half-written binary that a later run would trust. Tests call `path` and `up`/`down`.
set -euo pipefail

SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
CACHE=${FABRIC_S3_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fabric-s3}
BIN=$CACHE/bin/weed-$SEAWEEDFS_VERSION

log() { printf 's3server: %s\n' "$*" >&2; }

build() {
  if [ -x "$BIN" ]; then echo "$BIN"; return 0; fi
  command -v go >/dev/null || { log "Go is required (https://go.dev/doc/install)"; exit 1; }
  log "building SeaweedFS weed $SEAWEEDFS_VERSION (first time: about 15 minutes on 2 cores)"
  local dir
  dir=$(go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { log "could not download github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION"; exit 1; }
  mkdir -p "$(dirname "$BIN")"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -p "${GO_PARALLEL:-2}" -trimpath -ldflags "-s -w" -o "$BIN.tmp" ./weed)
  mv "$BIN.tmp" "$BIN"
  echo "$BIN"
}

free_ports() { # free_ports N: N distinct free loopback ports, each with port+10000 free too
  python3 - "$1" <<'EOF'
import socket, sys
want, held, out = int(sys.argv[1]), [], []
while len(out) < want:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); held.append(s)
    port = s.getsockname()[1]
    if port + 10000 > 65535:
        continue
    try:
        t = socket.socket(); t.bind(("127.0.0.1", port + 10000)); held.append(t)
    except OSError:
        continue
    out.append(port)
print(" ".join(map(str, out)))
EOF
}

up() {
  local dir=${1:?usage: s3server.sh up DIR}
  [ -x "$BIN" ] || { log "weed is not built: run tools/s3server.sh build"; exit 1; }
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  local master volume filer s3
  read -r master volume filer s3 < <(free_ports 4)
  local key secret
  key=fabric$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # Credentials through the environment make them the server's admin identity (no config file).
  # Each bucket is a collection that grows its own volumes (7 by default): one volume per
  # collection and many (sparse) volume slots let a test session use a bucket per test.
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret WEED_MASTER_VOLUME_GROWTH_COPY_1=1 \
    setsid "$BIN" server -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -dir="$dir/data" -master.port="$master" -master.port.grpc=$((master + 10000)) \
    -master.volumeSizeLimitMB=256 -volume.max=2000 \
    -volume.port="$volume" -volume.port.grpc=$((volume + 10000)) \
    -filer -filer.port="$filer" -filer.port.grpc=$((filer + 10000)) -filer.localSocket="$dir/filer.sock" \
    -s3 -s3.port="$s3" -s3.port.grpc=$((s3 + 10000)) -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.localSocket="$dir/s3.sock" >"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  local i
  for i in $(seq 1 300); do
    # Any HTTP answer from the S3 port (403 without credentials) means the gateway is serving.
    if curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3/" 2>/dev/null | grep -q '^[2-5]'; then
      printf 'S3_ENDPOINT=http://127.0.0.1:%s\nS3_ACCESS_KEY_ID=%s\nS3_SECRET_ACCESS_KEY=%s\n' "$s3" "$key" "$secret" >"$dir/env"
      echo "$dir/env"
      return 0
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { log "weed exited; see $dir/server.log"; tail -20 "$dir/server.log" >&2; exit 1; }
    sleep 0.2
  done
  log "S3 did not answer within 60 s; see $dir/server.log"
  down "$dir"
  exit 1
}

down() {
  local dir=${1:?usage: s3server.sh down DIR}
  [ -f "$dir/pid" ] || return 0
  local pid
  pid=$(cat "$dir/pid")
  kill -TERM -- "-$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 30); do  # weed drains for a while on TERM; a test server's data is thrown away
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  build) build ;;
  path) [ -x "$BIN" ] && echo "$BIN" || { log "not built: tools/s3server.sh build"; exit 1; } ;;
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
