"""Pick the variant, runtime and device a model runs on, with a recorded fallback chain.

``choose`` ranks every (variant, runtime, device) that can work here and says
why every other one was skipped, in words a user can act on: the engine is
missing (and which extra installs it), the device is absent, the manifest has
no variant for it, or the policy forbids it. ``load_with_fallback`` walks the
ranked chain, so an NPU whose driver refuses the model falls back to the GPU,
then the CPU, and the failures are kept for ``/v1/models``.

Sources of truth: a runtime's own ``devices()`` decides what it can run on
(the engine knows its driver state better than sysfs); the hardware profile
adds accelerators that a *missing* runtime would drive, so "there is an NPU
but rknn is not installed" is reported rather than silently ignored. The
profile is read duck-typed (``accelerators[].kind/.name/.targets[].runtime``,
``memory.total_mb``) so a recorded or partial profile works too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import BadRequestError, EdgeAgentError, ResourceExhaustedError, UnavailableError

if TYPE_CHECKING:
    from models.manifest import Manifest, Variant
    from runtimes.base import LoadOptions, Runtime, Session

KINDS = ("npu", "tpu", "gpu", "cpu")
# Why these orders: accelerators quantize-first (NPUs and TPUs run int8 only,
# or best), GPUs like fp16, and on a CPU fp32 is the reference and int8 a
# deliberate trade a policy opts into.
_PRECISION_ORDER = {
    "npu": ("int8", "fp16", "fp32"),
    "tpu": ("int8", "fp16", "fp32"),
    "gpu": ("fp16", "fp32", "int8"),
    "cpu": ("fp32", "int8", "fp16"),
}
_RUNTIME_ORDER = {
    "npu": ("rknn", "openvino", "litert", "onnxruntime"),
    "tpu": ("litert", "onnxruntime", "openvino"),
    "gpu": ("openvino", "onnxruntime", "litert"),
    "cpu": ("onnxruntime", "openvino", "litert"),
}


@dataclass(frozen=True)
class Policy:
    """What an operator may prefer or forbid; empty tuples mean the per-device defaults."""

    device_order: tuple[str, ...] = KINDS
    forbid_devices: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    forbid_precisions: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    forbid_runtimes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for kind in (*self.device_order, *self.forbid_devices):
            if kind not in KINDS:
                raise BadRequestError(f"policy names device kind {kind!r}; use one of {list(KINDS)}")

    def precision_rank(self, kind: str, precision: str) -> int:
        order = self.precisions or _PRECISION_ORDER.get(kind, ())
        return order.index(precision) if precision in order else len(order)

    def runtime_rank(self, kind: str, runtime: str) -> int:
        order = self.runtimes or _RUNTIME_ORDER.get(kind, ())
        return order.index(runtime) if runtime in order else len(order)

    def kind_rank(self, kind: str) -> int:
        return self.device_order.index(kind) if kind in self.device_order else len(self.device_order)


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Candidate:
    variant: Variant
    runtime: str
    device: str
    kind: str

    @property
    def label(self) -> str:
        return f"{self.variant.label}@{self.device}"


@dataclass(frozen=True)
class Skip:
    """One option not taken.

    ``category``: engine_missing | device_absent | variant_absent | policy | load_failed.
    """

    what: str
    category: str
    reason: str
    extra: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"what": self.what, "category": self.category, "reason": self.reason}
        if self.extra:
            out["extra"] = self.extra
        return out

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass(frozen=True)
class Choice:
    """The ranked chain to try, best first, and everything that was passed over."""

    candidates: tuple[Candidate, ...]
    skipped: tuple[Skip, ...]

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]

    @property
    def missing_extras(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.extra for s in self.skipped if s.extra))

    def unavailable(self, manifest: Manifest) -> UnavailableError:
        """The error for "runs nowhere here": every reason, and the extras that would fix it."""
        extras = self.missing_extras
        hint = f" Install: pip install 'edge-agent[{','.join(extras)}]'." if extras else ""
        reasons = "; ".join(str(s) for s in self.skipped) or "the manifest lists no variant"
        return UnavailableError(
            f"model {manifest.name} {manifest.version} cannot run here: {reasons}.{hint}", code="no_runtime"
        )

    def explain(self) -> str:
        chain = " → ".join(c.label for c in self.candidates) or "nothing"
        skipped = "; ".join(str(s) for s in self.skipped)
        return f"chain: {chain}" + (f"; skipped: {skipped}" if skipped else "")


@dataclass(frozen=True)
class Loaded:
    session: Session
    candidate: Candidate
    failures: tuple[Skip, ...]


def default_runtimes() -> dict[str, Runtime]:
    """Every registered adapter, by name (imported lazily: the registry imports no engine)."""
    from runtimes import registry

    found = registry.all_runtimes()
    if isinstance(found, Mapping):
        return dict(found)
    return {rt.name: rt for rt in found}


def _profile_targets(profile: Any) -> list[tuple[str, str, str, str]]:
    """(kind, accelerator name, runtime, device) for every accelerator target the profile lists."""
    out = []
    for acc in getattr(profile, "accelerators", ()) or ():
        kind = getattr(acc, "kind", "")
        name = getattr(acc, "name", "") or kind
        for target in getattr(acc, "targets", ()) or ():
            out.append((kind, name, getattr(target, "runtime", ""), getattr(target, "device", "")))
    return out


def rank(
    manifest: Manifest,
    profile: Any = None,
    policy: Policy = DEFAULT_POLICY,
    runtimes: Mapping[str, Runtime] | None = None,
) -> Choice:
    """Rank where ``manifest`` can run; never raises for "nowhere" (``candidates`` is then empty).

    May import engines (``available()``): call it off the event loop.
    """
    rts = default_runtimes() if runtimes is None else runtimes
    targets = _profile_targets(profile)
    candidates: list[Candidate] = []
    skipped: list[Skip] = []
    device_cache: dict[str, list[Any]] = {}

    for variant in manifest.variants:
        label = variant.label
        if variant.runtime in policy.forbid_runtimes:
            skipped.append(Skip(label, "policy", f"runtime {variant.runtime} is forbidden by policy"))
            continue
        if variant.precision in policy.forbid_precisions:
            skipped.append(Skip(label, "policy", f"precision {variant.precision} is forbidden by policy"))
            continue
        rt = rts.get(variant.runtime)
        if rt is None:
            skipped.append(
                Skip(label, "engine_missing", f"no {variant.runtime!r} runtime adapter is registered")
            )
            continue
        if not rt.available():
            skipped.append(Skip(label, "engine_missing", rt.missing_reason(), extra=rt.extra))
            continue
        suffix = Path(variant.model_file).suffix.lower()
        if rt.suffixes and suffix not in rt.suffixes:
            skipped.append(
                Skip(
                    label,
                    "variant_absent",
                    f"{variant.runtime} loads {list(rt.suffixes)}, not {suffix} files",
                )
            )
            continue
        if variant.runtime not in device_cache:
            device_cache[variant.runtime] = list(rt.devices())
        devices = device_cache[variant.runtime]
        if not devices:
            skipped.append(Skip(label, "device_absent", f"{variant.runtime} reports no usable device"))
        listed = {d.device for d in devices}
        for kind, acc_name, runtime, device in targets:
            if runtime == variant.runtime and device not in listed and kind not in policy.forbid_devices:
                skipped.append(
                    Skip(
                        f"{label}@{device}",
                        "device_absent",
                        f"the box has {kind} {acc_name!r} but {runtime} does not list {device} "
                        "(driver or plugin missing?)",
                    )
                )
        for dev in devices:
            what = f"{label}@{dev.device}"
            if dev.kind in policy.forbid_devices:
                skipped.append(Skip(what, "policy", f"{dev.kind} devices are forbidden by policy"))
            elif variant.devices and dev.kind not in variant.devices:
                skipped.append(Skip(what, "policy", f"the variant is meant for {list(variant.devices)}"))
            else:
                candidates.append(Candidate(variant, variant.runtime, dev.device, dev.kind))

    # accelerators the box has that no variant can use: say so (a missing NPU model is worth knowing)
    usable_runtimes = {v.runtime for v in manifest.variants}
    for kind, acc_name, runtime, device in targets:
        if kind != "cpu" and kind not in policy.forbid_devices and runtime not in usable_runtimes:
            rt = rts.get(runtime)
            note = f"; {rt.missing_reason()}" if rt is not None and not rt.available() else ""
            skipped.append(
                Skip(
                    f"{runtime}@{device}",
                    "variant_absent",
                    f"the box has {kind} {acc_name!r}, but the manifest has no {runtime} variant{note}",
                )
            )
    seen_kinds = {t[0] for t in targets} | {d.kind for devs in device_cache.values() for d in devs}
    for kind in policy.device_order:
        if kind not in seen_kinds and kind not in policy.forbid_devices:
            skipped.append(Skip(kind, "device_absent", f"no {kind} on this box"))

    candidates.sort(
        key=lambda c: (
            policy.kind_rank(c.kind),
            policy.precision_rank(c.kind, c.variant.precision),
            policy.runtime_rank(c.kind, c.runtime),
            c.device,
        )
    )
    return Choice(tuple(candidates), tuple(skipped))


def choose(
    manifest: Manifest,
    profile: Any = None,
    policy: Policy = DEFAULT_POLICY,
    runtimes: Mapping[str, Runtime] | None = None,
) -> Choice:
    """Rank where ``manifest`` can run; raise when it cannot run here at all.

    ResourceExhaustedError when the model needs more memory than the box has
    in all; UnavailableError, naming every reason and the extras to install,
    when no variant has a usable engine and device.
    """
    memory = getattr(getattr(profile, "memory", None), "total_mb", 0) or 0
    if memory and manifest.memory_bytes > memory * 1024 * 1024:
        raise ResourceExhaustedError(
            f"model {manifest.name} {manifest.version} needs {manifest.memory_bytes // (1 << 20)} MiB; "
            f"this box has {memory} MiB in all",
            code="memory_total",
        )
    choice = rank(manifest, profile, policy, runtimes)
    if not choice.candidates:
        raise choice.unavailable(manifest)
    return choice


def load_with_fallback(
    choice: Choice,
    model_dir: Path,
    options: LoadOptions,
    runtimes: Mapping[str, Runtime] | None = None,
    check: Callable[[Session, Candidate], None] | None = None,
) -> Loaded:
    """Try each candidate in order; ``check`` (e.g. the smoke test) may reject a loaded session.

    Every failure is recorded; only when all fail is UnavailableError raised,
    naming each attempt and why it failed.
    """
    rts = default_runtimes() if runtimes is None else runtimes
    failures: list[Skip] = []
    for cand in choice.candidates:
        rt = rts[cand.runtime]
        try:
            session = rt.load(Path(model_dir) / cand.variant.model_file, cand.device, options)
        except (EdgeAgentError, OSError, RuntimeError, ValueError) as exc:
            failures.append(Skip(cand.label, "load_failed", f"{type(exc).__name__}: {exc}"))
            continue
        if check is not None:
            try:
                check(session, cand)
            except Exception as exc:  # a check failing for any reason means: do not use this session
                session.close()
                failures.append(Skip(cand.label, "load_failed", f"check failed: {exc}"))
                continue
        return Loaded(session, cand, tuple(failures))
    raise UnavailableError(
        "every way to load the model failed: " + "; ".join(str(f) for f in failures), code="load_failed"
    )
