"""The report's key-figure table, and the summary paragraph written from it alone.

The table is the only thing the local LLM sees. Every number the model
writes must appear in the table (as written there); a reply with any other
number is regenerated (with another seed), and after ``ATTEMPTS`` failures
the paragraph is the template's. Each sentence carries its source
(``model`` or ``template``) so the rendered report can mark the model's.

The model is the model manager's LLM (SmolLM2 by default), run at BATCH
priority so a voice turn's generation goes first. Without a manager or the
model, the template writes the paragraph: reports never depend on the LLM.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger("edge_agent.reports")

ATTEMPTS = 3
DEFAULT_MODEL = "smollm2-135m"
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
#: the rows the model is given (the first ones of the key table a reader looks at)
MODEL_ROWS = (
    "Window (hours)",
    "Alerts opened",
    "Major alerts",
    "Critical alerts",
    "Median time to acknowledge (s)",
    "Alerts never acknowledged",
)
PROMPT = "You write the two-sentence summary at the top of a factory report, in plain English."
ASK = (
    "Summarise this report table in two short sentences. Use only numbers from the table, exactly as written."
)
#: one worked example (its numbers differ from any real table's on purpose: a copied one is caught)
EXAMPLE = (
    "Window (hours): 8\nAlerts opened: 7\nMajor alerts: 2\nCritical alerts: 0\n"
    "Median time to acknowledge (s): 41.5\nAlerts never acknowledged: 3",
    "In the 8 hours, 7 alerts were opened: 2 Major and 0 Critical. "
    "The median time to acknowledge was 41.5 s, and 3 alerts were never acknowledged.",
)
#: replies longer than this, or with more sentences, are rambling: regenerated
MAX_CHARS = 420
MAX_SENTENCES = 3


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def key_table(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows: the figures a reader looks for first, formatted once for everyone."""
    a, r = report["alerts"], report["alerts"]["response"]
    v, h = report["voice"], report["health"]
    rows: list[tuple[str, Any]] = [
        ("Window (hours)", report["window"]["hours"]),
        ("Alerts opened", a["total"]),
    ]
    rows += [(f"{lv.capitalize()} alerts", n) for lv, n in a["by_level"].items()]
    rows += [
        ("Alerts still open at the end", a["open_at_end"]),
        ("Alerts never acknowledged", r["never_acked"]),
        ("Median time to acknowledge (s)", r["ack_p50_s"]),
        ("90th percentile time to acknowledge (s)", r["ack_p90_s"]),
        ("Median time to clear (s)", r["clear_p50_s"]),
        ("90th percentile time to clear (s)", r["clear_p90_s"]),
    ]
    rows += [(f"Availability of {m} (%)", pct) for m, pct in report["availability_pct"].items()]
    if a["root_causes"]:
        top = a["root_causes"][0]
        rows.append((f"Alerts naming {top['channel']}, the top root-cause channel", top["alerts"]))
    ew = a["early_warnings"]
    rows += [("Early warnings", ew["total"]), ("Early warnings that came true", ew["came_true"])]
    rows += [
        ("Voice turns", v["turns"]),
        ("Voice latency p50 (ms)", v["latency_ms"]["p50"]),
        ("Voice latency p90 (ms)", v["latency_ms"]["p90"]),
        ("Voice latency p99 (ms)", v["latency_ms"]["p99"]),
        ("Hottest temperature (°C)", h["temp_max_c"]),
        ("Time throttled (%)", h["throttled_pct"]),
        ("Peak memory use (%)", h["mem_max_pct"]),
        ("Job runs", report["jobs"]["runs"]),
        ("Failed job runs", report["jobs"]["failed"]),
    ]
    return [(label, _fmt(value)) for label, value in rows]


def table_text(table: list[tuple[str, str]]) -> str:
    return "\n".join(f"{label}: {value}" for label, value in table)


