#!/usr/bin/env bash
# Validates deploy/k8s against the Kubernetes API schemas, offline: every resource that
# kustomization.yaml lists, and the Secret scripts/k8s-secret.sh prints. Strict mode: a field
# the schema does not know (a typo, a field of another API version) is an error, not ignored.
#
# The validator is kubernetes-validate (PyPI), which bundles the schemas of each Kubernetes
# release; it lives in a virtualenv under target/, made and filled on the first run (the only
# step that needs the network). What schemas cannot see (selectors that match their pods,
# probe paths the node serves, the grace period against the drain, the Secret's keys, image
# tags) is checked by crates/clusterctl/tests/k8s_manifests.rs.
#
# Settings (environment): K8S_VERSION (the newest the pinned validator bundles).
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATOR_VERSION=1.37.0
K8S_VERSION=${K8S_VERSION:-1.37.0}
venv=target/k8s-validate/venv-$VALIDATOR_VERSION
manifests=deploy/k8s

say() { echo "k8s-validate: $*"; }

if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  say "installing kubernetes-validate $VALIDATOR_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATOR_VERSION"
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

# The resources kustomize would apply, in its order; then the generated Secret.
mapfile -t files < <(awk '
  /^[a-zA-Z]/ { in_resources = ($1 == "resources:") ; next }
  in_resources && $1 == "-" { print $2 }
' "$manifests/kustomization.yaml" | sed "s#^#$manifests/#")
[ ${#files[@]} -gt 0 ] || { say "no resources listed in $manifests/kustomization.yaml"; exit 1; }
scripts/k8s-secret.sh >"$workdir/secret.yaml"
files+=("$workdir/secret.yaml")

if "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${files[@]}"; then
  say "${#files[@]} manifests valid against Kubernetes $K8S_VERSION (strict)"
else
  say "FAIL: invalid manifests (above) against Kubernetes $K8S_VERSION"
  exit 1
fi
