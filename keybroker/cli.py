"""`trustctl image`: encrypt an image of a registry, rotate its key, list the keys the broker holds.

    trustctl image encrypt SOURCE TARGET --policy NAME [--registry-ca CA | --plain-http]
    trustctl image rotate-key TARGET [--registry-ca CA | --plain-http]
    trustctl image keys

The key is registered in the Secret `trustgate-image-keys` of trustgate's namespace (`--kubeconfig`,
`--namespace`), which only the key broker and its operators may read. `encrypt` checks that the
TrustPolicy named covers TARGET (its `encryptedImages`) before anything is pushed: an image that no
policy covers would have a key that no node ever gets.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from keybroker.encrypt import EncryptionError, encrypt_image, rotate_image_key
from keybroker.registry import ImageName, Registry, RegistryError
from keybroker.store import KeyStoreError, SecretKeyStore
from keybroker.wrapping import WrappingError
from trustgate.cli.tables import format_table
from trustgate.core.policy import TrustPolicy


class ImageCommandError(Exception):
    """What `trustctl image` reports and exits 2 for."""


def add_commands(commands: Any, handler_key: str = "handler") -> None:
    image = commands.add_parser("image", help="encrypted images: encrypt, rotate a key, list keys")
    verbs = image.add_subparsers(dest="image_command", required=True, metavar="COMMAND")

    def common(parser: argparse.ArgumentParser, registry: bool = True) -> None:
        parser.add_argument("--kubeconfig", help="default: in-cluster service account")
        parser.add_argument("--namespace", default="trustgate-system", help="trustgate's namespace (the key Secret's)")
        if registry:
            parser.add_argument("--registry-ca", help="CA bundle of the registry's certificate")
            parser.add_argument(
                "--plain-http", action="store_true", help="the registry speaks HTTP (this machine only)"
            )

    encrypt = verbs.add_parser("encrypt", help="push SOURCE as TARGET with encrypted layers; register the key")
    encrypt.add_argument("source", help="the plain image, e.g. registry.example:5000/app:1")
    encrypt.add_argument("target", help="the encrypted image, e.g. registry.example:5000/secret/app:1")
    encrypt.add_argument("--policy", required=True, help="the TrustPolicy that covers TARGET (encryptedImages)")
    common(encrypt)
    encrypt.set_defaults(**{handler_key: cmd_encrypt})

    rotate = verbs.add_parser("rotate-key", help="encrypt TARGET again under a new key; the old key is deleted")
    rotate.add_argument("target")
    common(rotate)
    rotate.set_defaults(**{handler_key: cmd_rotate})

    keys = verbs.add_parser("keys", help="the image keys the broker holds (never the keys themselves)")
    keys.add_argument("--json", action="store_true")
    common(keys, registry=False)
    keys.set_defaults(**{handler_key: cmd_keys})


def _store(args: argparse.Namespace) -> SecretKeyStore:
    from trustgate.cluster.api import api_client

    return SecretKeyStore(api_client(args.kubeconfig), args.namespace)


def _registry(args: argparse.Namespace, *images: str) -> Registry:
    hosts = {ImageName.parse(i).host for i in images}
    if len(hosts) != 1:
        raise ImageCommandError(f"the images must be in one registry, not {', '.join(sorted(hosts))}")
    return Registry(hosts.pop(), ca_file=args.registry_ca, plain_http=args.plain_http)


def check_policy(args: argparse.Namespace, target: str) -> None:
    from kubernetes import client

    from trustgate.cluster.api import api_client
    from trustgate.cluster.resources import GROUP, POLICIES_PLURAL, VERSION

    objects = client.CustomObjectsApi(api_client(args.kubeconfig))
    try:
        resource = objects.get_cluster_custom_object(GROUP, VERSION, POLICIES_PLURAL, args.policy)
    except client.exceptions.ApiException as error:
        if error.status == 404:
            raise ImageCommandError(f"TrustPolicy {args.policy} does not exist") from None
        raise ImageCommandError(f"cannot read TrustPolicy {args.policy}: {error.status} {error.reason}") from None
    policy = TrustPolicy.from_resource(resource)
    if policy.error is not None:
        raise ImageCommandError(policy.error.message)
    if not policy.encrypted_image(target):
        raise ImageCommandError(
            f"TrustPolicy {args.policy} does not cover {target}: add it (or a pattern) to its spec.encryptedImages"
        )


def _errors(action: Any) -> Any:
    try:
        return action()
    except (EncryptionError, RegistryError, KeyStoreError, WrappingError) as error:
        raise ImageCommandError(str(error)) from None


def cmd_encrypt(args: argparse.Namespace) -> int:
    check_policy(args, args.target)
    registry, store = _registry(args, args.source, args.target), _store(args)
    done = _errors(lambda: encrypt_image(registry, store, args.source, args.target, args.policy))
    print(
        f"{done.image} ({done.digest}): {done.layers} layers encrypted under key {done.kid}, "
        f"covered by TrustPolicy {args.policy}"
    )
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    registry, store = _registry(args, args.target), _store(args)
    done = _errors(lambda: rotate_image_key(registry, store, args.target))
    print(
        f"{done.image} ({done.digest}): {done.layers} layers encrypted again under key {done.kid}; "
        f"key {done.replaced} deleted"
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    keys = _errors(lambda: _store(args).all())
    rows = [(k.record.kid, k.record.image, k.record.policy, k.created) for k in sorted(keys, key=lambda k: k.created)]
    if args.json:
        for kid, image, policy, created in rows:
            print(json.dumps({"kid": kid, "image": image, "policy": policy, "created": created}))
    else:
        print(format_table(("KEY", "IMAGE", "POLICY", "CREATED"), rows))
    return 0
