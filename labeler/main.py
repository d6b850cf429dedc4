"""`trustgate-labeler`: the label controller, one active instance by leader election."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from kubernetes import client

from labeler.controller import LabelController, run_leader_election
from trustgate.cluster.api import api_client
from trustgate.cluster.cache import ClusterCache
from trustgate.settings import TrustSettings, option
from trustgate.startup import Command, Service


@dataclass(frozen=True)
class LabelerSettings(TrustSettings):
    identity: str | None = option("leader election identity; default: $POD_NAME, else the host name")


def run(settings: LabelerSettings) -> int:
    api = api_client(settings.kubeconfig)
    cache = ClusterCache(api, settings.verifier()).start()
    core = client.CoreV1Api(api)
    controller = LabelController(cache, lambda name, body: core.patch_node(name, body))
    identity = settings.identity or os.environ.get("POD_NAME") or socket.gethostname()
    threading.Thread(
        target=run_leader_election, args=(controller, settings.namespace, identity, api), daemon=True
    ).start()
    signal.signal(signal.SIGTERM, lambda *_: controller.stop())
    controller.run()
    cache.stop()
    return 0


SERVICE = Service("trustgate-labeler", Command(LabelerSettings, run=run), description=__doc__.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    return SERVICE.start(argv)


if __name__ == "__main__":
    sys.exit(main())
