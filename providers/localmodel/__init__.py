"""The bundled local model: a small model served on loopback when no provider is configured.

So that the README's one command gives a working chat on a fresh machine, scripts/run.sh runs
``manage.py local_model prepare`` (decide whether it is wanted, install the optional ``local``
extra, write the weights; prepare.py) and, when that succeeds, ``manage.py local_model serve``:
a small supervisor (supervisor.py) that runs daphne and the model server (server.py) side by
side, restarts the model server when it dies, registers it as a provider once it answers with
its limits (limits.py, services.py), and stops both on Ctrl+C or SIGTERM. What happened is kept
in ``VAR_DIR/local-model/status.json`` (status.py), which staff see on the chat page and in
the admin.

Nothing in this package imports llama_cpp except server.py, which runs in its own process: the
main app installs and runs without the local extra.
"""

from __future__ import annotations

PROVIDER_NAME = "Local demo model"
# The id the server answers to, and the model a conversation stores.
MODEL_ALIAS = "gemma-3-270m"
# Gemma 3 270M is a tiny base model: it writes real tokens but not good answers. The UI says so
# ("Local demo model (Gemma 3 270M base) — for trying the app, not for real answers").
DISPLAY_NAME = "Local demo model (Gemma 3 270M base)"
DESCRIPTION = "for trying the app, not for real answers"
WEIGHTS_FILE = "gemma-3-270m-q4_k_m.gguf"
# Read by server.py; kept out of its command line, which every local user can see in `ps`.
API_KEY_ENV = "TEAMCHAT_LOCAL_MODEL_API_KEY"
