#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy, once, into a cache outside
# the repository. A second run finds them and returns in well under a second.
#
#   devcluster/build.sh            build what is missing, print the bin directory
#   devcluster/build.sh --real-node    also the real node's binaries: kubelet and kube-proxy (same
#                                      Kubernetes version) and a CoreDNS with the plugins a cluster needs
#
# Versions are pinned here; the cache is keyed by them, so changing one builds that part again.
# Each binary is built into a temporary name and renamed into place, so an interrupted build never
# leaves a half-written binary that a later run would trust.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}   # kwok v0.8.0 defaults to 1.36; needs Go >= 1.26
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}  # the etcd that k8s v1.36.3's go.mod requires
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
# In the order CoreDNS runs them (its plugin.cfg order): the cluster's DNS needs only these.
COREDNS_PLUGINS=${COREDNS_PLUGINS:-"bind errors log health ready kubernetes loop cache reload loadbalance"}

CACHE=${FABRIC_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fabric-devcluster}
BIN=$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION
SRC=$CACHE/src
mkdir -p "$BIN" "$SRC"

log() { printf 'devcluster/build: %s\n' "$*" >&2; }

need() { # need NAME...: true when any named binary is missing from $BIN
  local name
  for name in "$@"; do [ -x "$BIN/$name" ] || return 0; done
  return 1
}

command -v go >/dev/null || { log "Go is required (https://go.dev/doc/install)"; exit 1; }
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
GO_PARALLEL=${GO_PARALLEL:-2}   # each link of kube-apiserver takes ~2 GB; 2 fits the 2-core machines

build_kwok() {
  need kwok kwokctl || return 0
  log "building kwok and kwokctl $KWOK_VERSION"
  local tmp; tmp=$(mktemp -d "$BIN/.kwok.XXXX")
  GOBIN=$tmp go install -p "$GO_PARALLEL" -trimpath \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  mv "$tmp/kwok" "$tmp/kwokctl" "$BIN/"
  rmdir "$tmp"
}

build_etcd() {
  need etcd || return 0
  log "building etcd $ETCD_VERSION"
  local dir=$SRC/etcd-$ETCD_VERSION
  mkdir -p "$dir"
  (
    cd "$dir"
    [ -f go.mod ] || go mod init fabric.dev/devcluster/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    go build -p "$GO_PARALLEL" -trimpath -o "$BIN/.etcd.tmp" go.etcd.io/etcd/server/v3
  )
  mv "$BIN/.etcd.tmp" "$BIN/etcd"
}

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging/...,
# which Go ignores in a dependency. A wrapper module replaces each with its published v0.Y.Z tag.
k8s_wrapper_module() {
  local dir=$1 minor=${K8S_VERSION#v1.}
  local staging_version=v0.$minor
  local upstream_mod
  mkdir -p "$dir"
  upstream_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [ -f "$upstream_mod" ] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  {
    echo "module fabric.dev/devcluster/kubernetes"
    echo
    echo "go $(sed -n 's/^go //p' "$upstream_mod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$upstream_mod" | sort -u |
      while read -r module; do echo "replace $module => $module $staging_version"; done
  } >"$dir/go.mod"
}

build_kubernetes() { # build_kubernetes CMD...: the named k8s.io/kubernetes/cmd/ binaries that are missing
  need "$@" || return 0
  local dir=$SRC/kubernetes-$K8S_VERSION
  log "building $* $K8S_VERSION (first time: tens of minutes)"
  k8s_wrapper_module "$dir"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (
    cd "$dir"
    local cmds=("$@")
    local cmd targets=()
    for cmd in "${cmds[@]}"; do targets+=("k8s.io/kubernetes/cmd/$cmd@$K8S_VERSION"); done
    go get "${targets[@]}"
    for cmd in "${cmds[@]}"; do
      need "$cmd" || continue
      log "  go build $cmd"
      go build -p "$GO_PARALLEL" -trimpath -tags selinux,notest -ldflags "$ldflags" \
        -o "$BIN/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/.$cmd.tmp" "$BIN/$cmd"
    done
  )
}

# CoreDNS with only the plugins a local cluster's DNS needs (the full build pulls in every cloud
# provider's SDK): a main package of our own that sets the plugin order and calls coremain.Run, as
# CoreDNS documents for out-of-tree builds.
build_coredns() {
  local name; name=coredns-$COREDNS_VERSION-$(printf '%s' "$COREDNS_PLUGINS" | sha256sum | cut -c1-8)
  need "$name" || { ln -sfn "$name" "$BIN/coredns"; return 0; }
  log "building coredns $COREDNS_VERSION (plugins: $COREDNS_PLUGINS)"
  local dir=$SRC/$name
  mkdir -p "$dir"
  {
    echo "// Generated by devcluster/build.sh: CoreDNS $COREDNS_VERSION with a minimal plugin set."
    echo "package main"
    echo
    echo "import ("
    echo '	"github.com/coredns/coredns/core/dnsserver"'
    echo '	"github.com/coredns/coredns/coremain"'
    local plugin
    for plugin in $COREDNS_PLUGINS; do echo "	_ \"github.com/coredns/coredns/plugin/$plugin\""; done
    echo ")"
    echo
    printf 'func init() { dnsserver.Directives = []string{'
    for plugin in $COREDNS_PLUGINS; do printf '"%s", ' "$plugin"; done
    echo '} }'
    echo
    echo "func main() { coremain.Run() }"
  } >"$dir/main.go"
  (
    cd "$dir"
    [ -f go.mod ] || go mod init fabric.dev/devcluster/coredns >/dev/null 2>&1
    go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null
    go mod tidy >/dev/null
    go build -p "$GO_PARALLEL" -trimpath -ldflags "-s -w" -o "$BIN/.coredns.tmp" .
  )
  mv "$BIN/.coredns.tmp" "$BIN/$name"
  ln -sfn "$name" "$BIN/coredns"
}

real_node=false
for arg in "$@"; do
  case $arg in
    --real-node) real_node=true ;;
    *) log "unknown argument $arg"; exit 2 ;;
  esac
done

build_kwok
build_etcd
build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
if $real_node; then
  build_kubernetes kubelet kube-proxy
  build_coredns
fi
echo "$BIN"
