#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
#
# 1. Makes sure a PostgreSQL is reachable for the store and fleet tests
#    (AUTHZD_TEST_PG_URL, default postgres://postgres@127.0.0.1:5432/test):
#    if none answers, it tries to start the machine's local cluster and says so;
#    if that fails too, it stops with instructions instead of skipping tests.
# 2. Runs every test target (unit, scenario, differential, store, end-to-end).
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

cargo test --locked --lib --bins --tests "$@"

# The TypeScript client against a real server, in Node.js and in Chromium (last: its summary closes the output).
scripts/test-clients.sh
