"""A stand-in for the local model server in supervisor tests: answers what the supervisor
probes (GET /v1/models and /props, llama.cpp's shapes) on a loopback port, and nothing else.

    python -m tests.providers.localmodel.fake_model_server --port N [--n_ctx N] [--n_predict N]
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from providers.localmodel.supervisor import ChildSpec

ROOT = Path(__file__).resolve().parents[3]
# A stand-in for daphne (or for a model server that never answers).
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def child_spec(port: int, n_ctx: int = 2048, n_predict: int = 256) -> ChildSpec:
    """This server as the supervisor's model child."""
    return ChildSpec(
        name="model server",
        argv=[
            sys.executable,
            "-m",
            "tests.providers.localmodel.fake_model_server",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--n_predict",
            str(n_predict),
        ],
        cwd=ROOT,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n_ctx", type=int, default=2048)
    parser.add_argument("--n_predict", type=int, default=256)
    args = parser.parse_args()
    answers = {
        "/v1/models": {"object": "list", "data": [{"id": "fake-local", "object": "model"}]},
        "/props": {
            "default_generation_settings": {
                "n_ctx": args.n_ctx,
                "params": {"n_predict": args.n_predict},
            }
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = answers.get(self.path)
            body = json.dumps(answer or {"error": "not found"}).encode()
            self.send_response(200 if answer else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
