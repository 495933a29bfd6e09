"""Transcript clean-up: numbers as digits, trimmed punctuation, the user's vocabulary.

Why digits: intents match "set the temperature to 22" whether the recognizer
wrote "22" or "twenty-two", and a number read back is spoken correctly by
TTS either way. A lone "one" after a determiner ("the one on the left", "no
one") stays a word. The user vocabulary fixes what the recognizer keeps
mishearing (a contact's name, "air con"), one ``heard => meant`` per line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NOT_AFTER = {"the", "this", "that", "which", "no", "every", "any", "some", "each", "another", "a", "little"}
_WORD_RE = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*|\d+(?:[.,]\d+)?|[^\sA-Za-z\d]+|\s+")


def _number_word(tok: str) -> bool:
    low = tok.lower()
    return (
        low in _UNITS
        or low in _TENS
        or low in _SCALES
        or ("-" in low and all(p in _UNITS or p in _TENS for p in low.split("-")))
    )


def _kind(word: str) -> str:
    last = word.lower().split("-")[-1]
    return "unit" if last in _UNITS else "ten" if last in _TENS else "scale"


def _joins(prev: str, nxt: str) -> bool:
    """Whether ``nxt`` continues the number ending in ``prev`` ("twenty two": yes; "one two": no)."""
    a, b = _kind(prev), _kind(nxt)
    if b == "scale":
        return True
    if a == "ten":
        return b == "unit" and "-" not in prev and _UNITS.get(nxt.lower(), 10) < 10
    return a == "scale"


def _value(words: list[str]) -> int | None:
    total = current = 0
    seen = False
    for w in words:
        for part in w.lower().split("-"):
            if part in _UNITS:
                current += _UNITS[part]
            elif part in _TENS:
                current += _TENS[part]
            elif part == "hundred":
                current = max(current, 1) * 100
            elif part in _SCALES:
                total += max(current, 1) * _SCALES[part]
                current = 0
            else:
                return None
            seen = True
    return total + current if seen else None


def words_to_numbers(text: str) -> str:
    """'set it to twenty two point five degrees' → 'set it to 22.5 degrees'."""
    tokens = _WORD_RE.findall(text)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not _number_word(tok) or tok.lower() in _SCALES or tok.lower() == "oh":
            out.append(tok)
            i += 1
            continue
        # gather number words (allowing single spaces and "and" inside: "one hundred and five")
        words = [tok]
        j = i + 1
        while j + 1 < len(tokens) and tokens[j] == " ":
            nxt = tokens[j + 1]
            if _number_word(nxt) and nxt.lower() != "oh" and _joins(words[-1], nxt):
                words.append(nxt)
                j += 2
            elif (
                nxt.lower() == "and"
                and j + 3 < len(tokens)
                and _number_word(tokens[j + 3])
                and words[-1].lower() in _SCALES
            ):
                j += 2
            else:
                break
        prev = next((t.lower() for t in reversed(out) if t.strip()), "")
        if len(words) == 1 and words[0].lower() == "one" and prev in _NOT_AFTER:
            out.append(tok)
            i += 1
            continue
        value = _value(words)
        text_value = str(value)
        # decimals: "point five", "point two five"
        if j + 1 < len(tokens) and tokens[j] == " " and tokens[j + 1].lower() == "point":
            k = j + 2
            digits = ""
            while (
                k + 1 < len(tokens)
                and tokens[k] == " "
                and tokens[k + 1].lower() in _UNITS
                and _UNITS[tokens[k + 1].lower()] < 10
            ):
                digits += str(_UNITS[tokens[k + 1].lower()])
                k += 2
            if digits:
                text_value += "." + digits
                j = k
        out.append(text_value)
        i = j
    return "".join(out)


def trim_punctuation(text: str) -> str:
    """Collapse whitespace, drop leading punctuation and trailing ellipses/dashes; keep . ? ! at the end."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"^[\s\-–—.,;:…\"'“”]+", "", text)
    text = re.sub(r"[\s\-–—,;:…\"'“”]+$", "", text)
    text = re.sub(r"\.{2,}$", ".", text)
    return re.sub(r"\s+([.?!])$", r"\1", text)


def normalize(text: str) -> str:
    """Lowercase, digits, no punctuation except inside numbers: the form intents and WER use."""
    text = words_to_numbers(text.lower())
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"%", " percent", text)
    text = re.sub(r"(?<!\d)[.](?!\d)|[^\w\s.'-]|(?<=\s)['-]|['-](?=\s|$)", " ", text)
    text = re.sub(r"(?<=\D)\.|\.(?=\D)|\.$", " ", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Vocabulary:
    """``heard => meant`` replacements, whole words, case-insensitive, longest first."""

    rules: tuple[tuple[re.Pattern[str], str], ...] = ()
    source: str = ""

    @classmethod
    def parse(cls, text: str, source: str = "<vocabulary>") -> Vocabulary:
        rules = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=>" not in line:
                raise ConfigError(f"{source}:{n}: expected 'heard => meant', got {line!r}")
            heard, meant = (s.strip() for s in line.split("=>", 1))
            if not heard:
                raise ConfigError(f"{source}:{n}: the heard side is empty")
            rules.append((heard, meant))
        rules.sort(key=lambda r: -len(r[0]))
        compiled = tuple((re.compile(r"\b" + re.escape(h) + r"\b", re.IGNORECASE), m) for h, m in rules)
        return cls(compiled, source)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            return cls.parse(Path(path).read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise ConfigError(f"voice.vocabulary_file {path} cannot be read: {exc.strerror}") from None

    def apply(self, text: str) -> str:
        for pattern, meant in self.rules:
            text = pattern.sub(meant, text)
        return text


@dataclass(frozen=True)
class PostProcessor:
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    numbers: bool = True

    def __call__(self, text: str) -> str:
        text = trim_punctuation(text)
        text = self.vocabulary.apply(text)
        if self.numbers:
            text = words_to_numbers(text)
        return text


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length) on normalised text, for word error rate."""
    ref = normalize(reference).split()
    hyp = normalize(hypothesis).split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)
