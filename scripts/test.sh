#!/usr/bin/env bash
# Runs the whole test suite, installing and starting what it needs first:
# PostgreSQL (store tests), Node.js packages (oidc-provider, playwright-core) and Debian's
# Chromium (browser test). Safe to run again: every step checks before it acts.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL on 127.0.0.1:5432: the store tests run against it for real (never skipped).
if [ -z "${PBXGATE_TEST_POSTGRES_URL:-}" ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    for v in /etc/postgresql/*; do
      as_root pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
fi

# Node.js for the third-party OpenID provider and the browser driver; Chromium to drive.
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
[ -x /usr/bin/chromium ] || apt_install chromium
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)

# The browser test drives the real binary through `pbxgate demo`.
cargo build --locked --bin pbxgate
(cd tests/e2e && node --test browser.test.mjs)
# The admin console: screenshots of each page go to tests/e2e/artifacts/.
(cd tests/e2e && node --test admin.test.mjs)
# Again with the unverified API-client impersonation variant, which the demo then allows.
(cd tests/e2e && PBXGATE__PBX__IMPERSONATION_CREDENTIAL=api-client node --test browser.test.mjs)

cargo test --locked --workspace --lib --bins --tests "$@"
