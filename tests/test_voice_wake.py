"""Wake words on the real microWakeWord models: hit rate on the configured phrases, false accepts without them.

Hit rate: each phrase spoken by piper at nine speeds (0.8-1.2) and by six
espeak-ng voices at two speeds, between stretches of silence and of
road-like pink noise. (piper runs without its random noise, so every run
hears the same audio and the rates are reproducible.) False accepts: 35 sentences without a wake word
(some with "okay", "hey" and "Jarvis" on their own) and a minute of pink,
white and low noise. Rates are printed; the floors asserted are what these
models reach here (see the issue's report), so a regression in features,
quantisation or state handling fails loudly.
"""

from __future__ import annotations

import pytest

from agent.errors import ResourceExhaustedError
from agent.voice.wake import WakeDetector
from tests import speech
from tests.voice_fixtures import VoiceStack, voice_stack_fixture  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")

PIPER = [("piper", "en-us", s, 0.0) for s in (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2)]
ESPEAK = [("espeak", v, s, 0.0) for v in speech.ESPEAK_VOICES for s in (0.9, 1.1)]


async def _detections(stack: VoiceStack, words: list[str], pcm: bytes) -> list:
    async with WakeDetector(stack.manager, words) as det:
        found = []
        for chunk in speech.chunks(pcm, 30):
            found += await det.process(chunk)
        return found


@pytest.mark.parametrize(
    ("phrase", "word", "variants", "floor"),
    [
        ("Okay Nabu", "okay_nabu", PIPER, 0.85),
        ("Okay Nabu", "okay_nabu", ESPEAK, 0.6),
        ("Hey Jarvis", "hey_jarvis", PIPER, 0.85),
        # espeak's "Jarvis" is not what the model learned: the rate is reported, not held to a floor
        ("Hey Jarvis", "hey_jarvis", ESPEAK, 0.0),
    ],
    ids=["okay_nabu-piper", "okay_nabu-espeak", "hey_jarvis-piper", "hey_jarvis-espeak"],
)
async def test_wake_word_hit_rate(
    voice_stack: VoiceStack, record_property, request, phrase: str, word: str, variants: list, floor: float
) -> None:  # type: ignore[no-untyped-def]
    hits = 0
    for i, (engine, voice, speed, noise_scale) in enumerate(variants):
        said = speech.speak(phrase, engine, voice, speed, noise_scale)
        background = speech.noise(300, -45, seed=i) if i % 2 else speech.silence(300)
        pcm = background + said + speech.silence(700)
        found = await _detections(voice_stack, [word], pcm)
        assert len(found) <= 1  # one utterance of the phrase triggers at most once
        hits += bool(found)
    rate = hits / len(variants)
    label = request.node.callspec.id
    print(f"\nwake hit rate {label}: {hits}/{len(variants)} = {rate:.2f}")
    record_property(f"wake_hit_rate_{label}", round(rate, 3))
    assert rate >= floor


async def test_no_false_accepts_on_speech_and_noise(voice_stack: VoiceStack, record_property) -> None:  # type: ignore[no-untyped-def]
    words = ["okay_nabu", "hey_jarvis"]
    speech_audio = b"".join(
        speech.speak(s, *(("piper", "en-us") if i % 2 else ("espeak", speech.ESPEAK_VOICES[i % 6])))
        + speech.silence(200)
        for i, s in enumerate(speech.NOT_WAKE)
    )
    noise_audio = (
        speech.noise(20_000, -30, seed=1)
        + speech.noise(20_000, -25, seed=2, color="white")
        + speech.noise(20_000, -50, seed=3)
    )
    found_speech = await _detections(voice_stack, words, speech_audio)
    found_noise = await _detections(voice_stack, words, noise_audio)
    minutes = len(speech_audio) / 32000 / 60
    print(
        f"\nfalse accepts: {len(found_speech)} in {minutes:.1f} min of speech ({len(speech.NOT_WAKE)} sentences), {len(found_noise)} in 1 min of noise"
    )
    record_property("wake_false_accepts_speech", len(found_speech))
    record_property("wake_false_accepts_noise", len(found_noise))
    assert found_speech == [] and found_noise == []


async def test_phrase_inside_a_command_and_in_noise(voice_stack: VoiceStack) -> None:
    """The usual way people talk to a car: the wake word run into the command, over road noise."""
    said = speech.speak("Okay Nabu, open the passenger window.")
    pcm = speech.mix(
        speech.silence(500) + said + speech.silence(500), speech.noise(len(said) // 32 + 1000, -35, seed=9)
    )
    found = await _detections(voice_stack, ["okay_nabu", "hey_jarvis"], pcm)
    assert [d.name for d in found] == ["wake-okay-nabu"]
    assert 400 < found[0].timestamp_ms < 500 + len(said) / 32  # within the utterance, in audio time


async def test_each_stream_holds_its_own_sessions_and_the_limit_is_clear(voice_stack: VoiceStack) -> None:
    """Streaming wake models keep state in the interpreter: one session per stream, bounded."""
    manager = voice_stack.manager
    pool = manager.model_status("wake-okay-nabu")["pool_size"]
    said = speech.silence(300) + speech.speak("Okay Nabu") + speech.silence(700)
    detectors = [WakeDetector(manager, ["okay_nabu"], lease_timeout_s=0.3) for _ in range(pool)]
    for d in detectors:
        await d.open()
    try:
        # interleave two streams chunk by chunk: state must not leak between them
        other = speech.speak("The weather is nice today.") + speech.silence(1000)
        hits = [[], []]
        for a, b in zip(speech.chunks(said, 30), speech.chunks(other, 30), strict=False):
            hits[0] += await detectors[0].process(a)
            hits[1] += await detectors[1].process(b)
        assert len(hits[0]) == 1 and hits[1] == []
        with pytest.raises(ResourceExhaustedError, match="raise voice.max_streams"):
            async with WakeDetector(manager, ["okay_nabu"], lease_timeout_s=0.3):
                pass
    finally:
        for d in detectors:
            await d.close()
    status = manager.model_status("wake-okay-nabu")
    assert status["pinned"] and status["refcount"] == 0