def model_table(table: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rows the model sees (and the only numbers it may write)."""
    return [(label, value) for label, value in table if label in MODEL_ROWS and value != "n/a"]


_LEVEL_WORDS = ("warning", "minor", "major", "critical")
_WORD = re.compile(r"[a-z]+")
_STOP = frozenset({"the", "of", "a", "an", "in", "s", "ms", "was", "were", "and", "to", "at", "by", "with"})


def _stem(word: str) -> str:
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def misplaced_numbers(text: str, table: list[tuple[str, str]]) -> list[str]:
    """Numbers written beside words that no table row holding that number has.

    A cheap attribution check on top of the number check: "answered 5 turns"
    when only "Alerts opened" is 5, or "5 major alerts" when 5 is not the
    Major count. The words around a number (three each side) must share one
    with a row whose value is that number, and a level word right after it
    (Warning, Minor, Major, Critical) must be in that row's label.
    """
    rows: dict[str, list[set[str]]] = {}
    for label, value in table:
        for n in numbers_in(value):
            rows.setdefault(n, []).append({_stem(w) for w in _WORD.findall(label.lower())} - _STOP)
    out = []
    tokens = re.findall(r"[A-Za-z]+|[-+]?\d+(?:,\d{3})*(?:\.\d+)?", text)
    for i, tok in enumerate(tokens):
        if not tok[-1].isdigit():
            continue
        found = numbers_in(tok)
        if not found or found[0] not in rows:
            continue  # a number only a label holds (24 in "24 hours"), or foreign: the number check's job
        near = {_stem(w.lower()) for w in tokens[max(0, i - 3) : i + 4] if not w[-1].isdigit()} - _STOP
        after = [w.lower() for w in tokens[i + 1 : i + 3]]
        level = next((w for w in after if w in _LEVEL_WORDS), None)
        fits = [r for r in rows[found[0]] if r & near and (level is None or level in r)]
        if not fits:
            out.append(tok)
    return out


def rejection(text: str, result: dict[str, Any], table: list[tuple[str, str]]) -> str:
    """Why a generated paragraph cannot be used ("" when it can)."""
    if not text:
        return "empty"
    bad = foreign_numbers(text, table)
    if bad:
        return f"numbers not in the table: {', '.join(bad)}"
    misplaced = misplaced_numbers(text, table)
    if misplaced:
        return f"numbers beside the wrong words: {', '.join(misplaced)}"
    if result.get("finish_reason") == "length" or len(text) > MAX_CHARS:
        return "too long"
    if text.count(":") > 1 or "\n" in text.strip() or text.lstrip().startswith(("{", "*", "-", "|")):
        return "a list or table, not sentences"
    sentences = split_sentences(text)
    if len(sentences) > MAX_SENTENCES or len(set(sentences)) < len(sentences):
        return "too many or repeated sentences"
    return ""


def numbers_in(text: str) -> list[str]:
    """Every number written in ``text``, normalised (thousands commas dropped, no sign, no trailing .0)."""
    out = []
    for raw in _NUMBER.findall(text):
        n = raw.replace(",", "").lstrip("+-")
        if "." in n:
            n = n.rstrip("0").rstrip(".")
        out.append(n)
    return out


def allowed_numbers(table: list[tuple[str, str]]) -> set[str]:
    return {n for label, value in table for n in numbers_in(f"{label} {value}")}


def foreign_numbers(text: str, table: list[tuple[str, str]]) -> list[str]:
    """Numbers in ``text`` that the table does not hold (empty: the text may be used)."""
    allowed = allowed_numbers(table)
    return [n for n in numbers_in(text) if n not in allowed]


def template_sentences(report: dict[str, Any]) -> list[str]:
    a, r, v = report["alerts"], report["alerts"]["response"], report["voice"]
    t = dict(key_table(report))
    hours = t["Window (hours)"]
    levels = ", ".join(f"{t[f'{lv.capitalize()} alerts']} {lv}" for lv in a["by_level"])
    out = [f"In the {hours} hours of this report, {t['Alerts opened']} alerts were opened ({levels})."]
    if r["ack_p50_s"] is not None:
        out.append(
            f"The median time to acknowledge was {t['Median time to acknowledge (s)']} s, and "
            f"{t['Alerts never acknowledged']} alerts were never acknowledged."
        )
    if a["root_causes"]:
        top = a["root_causes"][0]
        out.append(
            f"The channel named most often as a root cause was {top['channel']} ({_fmt(top['alerts'])} alerts)."
        )
    if v["turns"]:
        out.append(
            f"The voice assistant answered {t['Voice turns']} turns, with a median latency of {t['Voice latency p50 (ms)']} ms."
        )
    return out


def split_sentences(text: str) -> list[str]:
    text = " ".join(text.replace("*", "").split())
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


async def write_summary(
    report: dict[str, Any],
    manager: Any = None,
    *,
    model: str = DEFAULT_MODEL,
    seed: int = 0,
    attempts: int = ATTEMPTS,
) -> dict[str, Any]:
    """The paragraph: the model's when it passes the number check, else the template's."""
    table = model_table(key_table(report))
    tried: list[dict[str, Any]] = []
    if manager is not None and table:
        from models.scheduling import Priority

        messages = [
            {"role": "system", "content": PROMPT},
            {"role": "user", "content": f"{EXAMPLE[0]}\n\n{ASK}"},
            {"role": "assistant", "content": EXAMPLE[1]},
            {"role": "user", "content": f"{table_text(table)}\n\n{ASK}"},
        ]
        for i in range(attempts):
            feed = {"messages": messages, "max_tokens": 90, "temperature": 0.3, "seed": seed + i}
            try:
                result = await manager.infer(model, feed, Priority.BATCH)
            except Exception as exc:  # no model, not installed, engine failure: the template writes it
                log.info("report summary falls back to the template: %s", exc)
                tried.append({"error": str(exc)})
                break
            text = " ".join(str(result.get("text", "")).split())
            why = rejection(text, result, table)
            tried.append({"text": text, "rejected": why})
            if not why:
                return {
                    "sentences": [{"text": s, "source": "model"} for s in split_sentences(text)],
                    "model": model,
                    "attempts": tried,
                }
    template = template_sentences(report)
    kept = best_sentences(tried, table)
    if kept:  # the model's sentences that pass on their own, and the template's for what they leave out
        said = {n for s in kept for n in numbers_in(s)}
        rest = [t for t in template if not set(numbers_in(t)) <= said]
        return {
            "sentences": [{"text": s, "source": "model"} for s in kept]
            + [{"text": t, "source": "template"} for t in rest],
            "model": model,
            "attempts": tried,
        }
    return {
        "sentences": [{"text": s, "source": "template"} for s in template],
        "model": None,
        "attempts": tried,
    }


def best_sentences(drafts: list[dict[str, Any]], table: list[tuple[str, str]]) -> list[str]:
    """The most sentences of one rejected draft that pass every check on their own."""
    best: list[str] = []
    for draft in drafts:
        text = draft.get("text") or ""
        if not text or draft.get("rejected", "").startswith(("too long", "a list", "too many")):
            continue
        good = [s for s in split_sentences(text) if not rejection(s, {"finish_reason": "stop"}, table)]
        if len(good) > len(best):
            best = good
    return best
