"""An app factory for the gunicorn test: a fixed two-node cluster served by the real extender app.

gunicorn imports this module in each worker (`extender_wsgi:create`), so it builds everything itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask

from devkit.factories import Issuer, node_object
from extender.app import create_app
from trustgate.core.snapshot import Snapshot, StaticCluster


def create() -> Flask:
    issuer = Issuer()
    nodes = [node_object("trusted-1"), node_object("bare-1")]
    snapshot = Snapshot.build(issuer.verifier(), nodes=nodes, reports={"trusted-1": issuer.token("trusted-1")})
    return create_app(StaticCluster(snapshot))
