#!/usr/bin/env bash
# CI: the Debian package, installed for real on this machine (as root).
#
#   scripts/package-check.sh [--binary PATH]
#
# Builds the .deb around the debug binary scripts/test.sh built (default
# ${CARGO_TARGET_DIR:-target}/debug/pbxgate), installs it with dpkg -i, checks files, modes,
# owners and the system user, runs `pbxgate check-config` on the installed config (it must
# fail until filled in) and on a filled-in copy, starts the binary the way the unit's
# ExecStart does (its user, capability, limits, working directory and a clean environment)
# against an unreachable 3CX, checks /healthz and /readyz, stops it with SIGTERM, verifies the
# unit with systemd-analyze, then removes and purges the package and checks what is left.
# Safe to run again; the machine is left as it was (a pbxgate user it made is deleted).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

binary="${CARGO_TARGET_DIR:-target}/debug/pbxgate"
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    *) echo "package-check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || exec sudo -E bash "$0" --binary "$binary"
[ -x "$binary" ] || { echo "package-check.sh: no binary at $binary (run scripts/test.sh or cargo build first)" >&2; exit 1; }

apt_updated=
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need dpkg-deb dpkg
need adduser adduser
need setpriv util-linux
need prlimit util-linux
need curl curl
need openssl openssl
need objcopy binutils
need systemd-analyze systemd

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
not() { ! "$@"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
# stat_is PATH "MODE OWNER GROUP"
stat_is() {
  local got
  got=$(stat -c '%a %U %G' "$1" 2>/dev/null || echo missing)
  [ "$got" = "$2" ] || { echo "  $1: $got, expected $2"; return 1; }
}
installed() { dpkg-query -W -f='${Status}' pbxgate 2>/dev/null | grep -q 'ok installed'; }
known() { dpkg-query -W pbxgate >/dev/null 2>&1 && [ "$(dpkg-query -W -f='${Status}' pbxgate)" != "unknown ok not-installed" ]; }

# A pbxgate installed here before is a real one: only CI's machine may lose it.
if known || [ -e /etc/pbxgate ] || [ -e /var/lib/pbxgate ]; then
  if [ "${CI:-}" = true ]; then
    if known; then dpkg --purge pbxgate >/dev/null; fi
    rm -rf /etc/pbxgate /var/lib/pbxgate
  else
    echo "package-check.sh: pbxgate (or /etc/pbxgate, /var/lib/pbxgate) is on this machine; remove it first (or run with CI=true)" >&2
    exit 1
  fi
fi
user_existed=
getent passwd pbxgate >/dev/null && user_existed=1
group_existed=
getent group pbxgate >/dev/null && group_existed=1

work=$(mktemp -d /tmp/pbxgate-package-check.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  if known; then dpkg --purge pbxgate >/dev/null 2>&1 || true; fi
  rm -rf "$work" /var/lib/pbxgate /etc/pbxgate
  if [ -z "$user_existed" ] && getent passwd pbxgate >/dev/null; then deluser --quiet --system pbxgate >/dev/null 2>&1 || true; fi
  if [ -z "$group_existed" ] && getent group pbxgate >/dev/null; then delgroup --quiet --system pbxgate >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

echo "# building the package from $binary"
deb=$(packaging/deb/build.sh --binary "$binary" --out "$work/deb" --fast)
contents=$(dpkg-deb -c "$deb")
check "the config is in the archive with mode 0640" grep -q '^-rw-r----- root/root .* \./etc/pbxgate/pbxgate\.toml$' <<<"$contents"
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
check "the config is a conffile" test "$conffiles" = /etc/pbxgate/pbxgate.toml
check "the version is Cargo.toml's" test "$(dpkg-deb -f "$deb" Version)" = "$(awk -F'"' '/^\[/ { p = ($0 == "[package]") } p && /^version *=/ { print $2; exit }' Cargo.toml)"
check "the architecture is dpkg's" test "$(dpkg-deb -f "$deb" Architecture)" = "$(dpkg --print-architecture)"

echo "# dpkg -i"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
check "the package is installed" installed
check "the binary: /usr/bin/pbxgate 0755 root" stat_is /usr/bin/pbxgate "755 root root"
check "the unit: /lib/systemd/system/pbxgate.service 0644 root" stat_is /lib/systemd/system/pbxgate.service "644 root root"
check "the config: 0640 root:pbxgate" stat_is /etc/pbxgate/pbxgate.toml "640 root pbxgate"
check "/etc/pbxgate: 0750 root:pbxgate" stat_is /etc/pbxgate "750 root pbxgate"
check "the state directory: /var/lib/pbxgate 0750 pbxgate:pbxgate" stat_is /var/lib/pbxgate "750 pbxgate pbxgate"
check "the copyright file" test -s /usr/share/doc/pbxgate/copyright
check "the README" test -s /usr/share/doc/pbxgate/README.md.gz
if [ -f CHANGELOG.md ]; then check "the CHANGELOG" test -s /usr/share/doc/pbxgate/CHANGELOG.md.gz; fi
check "the full example config" test -s /usr/share/doc/pbxgate/examples/pbxgate.example.toml
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd pbxgate)
check "a system user pbxgate (uid $uid < 1000)" test "$uid" -lt 1000
check "its group pbxgate" test "$(getent group "$gid" | cut -d: -f1)" = pbxgate
check "its home is the state directory, its shell nologin" test "$home:$shell" = /var/lib/pbxgate:/usr/sbin/nologin
check "the installed binary runs" /usr/bin/pbxgate --version

echo "# dpkg -i again (the upgrade path of the maintainer scripts)"
chmod 0644 /etc/pbxgate/pbxgate.toml
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i again"; }
check "the config is 0640 root:pbxgate again" stat_is /etc/pbxgate/pbxgate.toml "640 root pbxgate"

# Runs as the unit's user, with a clean environment, like systemd.
unit=/lib/systemd/system/pbxgate.service
setting() { sed -n "s/^$1=//p" "$unit" | tail -n1; }
user=$(setting User)
as_service() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/var/lib/pbxgate USER="$user" LOGNAME="$user" \
    setpriv --reuid="$user" --regid="$(setting Group)" --init-groups --no-new-privs -- "$@"
}

echo "# check-config on the installed config"
if as_service /usr/bin/pbxgate check-config --config /etc/pbxgate/pbxgate.toml >"$work/out" 2>&1; then
  fail "the unfilled config must fail check-config"
else
  cat "$work/out"
  # shellcheck disable=SC2016 # backquotes in the message, not a command
  check "check-config names the missing key and the file" \
    grep -Eq '^pbxgate: /etc/pbxgate/pbxgate\.toml: key `(server|entra|pbx)\.[a-z_]+`' "$work/out"
fi

# The copy: the group-readable place and modes of /etc/pbxgate, test values, a throw-away
# certificate, a privileged port (the unit's capability is needed to bind it) and a 3CX
# that refuses connections.
free_port() {
  local p
  for p in "$@"; do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}
port=$(free_port 443 444 853 992 993 995) || { echo "no free port below 1024" >&2; exit 1; }
conf="$work/etc/pbxgate.toml"
install -d -m 0750 -g pbxgate "$work/etc"
chmod 0755 "$work" # mktemp's 0700 would hide the copy from the service user
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$work/etc/tls.key" -out "$work/etc/tls.pem" 2>/dev/null
chown pbxgate:pbxgate "$work/etc/tls.key" && chmod 0600 "$work/etc/tls.key"
chmod 0644 "$work/etc/tls.pem"
# fill SECTION.KEY=VALUE…: sets each key in its section; a key not in the file is an error.
fill() {
  awk -v sets="$(printf '%s\n' "$@")" '
    BEGIN { n = split(sets, l, "\n"); for (i = 1; i <= n; i++) if (l[i] != "") {
      eq = index(l[i], "="); want[substr(l[i], 1, eq - 1)] = substr(l[i], eq + 1) } }
    /^\[/ { section = substr($0, 2, index($0, "]") - 2) }
    match($0, /^[a-z_]+ *=/) {
      k = section "." substr($0, 1, index($0, " ") - 1)
      if (k in want) { print substr(k, length(section) + 2) " = \"" want[k] "\""; done[k] = 1; next }
    }
    { print }
    END { for (k in want) if (!(k in done)) { print "fill: no key " k > "/dev/stderr"; exit 1 } }'
}
fill server.listen="127.0.0.1:$port" server.public_url=https://pbx.example.com \
  server.tls_cert="$work/etc/tls.pem" server.tls_key="$work/etc/tls.key" \
  entra.tenant_id=11111111-2222-3333-4444-555555555555 entra.client_id=test-app \
  entra.client_secret=test-entra-secret pbx.url=https://127.0.0.1:1 pbx.client_id=pbxgate \
  pbx.client_secret=test-xapi-secret pbx.service_extension=999 pbx.service_password=test-service-password \
  <"/etc/pbxgate/pbxgate.toml" >"$conf"
chown root:pbxgate "$conf" && chmod 0640 "$conf"
if as_service /usr/bin/pbxgate check-config --config "$conf" >"$work/out" 2>&1; then
  ok "check-config passes on the filled copy, as the service user"
else
  cat "$work/out"; fail "check-config passes on the filled copy, as the service user"
fi
check "check-config masks the secrets" not grep -Eq 'test-.*-secret|test-service-password' "$work/out"

echo "# serve, the way the unit's ExecStart does"
execstart=$(setting ExecStart)
check "ExecStart is the documented command" \
  test "$execstart" = "/usr/bin/pbxgate serve --config /etc/pbxgate/pbxgate.toml"
read -ra cmd <<<"${execstart//\/etc\/pbxgate\/pbxgate.toml/$conf}"
caps=$(setting AmbientCapabilities | tr '[:upper:]' '[:lower:]' | sed 's/cap_/+/g; s/ /,/g')
nofile=$(setting LimitNOFILE)
# systemd (PID 1) may raise the hard limit; a container's root may lack CAP_SYS_RESOURCE.
if ! prlimit --nofile="$nofile:$nofile" true 2>/dev/null; then
  echo "  LimitNOFILE=$nofile is above this machine's hard limit $(ulimit -Hn), which root cannot raise here: using that"
  nofile=$(ulimit -Hn)
fi
url="https://localhost:$port"
# start: serve in the background as the unit would; sets pid, and up=1 once /healthz answers.
start() {
  (
    cd "$(setting WorkingDirectory)"
    umask "$(setting UMask)"
    exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/var/lib/pbxgate USER="$user" LOGNAME="$user" \
      prlimit --nofile="$nofile:$nofile" -- \
      setpriv --reuid="$user" --regid="$(setting Group)" --init-groups \
      --inh-caps="$caps" --ambient-caps="$caps" --bounding-set="-all,$caps" --no-new-privs -- \
      "${cmd[@]}"
  ) >>"$work/serve.log" 2>&1 &
  pid=$!
  up=
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    if curl -fsS --cacert "$work/etc/tls.pem" -o /dev/null "$url/healthz" 2>/dev/null; then up=1; break; fi
    sleep 0.2
  done
  if [ -z "$up" ]; then cat "$work/serve.log"; fi
}
start
check "serve listens on privileged port $port as $user (the ambient capability)" test -n "$up"
check "it runs as $user" test "$(stat -c %U "/proc/$pid")" = "$user"
check "its open-file limit is the unit's" grep -Eq "^Max open files +$nofile +$nofile" "/proc/$pid/limits"
code=$(curl -sS --cacert "$work/etc/tls.pem" -o "$work/healthz" -w '%{http_code}' "$url/healthz" || true)
check "/healthz answers 200" test "$code" = 200
code=$(curl -sS --cacert "$work/etc/tls.pem" -o "$work/readyz" -w '%{http_code}' "$url/readyz" || true)
echo "  /readyz: $code $(cat "$work/readyz")"
check "/readyz answers 503 with an unreachable 3CX" test "$code" = 503
check "/readyz names pbx as the failed dependency" grep -Eq '"pbx":\{[^}]*"ok":false' "$work/readyz"
check "/readyz finds the store ready" grep -Eq '"store":\{[^}]*"ok":true' "$work/readyz"
check "the SQLite store: /var/lib/pbxgate/pbxgate.db 0600 $user" \
  stat_is /var/lib/pbxgate/pbxgate.db "600 $user $user"
# `systemctl reload` (ExecReload) must not end the service: pbxgate reloads its certificate.
read -ra reload <<<"$(setting ExecReload | sed "s/\\\$MAINPID/$pid/")"
"${reload[@]}"
sleep 1
code=$(curl -sS --cacert "$work/etc/tls.pem" -o /dev/null -w '%{http_code}' "$url/healthz" 2>/dev/null || true)
check "ExecReload ($(setting ExecReload)) keeps it serving" test "$code" = 200
if [ "$code" != 200 ]; then
  wait "$pid" || echo "  it ended with status $?"
  start
fi
kill -TERM "$pid" 2>/dev/null || true
rc=timeout
for _ in $(seq 1 "$(setting TimeoutStopSec)0"); do
  if ! kill -0 "$pid" 2>/dev/null; then rc=0; wait "$pid" || rc=$?; break; fi
  sleep 0.1
done
pid_was=$pid
[ "$rc" = timeout ] || pid=
check "SIGTERM stops it with exit status 0 within TimeoutStopSec (got $rc)" test "$rc" = 0
check "it logged its stop" grep -q 'stopped' "$work/serve.log"
[ "$rc" = 0 ] || { cat "$work/serve.log"; kill -KILL "$pid_was" 2>/dev/null || true; }

echo "# systemd-analyze"
if systemd-analyze verify "$unit" >"$work/verify" 2>&1 && ! [ -s "$work/verify" ]; then
  ok "systemd-analyze verify $unit: no complaint"
else
  cat "$work/verify"; fail "systemd-analyze verify $unit"
fi
# The exposure score (0 = locked down, 10 = none); a higher one means hardening was lost.
if systemd-analyze security --offline=true --threshold=20 "$unit" >"$work/security" 2>&1; then
  score=$(grep -o 'exposure level for pbxgate.service: [0-9.]*' "$work/security" | grep -o '[0-9.]*$')
  echo "  $(grep 'Overall exposure' "$work/security")"
  check "systemd-analyze security: exposure $score at most 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }'
else
  cat "$work/security"; fail "systemd-analyze security"
fi

echo "# dpkg -r, then dpkg --purge"
dpkg -r pbxgate >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -r"; }
check "remove: the binary is gone" test ! -e /usr/bin/pbxgate
check "remove: the config is kept" test -f /etc/pbxgate/pbxgate.toml
check "remove: the store is kept" test -f /var/lib/pbxgate/pbxgate.db
dpkg --purge pbxgate >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --purge"; }
check "purge: the package is gone" not known
check "purge: /etc/pbxgate is gone" test ! -e /etc/pbxgate
check "purge: /var/lib/pbxgate is gone" test ! -e /var/lib/pbxgate
check "purge: the unit is gone" test ! -e "$unit"
leftovers() { compgen -G '/var/lib/systemd/deb-systemd-helper-*/pbxgate.service*' || [ -L /etc/systemd/system/pbxgate.service ]; }
check "purge: no systemd mask or state left" not leftovers
check "purge: the system user stays (Debian practice)" bash -c 'getent passwd pbxgate >/dev/null'

echo "package-check: $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
