#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from this module's pinned Go modules, once per
# machine, into a cache keyed by the pinned versions.
#
#   e2e/control-plane/build.sh            build what is missing, print the bin dir last
#   e2e/control-plane/build.sh --check    exit 0 when Go is usable (prints why not otherwise)
#
# The cache lives in $EDGEMESH_CONTROL_PLANE_CACHE (default ~/.cache/edgemesh/control-plane),
# never in the repository. Go's own module and build caches are used as usual, so a
# second key (a new pin) reuses most of the work. Progress goes to stderr; the last
# line on stdout is the directory that holds the binaries.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${EDGEMESH_CONTROL_PLANE_CACHE:-$HOME/.cache/edgemesh/control-plane}"

if ! command -v go >/dev/null 2>&1; then
  echo "control plane: no 'go' on PATH, so it cannot be built" >&2
  exit 3
fi

version_of() { # module path -> version pinned in go.mod (after replaces)
  (cd "$here" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$1")
}

if [[ "${1:-}" == "--check" ]]; then
  # Go must be present and the module graph resolvable (the proxy reachable or the cache warm).
  if ! out="$(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" go list -m k8s.io/kubernetes 2>&1)"; then
    echo "control plane: Go cannot resolve the pinned modules: ${out##*$'\n'}" >&2
    exit 3
  fi
  exit 0
fi

k8s="$(version_of k8s.io/kubernetes)"
etcd="$(version_of go.etcd.io/etcd/server/v3)"
kwok="$(version_of sigs.k8s.io/kwok)"
goversion="$(go env GOVERSION)"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" "$here"/cmd/etcd/*.go | sha256sum | cut -c1-12)"
out="$cache_root/k8s-$k8s-etcd-$etcd-kwok-$kwok-$goversion-$key"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

if [[ -f "$out/.complete" ]]; then
  echo "control plane: reusing $out" >&2
  echo "$out"
  exit 0
fi

mkdir -p "$out"
# One build at a time per machine: test files run in parallel, and each may ask for the binaries.
exec 9>"$cache_root/.lock"
flock 9
if [[ -f "$out/.complete" ]]; then
  echo "control plane: reusing $out (built meanwhile)" >&2
  echo "$out"
  exit 0
fi
# Version stamps as Kubernetes' own release build sets them, so `kubectl version`,
# the API server's /version and helm's kubeVersion checks see the real release.
major="${k8s#v}"; minor="${major#*.}"; major="${major%%.*}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

declare -A pkgs=(
  [etcd]=./cmd/etcd
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [kwok]=sigs.k8s.io/kwok/cmd/kwok
)

echo "control plane: building Kubernetes $k8s, etcd $etcd, kwok $kwok with $goversion into $out" >&2
echo "control plane: the first build on a machine takes about 5 minutes on 2 cores (after the module downloads)" >&2
i=0
for bin in "${bins[@]}"; do
  i=$((i + 1))
  if [[ -x "$out/$bin" ]]; then
    echo "control plane: [$i/${#bins[@]}] $bin already built" >&2
    continue
  fi
  start=$SECONDS
  echo "control plane: [$i/${#bins[@]}] $bin ..." >&2
  (cd "$here" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "$ldflags" -o "$out/$bin.tmp" "${pkgs[$bin]}")
  mv "$out/$bin.tmp" "$out/$bin"
  echo "control plane: [$i/${#bins[@]}] $bin built in $((SECONDS - start)) s" >&2
done
# kwok simulates nodes and pods through Stages; take the release's own (node-fast,
# heartbeat with leases, pod-fast) from the module cache, as kwokctl does.
kwok_dir="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
  pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  echo "---"
  cat "$kwok_dir/kustomize/stage/$stage.yaml"
done > "$out/kwok-stages.yaml"
printf 'kubernetes=%s\netcd=%s\nkwok=%s\ngo=%s\n' "$k8s" "$etcd" "$kwok" "$goversion" > "$out/.complete"
# Older builds (other pins or recipes) are 400 MB each: keep only this one.
for old in "$cache_root"/k8s-*; do
  if [[ "$old" != "$out" && -d "$old" ]]; then rm -rf "$old"; fi
done
echo "$out"
