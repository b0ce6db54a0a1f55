#!/usr/bin/env bash
# A page load over HTTP/2 against HTTP/1.1: the 3CX webclient loads a page with some 60
# small parallel requests, all session-checked. h2load (nghttp2-client) drives pbxgate's TLS
# listener (ALPN) in front of the nginx stand-in for 3CX (bench/lib.sh); pbxgate reaches it
# over HTTP/1.1 either way.
#
#   bench/h2.sh [PAGES] [ROUNDS]      (defaults: 1000 page loads of 60 requests, 3 rounds)
#
# Targets, each measured once per round, in turn:
#   h2         one connection, 60 requests in flight (what a browser does over HTTP/2)
#   h1x6       six connections, one request in flight each (a browser over HTTP/1.1)
#   h1x1       one connection, one request at a time
# Prints per target the median requests/s and time per 60-request page, and h2's ratio to
# each HTTP/1.1 target. PROFILE=dev uses the debug build (much slower; only for a quick
# look). Loopback ports 18100-18101; results also go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
PAGES=${1:-1000}
ROUNDS=${2:-3}
PAGE=60
PROFILE=${PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-target}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin pbxgate --example mint_session
  bin="$TARGET/release"
else
  cargo build --quiet --bin pbxgate --example mint_session
  bin="$TARGET/debug"
fi
source bench/lib.sh
start_upstream 1 18100

# A throw-away self-signed certificate (h2load does not verify it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
write_pbxgate_config 18101 18100
sed -i -e "s|^public_url = .*|public_url = \"https://localhost:18101\"|" \
  -e "/^public_url/a tls_cert = \"$work/cert.pem\"\ntls_key = \"$work/key.pem\"" "$work/pbxgate.toml"
"$bin/pbxgate" serve --config "$work/pbxgate.toml" 2>"$work/pbxgate.log" &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsk https://127.0.0.1:18101/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
COOKIE=$("$bin/examples/mint_session" "$work/pbxgate.toml")
URL=https://127.0.0.1:18101/webclient/api/x
curl -fsk -H "Cookie: $COOKIE" "$URL" >/dev/null || { echo "session route failed" >&2; exit 1; }
curl -sk --http2 -o /dev/null -w '%{http_version}' "$URL" -H "Cookie: $COOKIE" | grep -qx 2 ||
  { echo "pbxgate does not answer over HTTP/2" >&2; exit 1; }

N=$((PAGES * PAGE))
# run NAME H2LOAD_ARGS... -> "NAME req/s"
run() {
  local name=$1; shift
  h2load -n "$PAGE" "$@" -H "Cookie: $COOKIE" "$URL" >/dev/null # warm-up
  h2load -n "$N" "$@" -H "Cookie: $COOKIE" "$URL" > "$work/$name.txt"
  awk -v name="$name" -v n="$N" '
    /^status codes:/ { ok = $3 }
    /^finished in/ { rps = $4 }
    END { if (ok != n) { print name ": " ok " of " n " requests answered 2xx" > "/dev/stderr"; exit 1 }; printf "%s %.0f\n", name, rps }
  ' "$work/$name.txt"
}

results=$(
  for _ in $(seq 1 "$ROUNDS"); do
    run h2 -c1 -m"$PAGE"
    run h1x6 --h1 -c6 -m1
    run h1x1 --h1 -c1 -m1
  done
)
mkdir -p bench/results
out="bench/results/h2-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "h2load, $PAGES pages x $PAGE requests x $ROUNDS rounds, session route over TLS, $PROFILE build, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-6s %10s %12s %10s\n' target req/s ms_per_page h2_ratio
  echo "$results" | awk -v page="$PAGE" '
    { v[$1] = v[$1] " " $2; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
    function median(s,   a, n, i, j, t) {
      n = split(s, a, " ")
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
      h2 = median(v["h2"])
      for (i = 1; i <= k; i++) {
        m = median(v[order[i]])
        printf "%-6s %10.0f %12.2f %9.2fx\n", order[i], m, page / m * 1000, h2 / m
      }
    }'
} | tee "$out"
