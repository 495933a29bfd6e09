"""Vehicle intents: a data file of patterns with typed slots, matched without the LLM.

Matching is whole-utterance and deterministic (compiled regular
expressions over the normalised transcript): a command the rules know
answers in milliseconds, with no model in the loop, and does exactly the
same thing every time — the LLM handles only the rest. The built-in file is
``data/vehicle_intents.toml``; ``voice.intents_file`` adds or replaces
intents with the same schema. The LLM's tool calls are mapped onto the same
intents (``from_tool_call``), so both paths end in the same IntentRecognized
event that the rest of the daemon acts on.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from agent.errors import ConfigError
from agent.voice.events import VoiceEvent
from agent.voice.postprocess import normalize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN = Path(__file__).parent / "data" / "vehicle_intents.toml"
_POLITE_PREFIX = r"(?:(?:please|hey|okay|ok|so|um|uh|and|can you|could you|would you|will you|i want to|i'd like to|i would like to|i want you to|let's)\s+)*"
_POLITE_SUFFIX = r"(?:\s+(?:please|now|for me|thanks|thank you))*"


@dataclass(frozen=True, kw_only=True)
class IntentRecognized(VoiceEvent):
    """A command understood: ``source`` is "rules" or "llm"; other services act on it."""

    type: ClassVar[str] = "voice.intent"
    name: str = ""
    slots: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    answer: str = ""
    intent_source: str = "rules"


@dataclass(frozen=True)
class SlotSpec:
    name: str
    type: str  # number | text | enum (or a named slot type resolved to enum)
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    say: Mapping[str, str] = field(default_factory=dict)
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    out_of_range: str = ""

    def regex(self) -> str:
        if self.type == "number":
            return r"-?\d+(?:\.\d+)?"
        if self.type == "text":
            return r".+?"
        words = sorted(
            {normalize(s) for syns in self.values.values() for s in syns} | set(self.values),
            key=len,
            reverse=True,
        )
        return "(?:" + "|".join(re.escape(w) for w in words if w) + ")"

    def convert(self, raw: str) -> Any:
        if self.type == "number":
            value = float(raw)
            return int(value) if value.is_integer() else value
        if self.type == "text":
            return raw.strip()
        raw = normalize(raw)
        for canonical, syns in self.values.items():
            if raw == normalize(canonical) or raw in {normalize(s) for s in syns}:
                return canonical
        return raw

    def in_range(self, value: Any) -> bool:
        if self.type != "number":
            return True
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )


@dataclass(frozen=True)
class Intent:
    name: str
    description: str
    patterns: tuple[str, ...]
    answer: str
    slots: Mapping[str, SlotSpec]
    compiled: tuple[re.Pattern[str], ...] = ()

    def tool_signature(self) -> str:
        args = ", ".join(
            f"{s.name}: {s.type if s.type in ('number', 'text') else '|'.join(s.values)}"
            for s in self.slots.values()
        )
        return f"{self.name}({args})"


@dataclass(frozen=True)
class IntentMatch:
    name: str
    slots: dict[str, Any]
    answer: str
    text: str
    source: str = "rules"
    in_range: bool = True

    def event(self, stream: str = "") -> IntentRecognized:
        return IntentRecognized(
            source="voice", stream=stream, name=self.name, slots=dict(self.slots), text=self.text,
            answer=self.answer, intent_source=self.source,
        )  # fmt: skip


def compile_pattern(pattern: str, slots: Mapping[str, SlotSpec], where: str) -> re.Pattern[str]:
    """Template → regex: words, (a|b), [optional], {slot}; spaces are flexible."""
    out: list[str] = []
    i = 0
    text = normalize_template(pattern)
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "{":
            end = text.find("}", i)
            name = text[i + 1 : end]
            if end < 0 or name not in slots:
                raise ConfigError(f"{where}: pattern {pattern!r} uses slot {{{name}}}, which is not declared")
            out.append(f"(?P<{name}>{slots[name].regex()})")
            i = end + 1
            continue
        if c == "(":
            out.append("(?:")
            depth += 1
        elif c == ")":
            out.append(")")
            depth -= 1
        elif c == "[":
            out.append("(?:")
            depth += 1
        elif c == "]":
            out.append(r"\s*)?")
            depth -= 1
        elif c == "|":
            out.append("|")
        elif c == " ":
            out.append(r"\s*")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ConfigError(f"{where}: pattern {pattern!r} has unbalanced brackets")
    body = "".join(out)
    try:
        return re.compile(rf"^{_POLITE_PREFIX}{body}{_POLITE_SUFFIX}$")
    except re.error as exc:
        # a slot used twice in one pattern, or a stray bracket
        raise ConfigError(f"{where}: pattern {pattern!r} is invalid ({exc})") from None


def normalize_template(pattern: str) -> str:
    return re.sub(r"\s+", " ", pattern.strip().lower())


class IntentCatalog:
    """The intents, in file order (first match wins; user intents are tried first)."""

    def __init__(self, intents: list[Intent]) -> None:
        self.intents = intents
        self.by_name = {i.name: i for i in intents}

    @classmethod
    def load(cls, extra: str | Path | None = None) -> IntentCatalog:
        builtin = _parse(_read(BUILTIN), str(BUILTIN), {})
        if not extra:
            return cls(builtin)
        doc = _read(Path(extra))
        base_types = _read(BUILTIN).get("slot_types", {})
        user = _parse(doc, str(extra), base_types)
        names = {i.name for i in user}
        return cls(user + [i for i in builtin if i.name not in names])

    def match(self, text: str) -> IntentMatch | None:
        norm = normalize(text)
        if not norm:
            return None
        for intent in self.intents:
            for rx in intent.compiled:
                m = rx.match(norm)
                if m:
                    return self._build(
                        intent, {k: v for k, v in m.groupdict().items() if v is not None}, text, "rules"
                    )
        return None

    def from_tool_call(self, name: str, arguments: Mapping[str, Any], text: str = "") -> IntentMatch | None:
        """An LLM tool call → the same IntentMatch the rules would give; None for an unknown tool."""
        intent = self.by_name.get(name)
        if intent is None:
            return None
        raw = {k: str(v) for k, v in arguments.items() if k in intent.slots and v is not None}
        try:
            return self._build(intent, raw, text, "llm")
        except ValueError:
            return None

    def _build(self, intent: Intent, raw: Mapping[str, str], text: str, source: str) -> IntentMatch:
        slots: dict[str, Any] = {}
        ok = True
        problem = ""
        for name, spec in intent.slots.items():
            if name in raw:
                value = spec.convert(raw[name])
            elif spec.default is not None:
                value = spec.default
            else:
                continue
            if not spec.in_range(value):
                ok = False
                problem = spec.out_of_range or f"{name} is out of range."
            slots[name] = value
        spoken = {k: intent.slots[k].say.get(str(v), v) for k, v in slots.items()}
        answer = problem if not ok else _fill(intent.answer, spoken)
        return IntentMatch(intent.name, slots, answer, text, source, ok)

    def tools_prompt(self) -> str:
        return "\n".join(
            f"- {i.tool_signature()}: {i.description}" for i in self.intents if i.name != "system.stop"
        )


def _fill(template: str, slots: Mapping[str, Any]) -> str:
    def repl(m: re.Match[str]) -> str:
        value = slots.get(m.group(1), "")
        return str(value).replace("_", " ")

    return re.sub(r"{(\w+)}", repl, template)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"intents file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"intents file {path} is not valid TOML: {exc}") from None


def _parse(doc: Mapping[str, Any], where: str, inherited_types: Mapping[str, Any]) -> list[Intent]:
    types = {**inherited_types, **doc.get("slot_types", {})}
    intents = []
    for n, item in enumerate(doc.get("intent", [])):
        at = f"{where}: intent[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{at}: every intent needs a name")
        at = f"{where}: intent {item['name']}"
        patterns = item.get("patterns")
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{at}: patterns must be a non-empty list of strings")
        slots = {name: _slot(name, spec, types, at) for name, spec in (item.get("slots") or {}).items()}
        compiled = tuple(compile_pattern(p, slots, at) for p in patterns)
        intents.append(
            Intent(
                name=item["name"],
                description=str(item.get("description", "")),
                patterns=tuple(patterns),
                answer=str(item.get("answer", "")),
                slots=slots,
                compiled=compiled,
            )
        )
    return intents


def _slot(name: str, spec: Any, types: Mapping[str, Any], at: str) -> SlotSpec:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{at}: slot {name} needs a type (number, text, enum or a slot type)")
    kind = spec["type"]
    values = spec.get("values")
    say = spec.get("say") or {}
    if kind in types:
        values = types[kind].get("values")
        say = {**types[kind].get("say", {}), **say}
        kind = "enum"
    if kind not in ("number", "text", "enum"):
        raise ConfigError(f"{at}: slot {name} has unknown type {kind!r}")
    if kind == "enum":
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{at}: enum slot {name} needs values = {{canonical = [synonyms]}}")
        values = {str(k): tuple(str(s) for s in v) for k, v in values.items()}
    return SlotSpec(
        name=name,
        type=kind,
        values=values or {},
        say={str(k): str(v) for k, v in say.items()},
        minimum=spec.get("min"),
        maximum=spec.get("max"),
        default=spec.get("default"),
        out_of_range=str(spec.get("out_of_range", "")),
    )
