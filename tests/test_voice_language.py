"""Text side of the assistant: transcript clean-up, vehicle intents with slots, LLM tool calls → intents."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.voice.intents import IntentCatalog
from agent.voice.llm import looks_like_tool_call, parse_tool_call
from agent.voice.postprocess import (
    PostProcessor,
    Vocabulary,
    normalize,
    trim_punctuation,
    word_errors,
    words_to_numbers,
)
from agent.voice.tts import SentenceSplitter, alert_text, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("set it to twenty two degrees", "set it to 22 degrees"),
        ("twenty-two point five", "22.5"),
        ("one hundred and five", "105"),
        ("two thousand twenty four", "2024"),
        ("call five five five one two", "call 5 5 5 1 2"),
        ("the one on the left", "the one on the left"),
        ("no one is here", "no one is here"),
        ("seven", "7"),
        ("it's often the case", "it's often the case"),
    ],
)
def test_numbers_become_digits(text: str, expected: str) -> None:
    assert words_to_numbers(text) == expected


def test_punctuation_trim_and_normal_form() -> None:
    assert trim_punctuation(" - hello   there ... ") == "hello there."
    assert trim_punctuation("“Open the window,”") == "Open the window"
    assert normalize("Set the temperature to Twenty-Two°, please!") == "set the temperature to 22 please"
    assert normalize("It's 3,000 feet.") == "it's 3000 feet"


def test_user_vocabulary(tmp_path: Path) -> None:
    f = tmp_path / "vocab.txt"
    f.write_text("# fixes\nair con => air conditioning\nhey naboo => okay nabu\nCarla => Karla\n")
    post = PostProcessor(Vocabulary.load(f))
    assert post("Turn on the air con.") == "Turn on the air conditioning."
    assert post("call carla") == "call Karla"
    f.write_text("no arrow here\n")
    with pytest.raises(ConfigError, match="vocab.txt:1: expected 'heard => meant'"):
        Vocabulary.load(f)


def test_word_error_rate_counts_edits() -> None:
    assert word_errors("turn on the radio", "turn on the radio") == (0, 4)
    assert word_errors("turn on the radio", "turn the radio off") == (2, 4)
    assert word_errors("set it to 22 degrees", "set it to twenty two degrees.") == (0, 5)


CASES = [
    (
        "Set the temperature to twenty two degrees.",
        "climate.set_temperature",
        {"temperature": 22},
        "Setting the temperature to 22 degrees.",
    ),
    ("Please turn on the AC.", "climate.air_conditioning", {"state": "on"}, "Air conditioning on."),
    ("Could you turn the air conditioning off", "climate.air_conditioning", {"state": "off"}, None),
    (
        "Open the passenger window.",
        "windows.open",
        {"seat": "passenger", "percent": 100},
        "Opening the passenger's window.",
    ),
    ("open the window fifty percent", "windows.open", {"seat": "driver", "percent": 50}, None),
    ("roll up all windows", "windows.close", {"seat": "all"}, "Closing all windows."),
    ("Navigate to Central Station.", "navigation.navigate", {"destination": "central station"}, None),
    ("take me home", "navigation.home", {}, None),
    ("Call Mom.", "calls.call", {"contact": "mom"}, "Calling mom."),
    ("hang up", "calls.hang_up", {}, None),
    ("Turn the volume up", "media.volume_step", {"direction": "up"}, None),
    ("volume thirty", "media.volume_set", {"level": 30}, "Volume 30."),
    ("Next song please.", "media.next", {}, None),
    ("play the radio", "media.play", {"source": "radio"}, "Playing radio."),
    ("I'm cold", "climate.adjust_temperature", {"feeling": "warmer"}, None),
    (
        "Turn on the passenger seat heating",
        "climate.seat_heating",
        {"state": "on", "seat": "passenger"},
        None,
    ),
    ("Stop.", "system.stop", {}, ""),
]


@pytest.mark.parametrize(("text", "name", "slots", "answer"), CASES)
def test_builtin_vehicle_intents(text: str, name: str, slots: dict, answer: str | None) -> None:
    match = IntentCatalog.load().match(text)
    assert match is not None, text
    assert (match.name, match.slots) == (name, slots)
    if answer is not None:
        assert match.answer == answer


@pytest.mark.parametrize(
    "text", ["What is the capital of France?", "tell me a joke", "", "open", "the temperature"]
)
def test_no_intent_for_other_speech(text: str) -> None:
    assert IntentCatalog.load().match(text) is None


def test_out_of_range_slot_answers_with_the_limits() -> None:
    m = IntentCatalog.load().match("set the temperature to 45 degrees")
    assert m is not None and not m.in_range
    assert m.answer == "I can set the temperature between 16 and 30 degrees."


def test_user_intents_extend_and_override(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(
        """
