"""Which settings each deployed role carries: the one home of that rule.

The Kubernetes manifests, the compose file and the containers the compose
smoke test starts must all give the receiver and the workers the settings
below (contract section 8.1 and the hardening settings before it), keep the
optional secrets optional, never pin STRIPE_API_VERSION, probe on the
metrics listener, and give the receiver a memory limit that fits its body
budget.

  check_settings.py static COMPOSE_FILE KUSTOMIZE_OUTPUT
  check_settings.py runtime DOCKER_INSPECT_JSON ENV_DIR   (the smoke test)

ENV_DIR holds SERVICE.env: the NUL-separated /proc/1/environ of each
service's process, what the binary really sees (`docker inspect` also lists
pass-through variables that were not set, as bare names).

Exit 0 when every check holds; otherwise one line per failure and exit 1.
"""

import json
import re
import sys

import yaml

# Set to a value, in every deploy file, for the role.
SET = {
    "receiver": {
        "STRIPE_WEBHOOK_SECRET",
        "HTTP_ADDR",
        "METRICS_ADDR",
        "SHUTDOWN_DRAIN_SECS",
        "SHUTDOWN_GRACE_SECS",
        "MAX_INFLIGHT_BODY_BYTES",
    },
    "worker": {
        "DATABASE_URL",
        "METRICS_ADDR",
        "SHUTDOWN_DRAIN_SECS",
        "SHUTDOWN_GRACE_SECS",
        "STRIPE_API_BASE",
        "STRIPE_API_RATE",
        "RECONCILE_INTERVAL",
        "RECONCILE_LOOKBACK",
        "RETENTION_DAYS",
        "OUTBOX_RETENTION_DAYS",
        "PARKED_TTL",
    },
}
# Secrets the stack must start without: an optional secret reference in
# Kubernetes, a pass-through (key without value) in compose, so they are
# unset unless someone provides them.
OPTIONAL_SECRET = {
    "receiver": {"CUSTOM_PAYMENT_SECRET"},
    "worker": {"STRIPE_API_KEY"},
}
# Left to the binary: it sends the Stripe-Version its code was written for.
NEVER_PINNED = {"STRIPE_API_VERSION"}

BUDGET = "MAX_INFLIGHT_BODY_BYTES"
# What the receiver uses besides the budget: ~32 MiB baseline and ~12 MiB
# measured above the budget at the peak (deploy/k8s/receiver-deployment.yaml).
OVERHEAD_BYTES = 44 * 2**20

PROBES = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}


class Report:
    def __init__(self):
        self.failures = []

    def check(self, ok, where, what):
        if not ok:
            self.failures.append(f"{where}: {what}")

    def finish(self, subject):
        for failure in self.failures:
            print(f"check_settings: {failure}", file=sys.stderr)
        if self.failures:
            return 1
        print(f"check_settings: {subject}: every setting where it belongs")
        return 0


def k8s_bytes(quantity):
    """A Kubernetes quantity: "256Mi" (binary) or "256M" (decimal)."""
    m = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity))
    if not m:
        raise ValueError(f"unreadable memory quantity {quantity!r}")
    unit = m.group(2) or ""
    base = 1024 if unit.endswith("i") else 1000
    return int(m.group(1)) * base ** (" KMG".index(unit[0]) if unit else 0)


def compose_bytes(size):
    """A compose size: "256M", "256m", "1g" (always binary, as Docker's)."""
    m = re.fullmatch(r"(\d+)([kmgKMG])?[bB]?", str(size))
    if not m:
        raise ValueError(f"unreadable memory size {size!r}")
    unit = (m.group(2) or " ").upper()
    return int(m.group(1)) * 1024 ** " KMG".index(unit)


def role_of(command):
    return command[0] if command and command[0] in SET else None


def check_env(report, where, role, env):
    """env: name -> value, None meaning present without a value."""
    for name in sorted(SET[role]):
        report.check(env.get(name) not in (None, ""), where, f"{name} is not set")
    for name in sorted(OPTIONAL_SECRET[role]):
        report.check(name in env, where, f"{name} is missing (optional secret)")
    for name in sorted(NEVER_PINNED):
        report.check(env.get(name) is None, where, f"{name} is pinned")


