"""Whether an image key may be released to a node: the same TrustPolicy that places a pod decides.

An encrypted image's layer keys are released only to a node whose current report verifies, is bound
to that node and satisfies every TrustPolicy that covers the image (its `encryptedImages`): the
levels and asset tags those policies require. A key request carries no pod, so the policies that
cover an image are found by the image alone, whatever their namespace and pod selectors: an image
key serves every pod that runs the image, on whatever path the pod reached the node (a static pod,
a pod admitted while the webhook was removed, a stale scheduling decision). An image that no policy
covers has its key released to no node: a key is registered with the policy that covers it, and
taking the image out of every policy fails closed.

`Enforce` policies refuse; `Warn` and `Audit` policies release and record the violation, as they
admit pods and record them. A malformed policy that covers the image refuses (its text cannot be
trusted to narrow anything).

Pure: no I/O, no clock. The broker (`keybroker`) checks the request's evidence (challenge, TPM
quote) and calls `decide` with the node's trust state from its cluster snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trustgate.core.node import NodeTrust
from trustgate.core.policy import Enforcement, TrustPolicy, TrustRequirement, Verdict, evaluate, policy_source
from trustgate.core.reasons import Code, Reason


@dataclass(frozen=True)
class ImageKeyRecord:
    """What the broker knows of a registered image key, without the key itself."""

    kid: str
    image: str  # the repository (or reference) whose layers this key encrypts, as registered
    policy: str  # the TrustPolicy named when the key was registered


@dataclass(frozen=True)
class KeyRequest:
    """A node asking for the layer key of `kid`; `requester` is the node of its client certificate."""

    requester: str
    node: str  # the node the request speaks for (its challenge's)
    kid: str
    image: str  # the image the wrapped key says it belongs to


@dataclass(frozen=True)
class ReleaseDecision:
    node: str
    kid: str
    image: str
    policies: tuple[str, ...]
    enforcement: Enforcement | None  # the strictest enforcement among the covering policies
    reasons: tuple[Reason, ...] = ()
    violations: tuple[Reason, ...] = ()  # failures of Warn/Audit policies: released, and recorded

    @property
    def released(self) -> bool:
        return not self.reasons

    @property
    def decision(self) -> str:
        """The audit decision: released, rejected, or released with a recorded violation."""
        if self.reasons:
            return "rejected"
        if self.violations:
            return "warned" if self.enforcement is Enforcement.WARN else "audited"
        return "released"


def covering_policies(image: str, policies: Sequence[TrustPolicy]) -> tuple[TrustPolicy, ...]:
    """The policies whose `encryptedImages` cover `image` (a malformed policy counts when it lists it)."""
    return tuple(p for p in policies if p.encrypted_images and p.encrypted_image(image))


def image_requirement(covering: Sequence[TrustPolicy]) -> TrustRequirement:
    return TrustRequirement(sources=tuple(policy_source(p) for p in covering), constraints=None)


def _strictest(covering: Sequence[TrustPolicy]) -> Enforcement | None:
    for mode in (Enforcement.ENFORCE, Enforcement.WARN, Enforcement.AUDIT):
        if any(p.enforcement is mode for p in covering):
            return mode
    return None


def decide(
    request: KeyRequest,
    record: ImageKeyRecord | None,
    node: NodeTrust,
    policies: Sequence[TrustPolicy],
    now: float,
    skew: float,
) -> ReleaseDecision:
    """Release or refuse `request`'s key to `node` (the trust state of `request.node`) at `now`."""
    image = record.image if record is not None else request.image

    def refuse(reason: Reason, covering: Sequence[TrustPolicy] = ()) -> ReleaseDecision:
        return ReleaseDecision(
            node=request.node,
            kid=request.kid,
            image=image,
            policies=tuple(p.name for p in covering),
            enforcement=_strictest(covering),
            reasons=(reason,),
        )

    if request.requester != request.node or node.name != request.node:
        return refuse(
            Reason(Code.CHALLENGE, f"request for node {request.node} from node {request.requester}'s certificate")
        )
    if record is None:
        return refuse(
            Reason(Code.UNKNOWN_KEY, f"image key {request.kid} is not held by the broker (rotated or never registered)")
        )
    if request.image != record.image:
        return refuse(
            Reason(
                Code.UNKNOWN_KEY,
                f"the wrapped key names image {request.image}, but key {record.kid} was registered for {record.image}",
            )
        )
    covering = covering_policies(record.image, policies)
    if not covering:
        return refuse(
            Reason(Code.NOT_COVERED, f"no TrustPolicy covers image {record.image}: its key is released to no node")
        )
    verdict: Verdict = evaluate(image_requirement(covering), node, now, skew)
    blocked = tuple(verdict.reasons(verdict.enforced_failures))
    return ReleaseDecision(
        node=request.node,
        kid=record.kid,
        image=record.image,
        policies=tuple(p.name for p in covering),
        enforcement=_strictest(covering),
        reasons=blocked,
        violations=() if blocked else tuple(verdict.reasons()),  # a refusal records no violation
    )
