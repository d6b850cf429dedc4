"""The node labels trustgate owns, and the values they should have for a node's trust state.

Labels are hints for kube-scheduler's own filters; every decision re-checks the signed
report, so a label set by anyone else gains nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

TRUSTED_LABEL = "trustgate.dev/trusted"
ASSET_LABEL_PREFIX = "asset.trustgate.dev/"

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def is_trust_label(key: str) -> bool:
    return key == TRUSTED_LABEL or key.startswith(ASSET_LABEL_PREFIX)


def asset_label(tag: str) -> str:
    return ASSET_LABEL_PREFIX + tag


def is_valid_label_part(text: str) -> bool:
    """A label name or value Kubernetes accepts: up to 63 alphanumerics, '-', '_', '.', alphanumeric ends."""
    if text == "":
        return True
    return len(text) <= 63 and set(text) <= _NAME_CHARS and text[0].isalnum() and text[-1].isalnum()


def desired_labels(trusted: bool, asset_tags: Mapping[str, str]) -> dict[str, str]:
    """The owned labels a node should carry. Tags that cannot be labels are left out (never truncated)."""
    labels = {TRUSTED_LABEL: "true" if trusted else "false"}
    if trusted:
        for tag, value in asset_tags.items():
            if tag and is_valid_label_part(tag) and is_valid_label_part(value):
                labels[asset_label(tag)] = value
    return labels


# The extended resource that marks a pod for trustgate's scheduler extender. kube-scheduler consults an
# extender only for pods that request one of its managedResources (with ignoredByScheduler, no node needs
# to offer it; the kubelet drops extended resources its node does not have when it admits the pod).
TRUST_RESOURCE = "trustgate.dev/trust"
