#!/usr/bin/env bash
# Tests of the TypeScript client (clients/typescript) against a real authzd;
# scripts/test.sh calls it last. It never skips: whatever it cannot find or
# install stops it with instructions and a non-zero exit code.
#
# 1. node (>= 20) and npm must be there (else: instructions, exit 2).
# 2. npm ci in clients/typescript (package-lock.json pins every package).
# 3. Regenerates the code from proto/ (buf from npm) and fails if the
#    committed src/gen differs; type-checks and builds the package; bundles
#    the demo page (esbuild); bundles the access explorer into src/http/explorer
#    (compiled into authzd) and fails if the committed bundle differs.
# 4. Chromium for the browser test: /usr/bin/chromium (or CHROMIUM_BIN); when
#    missing it is installed with apt-get, saying so; without apt or root it
#    stops with instructions.
# 5. Builds the server (cargo build --bin authzd) unless AUTHZD_BIN names one.
# 6. Runs the node tests and the browser test with node's test runner; its
#    TAP summary (`# pass N`, `# fail 0`) is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
say() { echo "test-clients.sh: $*" >&2; }

# 1. node and npm
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  cat >&2 <<'MSG'
test-clients.sh: node and npm are needed for the TypeScript client's tests (Node.js 20 or newer).
  Debian/Ubuntu:  apt-get install -y nodejs npm
  or any Node.js 20+ distribution with npm on PATH; then run scripts/test-clients.sh again.
MSG
  exit 2
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  say "Node.js $(node --version) is too old: 20 or newer is needed (apt-get install -y nodejs, or a newer Node.js on PATH)"
  exit 2
fi
say "node $(node --version), npm $(npm --version)"

cd "$root/clients/typescript"

# 2. packages, exactly as locked
say "npm ci (clients/typescript)"
npm ci --no-audit --no-fund --loglevel=error >&2

# 3. generated code, types, package, demo bundle
say "npm run generate (buf generate from proto/)"
npm run --silent generate >&2
if command -v git >/dev/null 2>&1 && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  if ! git -C "$root" diff --quiet -- clients/typescript/src/gen ||
     [ -n "$(git -C "$root" ls-files --others --exclude-standard -- clients/typescript/src/gen)" ]; then
    git -C "$root" status --short -- clients/typescript/src/gen >&2
    say "the committed generated code (clients/typescript/src/gen) differs from what proto/ generates:"
    say "run 'npm run generate' in clients/typescript and commit src/gen"
    exit 1
  fi
  say "src/gen is up to date with proto/"
fi
say "build (dist/) and type-check (the tests import the built package too)"
npm run --silent build >&2
npm run --silent typecheck >&2
npm run --silent bundle:demo >&2
say "npm run bundle:explorer (the access explorer, compiled into authzd from src/http/explorer)"
npm run --silent bundle:explorer >&2
if command -v git >/dev/null 2>&1 && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  if ! git -C "$root" diff --quiet -- src/http/explorer ||
     [ -n "$(git -C "$root" ls-files --others --exclude-standard -- src/http/explorer)" ]; then
    git -C "$root" status --short -- src/http/explorer >&2
    say "the committed explorer bundle (src/http/explorer) differs from what clients/typescript/explorer gives:"
    say "run 'npm run bundle:explorer' in clients/typescript and commit src/http/explorer (then rebuild authzd)"
    exit 1
  fi
  say "src/http/explorer is up to date with clients/typescript/explorer"
fi

# 4. Chromium for the browser test
chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ -n "${CHROMIUM_BIN:-}" ]; then
    say "CHROMIUM_BIN=$CHROMIUM_BIN is not an executable"
    exit 2
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "no Chromium at /usr/bin/chromium: installing Debian's chromium with apt-get (for the browser test)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
    say "installed $(/usr/bin/chromium --version 2>/dev/null | head -1)"
  else
    cat >&2 <<'MSG'
test-clients.sh: the browser test needs Chromium at /usr/bin/chromium and it is missing.
  Debian/Ubuntu (as root):  apt-get update && apt-get install -y chromium
  or point CHROMIUM_BIN at a Chromium or Chrome binary; then run scripts/test-clients.sh again.
MSG
    exit 2
  fi
fi
export CHROMIUM_BIN="$chromium"

# 5. the server binary
if [ -z "${AUTHZD_BIN:-}" ]; then
  say "cargo build --bin authzd (debug)"
  (cd "$root" && cargo build --locked --bin authzd >&2)
  target="${CARGO_TARGET_DIR:-target}"
  case "$target" in /*) ;; *) target="$root/$target" ;; esac
  export AUTHZD_BIN="$target/debug/authzd"
fi
if [ ! -x "$AUTHZD_BIN" ]; then
  say "AUTHZD_BIN=$AUTHZD_BIN is not an executable"
  exit 2
fi
say "server: $AUTHZD_BIN"

# 6. the tests (one run, so one summary closes the output)
say "node --test: follower logic, node tests against a real authzd, browser test"
exec node --import tsx --test --test-reporter=tap --test-concurrency=1 test/*.test.ts
