#!/usr/bin/env bash
# make deploy-check (part of `make test`; seconds): the Kubernetes manifests
# as `kubectl apply -k` would send them, validated strictly (unknown fields
# are errors) against the oldest and the newest Kubernetes versions we mean
# to support, plus secrets.example.yaml, plus check_settings.py: every
# setting in the manifests and the compose file where it belongs.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/smoke/tools.sh

KUBE_VERSIONS=${KUBE_VERSIONS:-"1.28.0 1.37.0"}

tool_install kubernetes-validate==1.37.0
kubectl=$(kubectl_cmd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$kubectl" kustomize deploy/k8s >"$out/k8s.yaml"
for v in $KUBE_VERSIONS; do
  "$SMOKE_VENV/bin/kubernetes-validate" --strict --quiet -k "$v" \
    "$out/k8s.yaml" deploy/k8s/secrets.example.yaml
  echo "deploy-check: deploy/k8s and secrets.example.yaml valid for Kubernetes $v (strict)"
done
"$SMOKE_VENV/bin/python" deploy/smoke/check_settings.py static \
  deploy/docker-compose.yml "$out/k8s.yaml"
