#!/usr/bin/env bash
# Set up and run Team Chat: a virtual environment in .venv, migrations, static files, then daphne
# on http://${HOST:-127.0.0.1}:${PORT:-8000}, with a local demo model when no provider is
# configured. Safe to run again: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtual environment in .venv …"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "Installing dependencies …"
  .venv/bin/pip install --quiet -e . --config-settings editable_mode=compat
  rm -f .venv/.installed-* && touch "$stamp"
fi

.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput --verbosity 0
.venv/bin/python manage.py setup_instance

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
where="Team Chat is at http://$HOST:$PORT/ (Ctrl+C stops it)"
# With no provider configured, a small local model comes too (providers/localmodel/): `prepare`
# installs it on first use and exits 0 when it is wanted and ready, 130 when Ctrl+C stopped
# its build; `serve` then runs daphne and the model server together. LOCAL_MODEL=off: never.
prepared=0
.venv/bin/python manage.py local_model prepare || prepared=$?
case $prepared in
  0) echo "$where"
     exec .venv/bin/python manage.py local_model serve --host "$HOST" --port "$PORT" ;;
  130) exit 130 ;;
esac
echo "$where"
# daphne, with the websocket size limit from settings (see chatsite/serve.py).
exec .venv/bin/python -m chatsite.serve --bind "$HOST" --port "$PORT"
