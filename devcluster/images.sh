#!/usr/bin/env bash
# The real node's container images, made without a Docker engine or a registry.
#
#   devcluster/images.sh build            build what is missing (cached); print the archive directory
#   devcluster/images.sh import SOCKET    build if needed, then import every image into the containerd
#                                         listening on SOCKET (namespace k8s.io, where the kubelet looks)
#   devcluster/images.sh list             print the images' names, one a line
#   devcluster/images.sh project-key      print the content key of the project image the work tree makes
#
# The images (names as the kubelet resolves them; pods and manifests use the short form):
#   fabric-base:dev    Debian bookworm (minbase) + python3 3.11 with venv, ca-certificates, tzdata: made
#                      by mmdebstrap from Debian's packages. The base of the project's image, and the
#                      image test Tasks run (sh, coreutils and python3 for logs of a given size, exit codes).
#   fabric-pause:dev   the pod sandbox ("pause") image: Debian's static catatonit in pause mode (-P).
#   fabric-tasks:dev   the project's own image, built by buildah from the repository's Dockerfile with
#                      BASE_IMAGE=fabric-base:dev (the Dockerfile's default base stays the public one).
#
# Each image is kept as a docker-archive under $CACHE/images/, named by a key of its inputs (the
# Debian package list; the catatonit binary; the Dockerfile and every file the project image copies),
# so a second run with the same inputs does nothing, and a changed source tree builds a new project
# image. Archives are written to a temporary name and renamed into place.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
CACHE=${FABRIC_DEVCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fabric-devcluster}
IMAGES=$CACHE/images
BUILDAH=(buildah --root "$CACHE/buildah/storage" --runroot "$CACHE/buildah/run" --storage-driver overlay)
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
BASE_PACKAGES="python3 python3-venv ca-certificates tzdata"
mkdir -p "$IMAGES"

log() { printf 'devcluster/images: %s\n' "$*" >&2; }

key_of() { sha256sum | cut -c1-16; }

need_tools() {
  local missing=() tool
  for tool in buildah mmdebstrap catatonit; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "missing ${missing[*]}: apt-get install buildah mmdebstrap catatonit (.ci/run installs them)"
    exit 1
  fi
}

# archive NAME KEY: the archive path for image NAME built from inputs with KEY
archive() { echo "$IMAGES/$1-$2.tar"; }

# save LOCALNAME NAME ARCHIVE: write buildah's image LOCALNAME as a docker-archive tagged
# docker.io/library/NAME (what the kubelet asks containerd for when a pod says NAME)
save() {
  local tmp=$3.tmp
  rm -f "$tmp"
  "${BUILDAH[@]}" push --quiet "$1" "docker-archive:$tmp:docker.io/library/$2" >/dev/null
  mv "$tmp" "$3"
  find "$IMAGES" -maxdepth 1 -name "${2%%:*}-*.tar" ! -path "$3" -delete   # older keys of this image
}

base_key() { printf '%s\n' "$DEBIAN_SUITE" "$BASE_PACKAGES" "minbase" | key_of; }

build_base() {
  local out; out=$(archive fabric-base "$(base_key)")
  if [ -s "$out" ]; then   # the project image builds FROM it: buildah's storage must have it too
    "${BUILDAH[@]}" inspect --type image localhost/fabric-base:dev >/dev/null 2>&1 ||
      "${BUILDAH[@]}" pull --quiet "docker-archive:$out" >/dev/null
    "${BUILDAH[@]}" tag docker.io/library/fabric-base:dev localhost/fabric-base:dev 2>/dev/null || true
    echo "$out"; return 0
  fi
  log "building fabric-base:dev: mmdebstrap $DEBIAN_SUITE minbase + $BASE_PACKAGES (first time: a few minutes)"
  local work; work=$(mktemp -d "$IMAGES/.base.XXXX")
  mmdebstrap --quiet --variant=minbase --include="${BASE_PACKAGES// /,}" \
    --aptopt='Acquire::Retries "3"' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' "$DEBIAN_SUITE" "$work/rootfs.tar" >&2
  local ctr; ctr=$("${BUILDAH[@]}" from --quiet scratch)
  "${BUILDAH[@]}" add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/sh "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" localhost/fabric-base:dev >/dev/null
  rm -rf "$work"
  save localhost/fabric-base:dev fabric-base:dev "$out"
  echo "$out"
}

build_pause() {
  local out; out=$(archive fabric-pause "$(key_of </usr/bin/catatonit)")
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building fabric-pause:dev (catatonit -P)"
  local ctr; ctr=$("${BUILDAH[@]}" from --quiet scratch)
  "${BUILDAH[@]}" copy --quiet "$ctr" "$(command -v catatonit)" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause", "-P"]' --user 65535:65535 "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" localhost/fabric-pause:dev >/dev/null
  save localhost/fabric-pause:dev fabric-pause:dev "$out"
  echo "$out"
}

# What the Dockerfile copies, as the work tree has it now (uncommitted changes included).
project_key() {
  (
    cd "$repo"
    { echo Dockerfile; echo .dockerignore
      git ls-files -co --exclude-standard -- pyproject.toml README.md requirements controller gateway taskctl invoke
    } | sort -u | while read -r f; do [ -f "$f" ] && { echo "$f"; cat "$f"; }; done
    base_key
  ) | key_of
}

build_project() {
  local base; base=$(build_base)
  local out; out=$(archive fabric-tasks "$(project_key)")
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building fabric-tasks:dev from the Dockerfile (buildah; pip installs from PyPI)"
  # The build's RUN steps trust what this machine trusts (a proxy's CA in its bundle, its pip
  # configuration); mounted for the build only, never part of the image.
  local trust=() file
  for file in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
    [ -f "$file" ] && trust+=(--volume "$file:$file:ro")
  done
  "${BUILDAH[@]}" bud --quiet --isolation chroot --network host --layers "${trust[@]}" \
    --build-arg BASE_IMAGE=localhost/fabric-base:dev -t localhost/fabric-tasks:dev -f "$repo/Dockerfile" "$repo" >&2
  save localhost/fabric-tasks:dev fabric-tasks:dev "$out"
  echo "$out"
}

build_all() {
  need_tools
  build_base >/dev/null
  build_pause >/dev/null
  build_project >/dev/null
  echo "$IMAGES"
}

import_all() {
  local socket=${1:?containerd socket}
  build_all >/dev/null
  local name tar
  for name in fabric-base fabric-pause fabric-tasks; do
    tar=$(ls -t "$IMAGES/$name"-*.tar | head -n 1)
    ctr --address "$socket" --namespace k8s.io images import "$tar" >/dev/null
  done
  log "imported $(list | tr '\n' ' ')into $socket"
}

list() { printf '%s\n' fabric-base:dev fabric-pause:dev fabric-tasks:dev; }

case ${1:-} in
  build) build_all ;;
  import) shift; import_all "$@" ;;
  list) list ;;
  project-key) project_key ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
