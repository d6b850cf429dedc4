"""Why a node fails a pod's requirement, or why a request is refused: a stable code and a message.

As kube-scheduler's framework keeps a `Status` code apart from its message, every failure the core
finds is a `Reason`: metrics, audit categories and tests use its `code` (a small, fixed set of
label values), operators read its `message`. Only the encoders (the extender's and the webhook's
wire formats, audit sinks, the CLI) join messages into text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Code(enum.StrEnum):
    NO_REPORT = "no_report"
    UNKNOWN_NODE = "unknown_node"
    INVALID_REPORT = "invalid_report"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BOUND_ELSEWHERE = "bound_elsewhere"
    REBOOTED = "rebooted"
    LEVEL = "level"
    ASSET_TAG = "asset_tag"
    NODE_LABEL = "node_label"
    POLICY_INVALID = "policy_invalid"
    # Refusals of a request rather than failures of a node:
    NOT_READY = "not_ready"
    POD_NOT_FOUND = "pod_not_found"
    NOT_MARKED = "not_marked"
    BAD_REQUEST = "bad_request"
    AUDIT_UNAVAILABLE = "audit_unavailable"  # a Warn/Audit admission whose record no durable sink took
    INTERNAL = "internal"
    # Refusals of an image key request (trustgate.core.release, keybroker):
    NOT_COVERED = "not_covered"  # no TrustPolicy covers the image: its key goes to no node
    UNKNOWN_KEY = "unknown_key"  # the broker holds no key of that id (rotated, or never registered)
    # no such challenge, expired, used already, or issued to (or speaking for) another node than the caller's
    CHALLENGE = "challenge"
    EVIDENCE = "evidence"  # a TPM quote that does not verify with the node's attestation key or bind the request


CODES: tuple[Code, ...] = tuple(Code)


@dataclass(frozen=True, slots=True)
class Reason:
    code: Code
    message: str

    def __str__(self) -> str:
        return self.message


def describe(reasons: Iterable[Reason]) -> str:
    """The messages of `reasons`, joined for one line of text."""
    return "; ".join(reason.message for reason in reasons)


def messages(reasons: Iterable[Reason]) -> list[str]:
    return [reason.message for reason in reasons]


NO_REPORT = Reason(Code.NO_REPORT, "no trust report")
UNKNOWN_NODE = Reason(Code.UNKNOWN_NODE, "node not found in the cluster")