def check_budget(report, where, env, limit_bytes, label="memory limit"):
    budget = int(env[BUDGET])
    need = budget + OVERHEAD_BYTES
    report.check(
        limit_bytes is not None and limit_bytes >= need,
        where,
        f"{label} {limit_bytes} does not fit {BUDGET}={budget} + {OVERHEAD_BYTES} overhead",
    )


def static_compose(report, path):
    services = yaml.safe_load(open(path))["services"]
    roles = {}
    for name, svc in services.items():
        role = role_of(svc.get("command"))
        if not role:
            continue
        roles.setdefault(role, []).append(name)
        where = f"{path} {name}"
        env = dict(svc.get("environment") or {})
        check_env(report, where, role, env)
        for secret in OPTIONAL_SECRET[role]:
            report.check(env.get(secret) is None, where, f"{secret} has a value in the file")
        limit = svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
        report.check(limit is not None, where, "no memory limit")
        if role == "receiver" and limit is not None:
            check_budget(report, where, env, compose_bytes(limit))
    report.check(set(roles) == set(SET), path, f"roles found {sorted(roles)}")


def static_k8s(report, path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    roles = set()
    for dep in deployments:
        for c in dep["spec"]["template"]["spec"]["containers"]:
            role = role_of(c.get("args"))
            if not role:
                continue
            roles.add(role)
            where = f"{path} {dep['metadata']['name']}/{c['name']}"
            env = {}
            for e in c.get("env", []):
                env[e["name"]] = e.get("value")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    env[e["name"]] = f"secret {ref['name']}/{ref['key']}"
                    optional = e["name"] in OPTIONAL_SECRET[role]
                    report.check(
                        bool(ref.get("optional")) == optional,
                        where,
                        f"{e['name']}: optional should be {optional}",
                    )
            check_env(report, where, role, env)
            metrics_port = int(env["METRICS_ADDR"].rsplit(":", 1)[1])
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe, path_ in PROBES.items():
                get = c.get(probe, {}).get("httpGet", {})
                port = ports.get(get.get("port"), get.get("port"))
                report.check(
                    get.get("path") == path_ and port == metrics_port,
                    where,
                    f"{probe} is not GET {path_} on the metrics port {metrics_port}",
                )
            resources = c.get("resources", {})
            limit = resources.get("limits", {}).get("memory")
            report.check(limit is not None, where, "no memory limit")
            if role == "receiver":
                check_budget(report, where, env, k8s_bytes(limit))
                request = resources.get("requests", {}).get("memory")
                check_budget(report, where, env, k8s_bytes(request), "memory request")
    report.check(roles == set(SET), path, f"roles found {sorted(roles)}")


def runtime(report, path, env_dir):
    """The running stack's containers."""
    roles = set()
    for c in json.load(open(path)):
        role = role_of(c["Config"].get("Cmd"))
        if not role:
            continue
        roles.add(role)
        where = c["Name"].lstrip("/")
        service = c["Config"]["Labels"]["com.docker.compose.service"]
        environ = open(f"{env_dir}/{service}.env", "rb").read().decode()
        env = dict(kv.split("=", 1) for kv in environ.split("\0") if "=" in kv)
        for name in sorted(SET[role]):
            report.check(name in env, where, f"{name} is not in the environment")
        # The smoke test provides none of the optional secrets: the stack
        # must have started without them.
        for name in sorted(OPTIONAL_SECRET[role] | NEVER_PINNED):
            report.check(name not in env, where, f"{name} is set ({name}= in the environment)")
        if role == "receiver":
            check_budget(report, where, env, c["HostConfig"].get("Memory") or None)
    report.check(roles == set(SET), path, f"roles found {sorted(roles)}")


def main(argv):
    report = Report()
    if argv[1:2] == ["static"] and len(argv) == 4:
        static_compose(report, argv[2])
        static_k8s(report, argv[3])
        return report.finish(f"{argv[2]} and {argv[3]}")
    if argv[1:2] == ["runtime"] and len(argv) == 4:
        runtime(report, argv[2], argv[3])
        return report.finish("the running containers")
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
