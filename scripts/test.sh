#!/usr/bin/env bash
# Install everything the tests need and run them all: lint, then the whole pytest suite against
# real PostgreSQL, real Redis, the fake upstream on loopback and Debian's Chromium.
# Extra arguments go to pytest (e.g. scripts/test.sh -k consumer).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

if [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the browser tests …"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.installed-test-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
  rm -f .venv/.installed-test-* && touch "$stamp"
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .

export DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
export TEST_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
# Test databases are created and dropped per run; a pool would hold connections to them open.
export DATABASE_POOL=0
export VAR_DIR=${VAR_DIR:-$(mktemp -d)}
# Pages are tested as production serves them: through the hashed static manifest.
.venv/bin/python manage.py collectstatic --noinput --verbosity 0
# pytest exits 5 when no test ran, which fails this script as it should.
exec .venv/bin/python -m pytest "$@"
