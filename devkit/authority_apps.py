"""The authority as `trustgate-attestation serve` runs it (its flags, checks, app and gunicorn over TLS),
with the two cluster calls left (reading a Node, publishing a report) answered from files.

    python -m devkit.authority_apps NODES.json PUBLISHED_DIR -- --kubeconfig=FILE serve <flags>

NODES.json maps node names to [systemUUID, bootID]; each published report is written to
PUBLISHED_DIR/<node>.jwt. `--kubeconfig` must name a kubeconfig file (it is never contacted:
`--enrollment` and `--flavors` are files too).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from flask import Flask

from attestation.main import SERVICE, AuthoritySettings, app_for, build


def main(argv: list[str]) -> int:
    nodes_file, published, separator, *flags = argv
    assert separator == "--", __doc__

    def create(settings: AuthoritySettings) -> Flask:
        authority = build(settings)
        nodes = {name: tuple(identity) for name, identity in json.loads(Path(nodes_file).read_text()).items()}
        authority.nodes = nodes.get
        authority.publish = lambda node, token: (Path(published) / f"{node}.jwt").write_text(token)
        return app_for(settings, authority)

    serve = replace(SERVICE.commands["serve"], app=create)
    return replace(SERVICE, commands={"serve": serve}).start(flags)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
