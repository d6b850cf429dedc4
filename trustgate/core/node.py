"""A node as trust decisions see it: its labels, its identity and its verified report.

`assess` runs once per change of a Node or its report (not per request): it verifies the
token (cached by token) and checks the host binding. Only the expiry is left for
decision time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trustgate.core.labels import TRUSTED_LABEL, asset_label, is_trust_label
from trustgate.core.reasons import NO_REPORT, Code, Reason
from trustgate.core.report import NodeIdentity, ReportError, ReportVerifier, TrustReport

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class NodeTrust:
    """A node's trust state. `failure` is set when the report is absent, invalid or bound elsewhere."""

    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    report: TrustReport | None = None
    failure: Reason | None = NO_REPORT
    signed_labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # asset labels from the verified report
    trusted_levels: frozenset[str] = frozenset()
    identity: NodeIdentity | None = None

    def failure_at(self, now: float, skew: float) -> Reason | None:
        """Why the node cannot be trusted at `now`, before looking at any pod's requirement."""
        if self.failure is not None:
            return self.failure
        assert self.report is not None
        return self.report.time_failure(now, skew)

    def label_view(self, trusted: bool, include_unsigned: bool) -> dict[str, str]:
        """Labels to evaluate node constraints on: trust keys from the signed report only."""
        view = {k: v for k, v in self.labels.items() if not is_trust_label(k)} if include_unsigned else {}
        view.update(self.signed_labels)
        view[TRUSTED_LABEL] = "true" if trusted else "false"
        return view


def node_identity(node: Mapping[str, Any]) -> NodeIdentity:
    """The identity of a `v1.Node` object (as JSON); `ValueError` when a member has the wrong type."""
    info = _object(_object(node, "status"), "nodeInfo")
    return NodeIdentity(
        name=_string(_object(node, "metadata"), "name"),
        system_uuid=_string(info, "systemUUID"),
        boot_id=_string(info, "bootID"),
    )


def node_labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    labels = _object(_object(node, "metadata"), "labels")
    return MappingProxyType(dict(labels)) if labels else _EMPTY


def _object(parent: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    if not isinstance(parent, Mapping):
        raise ValueError("malformed v1.Node: not an object")
    value = parent.get(name)
    if value is None:
        return _EMPTY
    if not isinstance(value, Mapping):
        raise ValueError(f"malformed v1.Node: {name} must be an object")
    return value


def _string(parent: Mapping[str, Any], name: str) -> str:
    value = parent.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"malformed v1.Node: {name} must be a string")
    return value


def assess(
    identity: NodeIdentity,
    labels: Mapping[str, str],
    token: str | None,
    verifier: ReportVerifier,
) -> NodeTrust:
    """Verify a node's report (if any) and bind it to the node."""
    if token is None:
        return NodeTrust(name=identity.name, labels=labels, failure=NO_REPORT, identity=identity)
    try:
        report = verifier.verify(token)
    except ReportError as error:
        return NodeTrust(
            name=identity.name,
            labels=labels,
            failure=Reason(Code.INVALID_REPORT, f"trust report invalid: {error.reason}"),
            identity=identity,
        )
    failure = report.binding_failure(identity)
    if failure is not None:
        return NodeTrust(name=identity.name, labels=labels, report=report, failure=failure, identity=identity)
    return NodeTrust(
        name=identity.name,
        labels=labels,
        report=report,
        failure=None,
        signed_labels=MappingProxyType({asset_label(k): v for k, v in report.asset_tags.items()}),
        trusted_levels=report.trusted_levels,
        identity=identity,
    )
