"""The extender's wire format: decode `ExtenderArgs`, encode `ExtenderFilterResult` and `HostPriorityList`.

The types are `k8s.io/kube-scheduler/extender/v1` (kubernetes staging/src/k8s.io/kube-scheduler/extender/v1/types.go).
They have no JSON tags, so the keys are the Go field names:

    ExtenderArgs         {Pod *v1.Pod, Nodes *v1.NodeList, NodeNames *[]string}
    ExtenderFilterResult {Nodes *v1.NodeList, NodeNames *[]string, FailedNodes map[string]string,
                          FailedAndUnresolvableNodes map[string]string, Error string}
    HostPriorityList     []HostPriority{Host string, Score int64}, Score in 0..MaxExtenderPriority (10)

How kube-scheduler's HTTPExtender (pkg/scheduler/extender.go) uses them:

- `send` marshals the args with encoding/json, POSTs them to `urlPrefix/verb` with `Content-Type:
  application/json`, treats any status but 200 as an error and decodes the reply with encoding/json,
  which matches keys case-insensitively (old extenders answer with lowercase keys; we accept both).
- Filter and Prioritize send the same ExtenderArgs: with `nodeCacheCapable: true` only `NodeNames`
  (`Nodes` is null); with `false` only `Nodes`, a NodeList whose `items` are full Node objects
  (`NodeNames` is null).
- A non-empty `Error` fails the call. With `nodeCacheCapable` and a non-null `NodeNames` in the reply,
  every name must be one of the candidates (else the call fails); otherwise `Nodes.items` is taken as
  the feasible nodes, as given. A reply with neither leaves no feasible node.
- `FailedAndUnresolvableNodes` become UnschedulableAndUnresolvable (preemption will not try them),
  `FailedNodes` Unschedulable. A failed call fails the scheduling attempt (retried) unless the
  extender is `ignorable`.
- Prioritize errors are ignored; each score is multiplied by the extender's weight and scaled by
  MaxNodeScore / MaxExtenderPriority.

Decoding is strict about shapes (a wrong type is a `WireError`, HTTP 400) and lenient about key case,
like Go: every top-level key that case-folds to a field name sets it, the last one winning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from trustgate.core.reasons import Reason, describe

try:  # orjson decodes and encodes large NodeLists several times faster; the stdlib is the fallback.
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
    _DecodeError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, RecursionError)
    JSON_LIBRARY = "orjson"
except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    _DecodeError = (ValueError, RecursionError)
    JSON_LIBRARY = "json"

MAX_PRIORITY = 10  # extenderv1.MaxExtenderPriority
PREFIX = "trustgate: "  # every Error message names who refused
_FIELDS = {"pod": "Pod", "nodes": "Nodes", "nodenames": "NodeNames"}
_EXACT = frozenset(_FIELDS.values())


class WireError(ValueError):
    """A request that is not a well-formed ExtenderArgs (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """A decoded ExtenderArgs. Exactly one of `node_names` and `node_list` is set."""

    pod: dict[str, Any]
    node_names: list[str] | None = None  # nodeCacheCapable: true
    node_list: dict[str, Any] | None = None  # nodeCacheCapable: false: the v1.NodeList as sent

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The NodeList's items (full Node objects); empty in NodeNames mode."""
        if self.node_list is None:
            return []
        return self.node_list.get("items") or []

    @property
    def by_name(self) -> bool:
        return self.node_names is not None


def loads(body: bytes) -> Any:
    try:
        return _loads(body)
    except _DecodeError as error:
        raise WireError(f"request body is not valid JSON: {error}") from None


def dumps(value: Any) -> bytes:
    return _dumps(value)


def decode_args(body: bytes) -> ExtenderArgs:
    """Parse an ExtenderArgs body (raises `WireError`)."""
    document = loads(body)
    if not isinstance(document, dict):
        raise WireError("request body must be a JSON object (ExtenderArgs)")
    fields = document if document.keys() <= _EXACT else _fold_keys(document)
    pod = fields.get("Pod")
    if pod is None:
        raise WireError("ExtenderArgs has no Pod")
    if not isinstance(pod, dict):
        raise WireError("ExtenderArgs.Pod must be a v1.Pod object")
    names, node_list = fields.get("NodeNames"), fields.get("Nodes")
    if names is not None and node_list is not None:
        raise WireError("ExtenderArgs must carry either NodeNames (nodeCacheCapable) or Nodes, not both")
    if names is not None:
        if not isinstance(names, list) or not _strings(names):
            raise WireError("ExtenderArgs.NodeNames must be a list of node names")
        return ExtenderArgs(pod=pod, node_names=names)
    if node_list is None:
        raise WireError("ExtenderArgs has neither NodeNames nor Nodes")
    if not isinstance(node_list, dict):
        raise WireError("ExtenderArgs.Nodes must be a v1.NodeList object")
    items = node_list.get("items")
    if items is not None and (not isinstance(items, list) or not set(map(type, items)) <= {dict}):
        raise WireError("ExtenderArgs.Nodes.items must be a list of v1.Node objects")
    return ExtenderArgs(pod=pod, node_list=node_list)


def _strings(values: list[Any]) -> bool:
    """Whether every value is a string: `str.join` takes nothing else, and checks thousands of node
    names several times faster than a type test each (a decoded document has no `str` subclasses)."""
    try:
        "".join(values)
    except TypeError:
        return False
    return True


def _fold_keys(document: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in document.items():
        name = _FIELDS.get(key.casefold())
        if name is not None:
            fields[name] = value  # like encoding/json: a later key for the same field wins
    return fields


def encode_filter_result(
    args: ExtenderArgs,
    passed: list[Any] | None,
    unresolvable: Mapping[str, Sequence[Reason]] | None = None,
    error: Reason | None = None,
) -> bytes:
    """An ExtenderFilterResult in the mode of the request. `passed` holds node names (NodeNames mode) or
    Node objects (Nodes mode); each unresolvable node's reasons become one message. With an error,
    neither list is set: a client that ignored `Error` would still find no feasible node."""
    if error is not None or passed is None:
        message = PREFIX + error.message if error is not None else ""
        return _dumps(
            {
                "Nodes": None,
                "NodeNames": None,
                "FailedNodes": None,
                "FailedAndUnresolvableNodes": None,
                "Error": message,
            }
        )
    if args.by_name:
        nodes, names = None, passed
    else:
        node_list = args.node_list or {}
        nodes, names = (node_list if passed is args.nodes else {**node_list, "items": passed}), None
    failed = {
        name: reasons[0].message if len(reasons) == 1 else describe(reasons)
        for name, reasons in (unresolvable or {}).items()
    }
    return _dumps(
        {"Nodes": nodes, "NodeNames": names, "FailedNodes": {}, "FailedAndUnresolvableNodes": failed, "Error": ""}
    )


@dataclass(frozen=True, slots=True)
class BindingArgs:
    """A decoded ExtenderBindingArgs {PodName, PodNamespace, PodUID, Node}: bind this pod to that node."""

    pod: str
    namespace: str
    uid: str
    node: str


_BINDING_FIELDS = {"podname": "PodName", "podnamespace": "PodNamespace", "poduid": "PodUID", "node": "Node"}


def decode_binding_args(body: bytes) -> BindingArgs:
    """Parse an ExtenderBindingArgs body (raises `WireError`)."""
    document = loads(body)
    if not isinstance(document, dict):
        raise WireError("request body must be a JSON object (ExtenderBindingArgs)")
    fields = {_BINDING_FIELDS[k.casefold()]: v for k, v in document.items() if k.casefold() in _BINDING_FIELDS}
    values = [fields.get(name) for name in ("PodName", "PodNamespace", "PodUID", "Node")]
    if not all(isinstance(v, str) for v in values) or not values[0] or not values[1] or not values[3]:
        raise WireError("ExtenderBindingArgs needs the strings PodName, PodNamespace, PodUID and Node")
    return BindingArgs(*values)  # type: ignore[arg-type]


def encode_binding_result(error: Reason | None) -> bytes:
    """An ExtenderBindingResult: an empty `Error` means bound."""
    return _dumps({"Error": PREFIX + error.message if error is not None else ""})


def encode_error(reason: Reason) -> bytes:
    """Any error reply: an ExtenderFilterResult whose only content is `Error`."""
    return encode_filter_result(ExtenderArgs(pod={}), None, error=reason)


def encode_priorities(hosts: Sequence[str], scores: Sequence[int]) -> bytes:
    """A HostPriorityList: `scores[i]` (0..MAX_PRIORITY) is the score of `hosts[i]`.

    /prioritize answers with every candidate, thousands of them, and building a dict per host for the
    encoder costs more than deciding. Node names are DNS subdomains, which a JSON string holds as they
    are; when no host needs an escape (the encoder writes them all, as one string, in exactly their
    UTF-8 bytes and two quotes), the reply is written directly: each name followed by the separator
    that carries its score, the bytes `_dumps` writes for the dicts (the tests compare both). Any
    other name takes the dicts."""
    if len(hosts) != len(scores):
        raise ValueError("one score per host")
    if not hosts:
        return b"[]"
    joined = "".join(hosts)
    if len(_dumps(joined)) != len(joined.encode()) + 2:  # some name needs an escape
        return _dumps([{"Host": host, "Score": score} for host, score in zip(hosts, scores, strict=True)])
    pieces: list[str] = ['[{"Host":"'] * (2 * len(hosts) + 1)
    pieces[1::2] = hosts
    separators = itemgetter(*scores)(_SCORE_THEN_HOST)  # in one call (a single score gives a single string)
    pieces[2::2] = separators if len(scores) > 1 else (separators,)
    pieces[-1] = _LAST_SCORE[scores[-1]]
    return "".join(pieces).encode()


# What follows a host name in a HostPriorityList: its score, then the next entry up to the next name.
_SCORE_THEN_HOST = {score: f'","Score":{score}}},{{"Host":"' for score in range(MAX_PRIORITY + 1)}
_LAST_SCORE = {score: f'","Score":{score}}}]' for score in range(MAX_PRIORITY + 1)}
