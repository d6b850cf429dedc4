"""App factories gunicorn imports in each worker for the reliability tests.

`create()` is the real extender app (tests/extender/extender_wsgi.py: a fixed two-node cluster) plus
three test-only routes that the production app does not have:

- `GET /_test/pid`: the worker's pid (which worker answered; recycled or replaced workers);
- `GET /_test/sleep?s=N`: one request thread busy for N seconds (the GIL released);
- `GET /_test/hog?n=N`: `sum(range(N))` in C, holding the GIL: the whole worker hangs, heartbeat
  included, as with a catastrophic regex or a stuck C extension.

`webhook()` is the real webhook app over a static 20-node cluster (bench/admission_app.py).
"""

from __future__ import annotations

import os
import time

from flask import Flask, request


def create() -> Flask:
    from extender_wsgi import create as create_extender

    app = create_extender()

    @app.get("/_test/pid")
    def pid() -> str:
        return str(os.getpid())

    @app.get("/_test/sleep")
    def sleep() -> str:
        time.sleep(float(request.args.get("s", "1")))
        return "slept"

    @app.get("/_test/hog")
    def hog() -> str:
        return str(sum(range(int(request.args.get("n", "1000000")))))

    return app


def webhook() -> Flask:
    from bench.admission_app import create as create_webhook

    return create_webhook()
