"""Decode `admission.k8s.io/v1` AdmissionReview requests and encode their responses.

No decisions here (those live in `webhook.decide`): this module only turns bytes into an
`AdmissionRequest` and a `Decision` back into an AdmissionReview. Two kinds of bad input:

- `ReviewError`: the body cannot be answered as an AdmissionReview at all (not JSON, wrong
  apiVersion/kind, no `request`, no `uid`): the HTTP layer answers 400 (and bounds the body's size).
- Everything else that is wrong but carries a `uid` is decoded as far as possible and left to
  the decision, which rejects it with a clear message (never an allow).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trustgate.audit.record import truncate

try:  # orjson decodes a pod several times faster (as in the extender); the stdlib is the fallback.
    import orjson

    loads = orjson.loads

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    _DECODE_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, RecursionError)
    JSON_LIBRARY = "orjson"
except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    _DECODE_ERRORS = (ValueError, RecursionError)
    JSON_LIBRARY = "json"

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_WARNING_CHARS = 119  # the API asks for warnings under 120 characters
MAX_WARNINGS = 10
MAX_ANNOTATION_VALUE_CHARS = 1024

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ReviewError(ValueError):
    """The body is not an AdmissionReview that can be answered (there is no uid to answer to)."""


@dataclass(frozen=True)
class GroupVersionKind:
    group: str = ""
    version: str = ""
    kind: str = ""


@dataclass(frozen=True)
class GroupVersionResource:
    group: str = ""
    version: str = ""
    resource: str = ""


@dataclass(frozen=True)
class AdmissionRequest:
    """The fields of `admission.k8s.io/v1` AdmissionRequest that trustgate reads.

    `problems` lists fields that were present but malformed; the decision rejects such a request.
    """

    uid: str
    kind: GroupVersionKind = GroupVersionKind()
    resource: GroupVersionResource = GroupVersionResource()
    sub_resource: str = ""
    request_kind: GroupVersionKind | None = None
    request_resource: GroupVersionResource | None = None
    request_sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    operation: str = ""
    user_info: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    object: Any = None
    old_object: Any = None
    dry_run: bool = False
    options: Any = None
    problems: tuple[str, ...] = field(default=())

    @property
    def username(self) -> str:
        name = self.user_info.get("username")
        return name if isinstance(name, str) else ""

    @property
    def resource_path(self) -> str:
        """`pods`, `pods/binding`, `bindings`, `pods/ephemeralcontainers`, ..."""
        resource = self.resource.resource
        return f"{resource}/{self.sub_resource}" if self.sub_resource else resource


def decode_review(body: bytes | str) -> AdmissionRequest:
    """Parse an AdmissionReview body; raises `ReviewError` when there is nothing to answer."""
    try:
        review = loads(body)
    except _DECODE_ERRORS:
        raise ReviewError("request body is not valid JSON") from None
    if not isinstance(review, dict):
        raise ReviewError("request body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise ReviewError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got apiVersion {_show(review.get('apiVersion'))} "
            f"kind {_show(review.get('kind'))}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("AdmissionReview request has no uid")
    problems: list[str] = []

    def string(key: str) -> str:
        value = request.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            problems.append(f"request.{key} must be a string")
            return ""
        return value

    dry_run = request.get("dryRun")
    if dry_run is not None and not isinstance(dry_run, bool):
        problems.append("request.dryRun must be a boolean")
        dry_run = False  # a malformed request is rejected anyway; dry-run would only suppress the record
    user_info = request.get("userInfo")
    if user_info is not None and not isinstance(user_info, dict):
        problems.append("request.userInfo must be an object")
        user_info = None
    return AdmissionRequest(
        uid=uid,
        kind=_gvk(request.get("kind"), "kind", problems) or GroupVersionKind(),
        resource=_gvr(request.get("resource"), "resource", problems) or GroupVersionResource(),
        sub_resource=string("subResource"),
        request_kind=_gvk(request.get("requestKind"), "requestKind", problems),
        request_resource=_gvr(request.get("requestResource"), "requestResource", problems),
        request_sub_resource=string("requestSubResource"),
        name=string("name"),
        namespace=string("namespace"),
        operation=string("operation"),
        user_info=MappingProxyType(user_info) if user_info else _EMPTY,
        object=request.get("object"),
        old_object=request.get("oldObject"),
        dry_run=bool(dry_run),
        options=request.get("options"),
        problems=tuple(problems),
    )


def _gvk(value: Any, name: str, problems: list[str]) -> GroupVersionKind | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k, ""), str) for k in ("group", "version", "kind")):
        problems.append(f"request.{name} must be a GroupVersionKind")
        return None
    return GroupVersionKind(value.get("group", ""), value.get("version", ""), value.get("kind", ""))


def _gvr(value: Any, name: str, problems: list[str]) -> GroupVersionResource | None:
    if value is None:
        return None
    keys = ("group", "version", "resource")
    if not isinstance(value, dict) or not all(isinstance(value.get(k, ""), str) for k in keys):
        problems.append(f"request.{name} must be a GroupVersionResource")
        return None
    return GroupVersionResource(value.get("group", ""), value.get("version", ""), value.get("resource", ""))


def _show(value: Any) -> str:
    return repr(value)[:64] if value is not None else "none"


def encode_response(
    uid: str,
    allowed: bool,
    *,
    code: int = 403,
    message: str = "",
    warnings: tuple[str, ...] | list[str] = (),
    annotations: Mapping[str, str] | None = None,
    patch: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """An AdmissionReview response: `uid` echoed, `status` on denial, safe warnings and annotation keys,
    and a JSON patch for a mutating webhook's allow."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if allowed and patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(dumps(list(patch))).decode()
    if not allowed:
        response["status"] = {"code": code, "message": message or "denied by trustgate"}
    if warnings:
        response["warnings"] = [truncate(w, MAX_WARNING_CHARS) for w in list(warnings)[:MAX_WARNINGS]]
    if annotations:
        response["auditAnnotations"] = {
            annotation_key(k): truncate(v, MAX_ANNOTATION_VALUE_CHARS) for k, v in annotations.items()
        }
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def annotation_key(key: str) -> str:
    """An auditAnnotations key the apiserver accepts after prefixing `<webhook name>/`:
    no `/`, alphanumerics, `-`, `_`, `.`, alphanumeric ends, at most 63 characters."""
    cleaned = "".join(c if c in _KEY_CHARS else "-" for c in key)[:63].strip("-_.")
    return cleaned or "trustgate"


def bad_request_body(message: str) -> dict[str, Any]:
    """The body of a 400 answer: a `metav1.Status`, as the apiserver would log it."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "reason": "BadRequest",
        "code": 400,
        "message": message,
    }
