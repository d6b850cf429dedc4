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
from pathlib import Path

from attestation.main import SERVICE, AuthoritySettings, app_for, build
from trustgate.serving.server import serve


def main(argv: list[str]) -> int:
    nodes_file, published, separator, *flags = argv
    assert separator == "--", __doc__
    command, settings = SERVICE.parse(flags)
    assert isinstance(settings, AuthoritySettings)

    def factory():  # type: ignore[no-untyped-def]
        authority = build(settings)
        nodes = {name: tuple(identity) for name, identity in json.loads(Path(nodes_file).read_text()).items()}
        authority.nodes = nodes.get
        authority.publish = lambda node, token: (Path(published) / f"{node}.jwt").write_text(token)
        return app_for(settings, authority)

    assert settings.tls_cert is not None and settings.tls_key is not None
    serve(
        factory,
        bind=settings.bind,
        certfile=settings.tls_cert,
        keyfile=settings.tls_key,
        client_ca=settings.client_ca,
        workers=settings.workers,
        threads=settings.threads,
        **command.server,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
