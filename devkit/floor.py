"""The benchmarks' floor: trustgate's extender and webhook with every decision taken out.

    python -m devkit.floor extender <trustgate-extender's own flags>
    python -m devkit.floor webhook <trustgate-webhook's own flags>

Each parses the real service's settings and serves through the same start-up path (the same gunicorn
server, port, TLS, client-certificate check, workers and threads) the same wire protocol without a
decision: /filter passes every node it is given, /prioritize prefers none, /bind writes the Binding as
asked; /validate admits, /mutate marks the pod for the extender as trustgate's webhook does (every
pod that reaches it: the webhook configurations, which the controller scopes, send only selected pods).
What trustgate costs beyond this floor is the cost of its decisions and caches.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry

from extender.main import ExtenderSettings
from extender.wire import (
    decode_args,
    decode_binding_args,
    encode_binding_result,
    encode_error,
    encode_filter_result,
    encode_priorities,
)
from trustgate.cluster.api import api_client, bind_pod
from trustgate.core.reasons import Code, Reason
from trustgate.serving.identity import require_client_certificate
from trustgate.serving.probes import add_probes
from trustgate.startup import Command, Service
from webhook.main import WebhookSettings
from webhook.mark import mark_patch
from webhook.review import decode_review, dumps, encode_response

JSON = "application/json"


def extender(settings: ExtenderSettings) -> Flask:
    api = api_client(settings.kubeconfig)
    app = Flask("floor.extender")
    add_probes(app, CollectorRegistry(), lambda: None)

    def reply(body: bytes, status: int = 200) -> Response:
        return Response(body, status=status, mimetype=JSON)

    if settings.client_ca:
        require_client_certificate(
            app,
            ("/filter", "/prioritize", "/bind"),
            lambda why: reply(encode_error(Reason(Code.BAD_REQUEST, why)), 401),
            settings.client_names,
        )

    @app.post("/filter")
    def filter_view() -> Response:
        args = decode_args(request.get_data(cache=False))
        return reply(encode_filter_result(args, args.node_names if args.by_name else args.nodes))

    @app.post("/prioritize")
    def prioritize_view() -> Response:
        decode_args(request.get_data(cache=False))
        return reply(encode_priorities([], []))

    @app.post("/bind")
    def bind_view() -> Response:
        args = decode_binding_args(request.get_data(cache=False))
        try:
            bind_pod(api, args.namespace, args.pod, args.uid, args.node)
        except Exception as error:  # as the real extender: kube-scheduler retries the pod
            return reply(encode_binding_result(Reason(Code.INTERNAL, f"cannot bind: {error}"[:512])))
        return reply(encode_binding_result(None))

    return app


def webhook(settings: WebhookSettings) -> Flask:
    app = Flask("floor.webhook")
    add_probes(app, CollectorRegistry(), lambda: None)

    def reply(review: dict[str, object]) -> Response:
        return Response(dumps(review), mimetype=JSON)

    if settings.client_ca:
        require_client_certificate(
            app, ("/validate", "/mutate"), lambda why: Response(why, status=401), settings.client_names
        )

    @app.post("/validate")
    def validate() -> Response:
        review = decode_review(request.get_data(cache=False))
        return reply(encode_response(review.uid, True))

    @app.post("/mutate")
    def mutate() -> Response:
        review = decode_review(request.get_data(cache=False))
        pod = review.object if review.operation == "CREATE" else {}
        return reply(encode_response(review.uid, True, patch=mark_patch(pod) if pod else ()))

    return app


SERVICES = {
    "extender": Service("floor-extender", Command(ExtenderSettings, app=extender)),
    "webhook": Service("floor-webhook", Command(WebhookSettings, app=webhook)),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SERVICES:
        print(f"usage: python -m devkit.floor {{{','.join(SERVICES)}}} <the service's flags>", file=sys.stderr)
        return 2
    return SERVICES[args[0]].start(args[1:])


if __name__ == "__main__":
    sys.exit(main())
