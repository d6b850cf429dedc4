"""App factories gunicorn imports in each worker for the extender's serving and reliability tests.

    python -m trustgate.serving.server devkit.extender_apps:create --bind 127.0.0.1:8443 --certfile ... --keyfile ...

`create()` is the real extender app over a fixed two-node cluster (`trusted-1` with a valid report,
`bare-1` without); each worker builds its own. `authenticated()` answers decisions only to a client
certificate (mTLS, as with `--client-ca`). `instrumented()` is `create()` plus three test-only
routes that the production app does not have:

- `GET /_test/pid`: the worker's pid (which worker answered; recycled or replaced workers);
- `GET /_test/sleep?s=N`: one request thread busy for N seconds (the GIL released);
- `GET /_test/hog?n=N`: `sum(range(N))` in C, holding the GIL: the whole worker hangs, heartbeat
  included, as with a catastrophic regex or a stuck C extension.
"""

from __future__ import annotations

import os
import time

from flask import Flask, request

from devkit.factories import Issuer, node_object
from extender.app import create_app
from trustgate.core.snapshot import Snapshot, StaticCluster


def create(client_certificates: bool = False) -> Flask:
    issuer = Issuer()
    nodes = [node_object("trusted-1"), node_object("bare-1")]
    snapshot = Snapshot.build(issuer.verifier(), nodes=nodes, reports={"trusted-1": issuer.token("trusted-1")})
    return create_app(StaticCluster(snapshot), client_certificates=client_certificates)


def authenticated() -> Flask:
    """`create()` whose decisions need a client certificate, as `trustgate-extender --client-ca` serves."""
    return create(client_certificates=True)


def instrumented() -> Flask:
    app = create()

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