[[intent]]
name = "lights.ambient"
description = "Ambient light colour"
patterns = ["(set|make) [the] (ambient|cabin) light[s] {colour}"]
answer = "Ambient light {colour}."
slots.colour = { type = "enum", values = { blue = ["blue"], red = ["red", "crimson"] } }

[[intent]]
name = "media.next"
patterns = ["skip ahead"]
answer = "Skipping ahead."

[[intent]]
name = "windows.vent"
patterns = ["vent [the] {seat} window"]
answer = "Venting {seat}."
slots.seat = { type = "seat" }
"""
    )
    cat = IntentCatalog.load(f)
    m = cat.match("set the cabin lights crimson please")
    assert m is not None and (m.name, m.slots, m.answer) == (
        "lights.ambient",
        {"colour": "red"},
        "Ambient light red.",
    )
    assert cat.match("skip ahead").answer == "Skipping ahead."  # type: ignore[union-attr]
    assert cat.match("next song") is None  # the user's media.next replaced the built-in one
    vent = cat.match("vent the rear left window")
    assert vent is not None and vent.slots == {"seat": "rear_left"}  # built-in slot types are inherited
    assert cat.match("turn on the AC") is not None  # built-ins stay


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[intent]]\nname = "x"\npatterns = ["go {where}"]\n', "slot {where}, which is not declared"),
        ('[[intent]]\nname = "x"\npatterns = []\n', "non-empty list"),
        ('[[intent]]\nname = "x"\npatterns = ["(a|b"]\n', "unbalanced"),
        ('[[intent]]\nname = "x"\npatterns = ["a {n}"]\nslots.n = { type = "colour" }\n', "unknown type"),
        ("not toml = = =", "not valid TOML"),
    ],
)
def test_bad_intent_files_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=message):
        IntentCatalog.load(f)


def test_tool_calls_map_onto_the_same_intents() -> None:
    cat = IntentCatalog.load()
    call = '<tool_call>{"name": "climate.set_temperature", "arguments": {"temperature": 21}}</tool_call>'
    m = parse_tool_call(call, cat)
    assert m is not None and (m.name, m.slots, m.source) == (
        "climate.set_temperature",
        {"temperature": 21},
        "llm",
    )
    assert m.answer == "Setting the temperature to 21 degrees."
    bare = parse_tool_call('{"name": "windows.open", "arguments": {"seat": "passenger"}}', cat)
    assert bare is not None and bare.slots["seat"] == "passenger"
    assert parse_tool_call('<tool_call>{"name": "launch.missiles", "arguments": {}}</tool_call>', cat) is None
    assert parse_tool_call("<tool_call>{not json</tool_call>", cat) is None
    assert parse_tool_call("The capital of France is Paris.", cat) is None
    assert looks_like_tool_call("<tool") and looks_like_tool_call(" {") and not looks_like_tool_call("Sure")


def test_sentences_stream_out_of_tokens() -> None:
    s = SentenceSplitter()
    out = []
    for tok in ["The capital", " of France is Paris.", " It is", " lovely! Any", "thing else?"]:
        out += s.feed(tok)
    assert out == ["The capital of France is Paris.", "It is lovely!"]
    assert s.flush() == ["Anything else?"]
    long = SentenceSplitter().feed("word " * 20 + ", and then more")
    assert long and long[0].endswith(",")  # a long clause is spoken without waiting for its full stop
    assert split_sentences("One. Two?\nThree") == ["One.", "Two?", "Three"]
    assert alert_text("CRITICAL", "pump 3 pressure high") == "Critical: pump 3 pressure high."
