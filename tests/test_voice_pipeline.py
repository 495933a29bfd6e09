"""The whole pipeline on real models: audio in → spoken answer out, barge-in, bounds.

Replies go to a WAV sink; the reply audio is then recognised again by
Whisper, so "the assistant said the right thing" is checked on the sound,
not on a string the code under test handed back. Sinks that must take time
(barge-in) run at playback speed, as a speaker does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from agent.voice.postprocess import word_errors
from agent.voice.sinks import WavSink
from tests import speech
from tests.voice_fixtures import VoiceStack, run_audio, transcribe_wav, voice_stack_fixture  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")


def collect(pipeline) -> list:  # type: ignore[no-untyped-def]
    events: list = []
    pipeline.listeners.append(events.append)
    return events


def of(events: list, kind: str) -> list:
    return [e for e in events if e.type == kind]


async def wait_for_state(pipeline, state: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Until the pipeline announces ``state`` (its own state events, not polling)."""
    reached = asyncio.Event()

    def watch(event) -> None:  # type: ignore[no-untyped-def]
        if event.type == "voice.state" and event.state == state:
            reached.set()

    if pipeline.state == state:
        return
    pipeline.listeners.append(watch)
    try:
        await asyncio.wait_for(reached.wait(), timeout)
    finally:
        pipeline.listeners.remove(watch)


async def wait_for_audio(pipeline, events: list, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Until the reply's audio plays: a ``say`` is "speaking" at once, before its first chunk is synthesised."""
    playing = asyncio.Event()

    def watch(event) -> None:  # type: ignore[no-untyped-def]
        if event.type == "voice.tts.started":
            playing.set()

    if of(events, "voice.tts.started"):
        return
    pipeline.listeners.append(watch)
    try:
        await asyncio.wait_for(playing.wait(), timeout)
    finally:
        pipeline.listeners.remove(watch)


async def feed_realtime(pipeline, pcm: bytes) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, chunk in enumerate(speech.chunks(pcm, 20)):
        delay = t0 + i * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await pipeline.feed(chunk)


async def test_intent_round_trip_from_audio_to_spoken_answer(voice_stack: VoiceStack, tmp_path: Path) -> None:
    sink = WavSink(tmp_path / "reply.wav")
    pipeline = voice_stack.pipeline(sink)
    events = collect(pipeline)
    audio = speech.silence(500) + speech.speak("Okay Nabu") + speech.silence(400)
    audio += speech.speak("Open the passenger window.") + speech.silence(1500)
    async with pipeline:
        await asyncio.wait_for(run_audio(pipeline, audio), 60)
    kinds = [e.type for e in events if e.type != "voice.reply.token"]
    order = [
        "voice.wake.detected",
        "voice.vad.started",
        "voice.vad.stopped",
        "voice.asr.transcript",
        "voice.tts.started",
        "voice.intent",
        "voice.reply",
        "voice.timings",
    ]
    assert [k for k in kinds if k in order] == order
    transcript = of(events, "voice.asr.transcript")[0]
    assert word_errors("Open the passenger window.", transcript.text)[0] <= 1, transcript.text
    intent = of(events, "voice.intent")[0]
    assert (intent.name, intent.slots, intent.intent_source) == (
        "windows.open",
        {"seat": "passenger", "percent": 100},
        "rules",
    )
    reply = of(events, "voice.reply")[0]
    assert reply.answer_source == "intent" and reply.text == "Opening the passenger's window."
    # the spoken answer, heard again
    heard = await voice_stack.engines.asr.transcribe(transcribe_wav(sink.path))
    # Whisper tiny hearing piper's "passenger's" is the weak link of this round trip: once in five full
    # runs under load it heard "pass and your" (3 errors of 4 words); the words that carry the answer
    # must be there (the word error rate is still bounded, at 0.75 instead of 0.25)
    errors, words = word_errors(reply.text, heard)
    assert errors / words <= 0.75 and {"opening", "window"} <= set(heard.lower().replace(".", "").split()), (
        heard
    )
    spans = of(events, "voice.timings")[0].spans_ms
    assert {"speech_end_to_transcript", "speech_end_to_first_audio"} <= set(spans)
    assert 0 < spans["speech_end_to_transcript"] <= spans["speech_end_to_first_audio"]
    assert of(events, "voice.timings")[0].end_of_speech_ms == voice_stack.settings.end_of_speech_ms
    # the live meter: one voice.level per 100 ms of input, louder while the driver speaks
    levels = of(events, "voice.level")
    assert abs(len(levels) - len(audio) // 3200) <= 1
    assert min(lv.rms_dbfs for lv in levels) < -60 < max(lv.rms_dbfs for lv in levels)
    print(f"\nintent round trip: heard {heard!r}; spans {spans}")


async def test_llm_round_trip_streams_tokens_and_keeps_context(
    voice_stack: VoiceStack, tmp_path: Path
) -> None:
    sink = WavSink(tmp_path / "reply.wav")
    pipeline = voice_stack.pipeline(sink, stream="llm-test")
    events = collect(pipeline)
    audio = (
        speech.speak("Okay Nabu")
        + speech.silence(300)
        + speech.speak("What is the capital of France?")
        + speech.silence(1200)
    )
    async with pipeline:
        await asyncio.wait_for(run_audio(pipeline, audio), 90)
        reply = of(events, "voice.reply")[0]
        assert reply.answer_source == "llm" and reply.text
        assert len(of(events, "voice.reply.token")) >= 2  # streamed, not delivered whole
        spans = of(events, "voice.timings")[0].spans_ms
        assert spans["transcript_to_first_token"] > 0 and "first_token_to_first_audio" in spans
        assert sink.path.stat().st_size > 44 + 16000  # some speech was written
        # a typed follow-up in the same conversation sees the first turn
        await asyncio.wait_for(await pipeline.ask("And what about Germany?"), 90)
        history = list(voice_stack.engines.dialogue.llm.history("llm-test"))
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
        assert history[0]["content"].startswith("What is the capital of France")
    print(f"\nLLM: {reply.text!r} then {history[-1]['content']!r}; spans {spans}")


async def test_barge_in_by_wake_word_stops_the_reply_and_listens(
    voice_stack: VoiceStack, tmp_path: Path
) -> None:
    sink = WavSink(tmp_path / "reply.wav", realtime=True)
    pipeline = voice_stack.pipeline(sink, stream="barge")
    events = collect(pipeline)
    long_text = " ".join(
        ["This is a long announcement that keeps going so that there is time to interrupt it."] * 4
    )
    async with pipeline:
        await feed_realtime(pipeline, speech.silence(200))
        await pipeline.say(long_text)
        await wait_for_audio(pipeline, events)  # a loaded machine may take seconds for the first sentence
        await feed_realtime(pipeline, speech.silence(300) + speech.speak("Okay Nabu") + speech.silence(300))
        assert pipeline.state == "listening"
        stopped = of(events, "voice.tts.stopped")
        assert stopped and stopped[0].reason == "barge_in"
        assert stopped[0].played_s < 8  # the full text is ~20 s of speech
        done = of(events, "voice.reply")[0]
        assert done.interrupted and done.by == "wake"
        # and the new command is heard and answered
        await feed_realtime(pipeline, speech.speak("Turn on the air conditioning.") + speech.silence(800))
        await pipeline.end_of_input()
    replies = [e for e in of(events, "voice.reply") if not e.interrupted]
    assert replies[-1].text == "Air conditioning on."


async def test_barge_in_by_saying_stop(voice_stack: VoiceStack, tmp_path: Path) -> None:
    sink = WavSink(tmp_path / "reply.wav", realtime=True)
    pipeline = voice_stack.pipeline(sink, stream="stop")
    events = collect(pipeline)
    async with pipeline:
        await pipeline.say(" ".join(["Here is a very long answer that nobody wants to hear to the end."] * 4))
        await wait_for_audio(pipeline, events)
        await feed_realtime(pipeline, speech.silence(300) + speech.speak("Stop.") + speech.silence(900))
        await wait_for_state(pipeline, "idle", 10)
    done = of(events, "voice.reply")[0]
    assert done.interrupted and done.by == "stop"
    assert of(events, "voice.tts.stopped")[0].played_s < 8


async def test_critical_alert_is_broadcast_and_not_interrupted(
    voice_stack: VoiceStack, tmp_path: Path
) -> None:
    sink = WavSink(tmp_path / "alert.wav", realtime=True)
    pipeline = voice_stack.pipeline(sink, stream="alert")
    events = collect(pipeline)
    async with pipeline:
        task = await pipeline.announce("critical", "pump 3 pressure high")
        await wait_for_state(pipeline, "speaking")
        await feed_realtime(
            pipeline, speech.speak("Okay Nabu") + speech.silence(200)
        )  # ignored: an alert is playing
        await asyncio.wait_for(task, 20)
    assert not [e for e in of(events, "voice.reply") if e.interrupted]
    assert of(events, "voice.reply")[0].text == "Critical: pump 3 pressure high."
    pcm = transcribe_wav(sink.path)
    x = np.frombuffer(pcm[: 16000 * 2 // 4], dtype="<i2").astype(np.float32)  # the first 0.25 s: the chime
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 16000 / x.size - 660) < 20
    heard = await voice_stack.engines.asr.transcribe(pcm)
    # piper's voice is random from run to run and Whisper tiny mishears "pump 3" now and then
    assert "critical" in heard.lower() and word_errors("critical pump 3 pressure high", heard)[0] <= 2, heard


async def test_ten_minutes_of_speech_without_a_pause_is_cut_at_the_bound(voice_stack: VoiceStack) -> None:
    continuous = b"".join(speech.trim(speech.speak(s), 0.01, 0) for s in speech.SENTENCES[:8])
    talk = (continuous * (600 * 32000 // len(continuous) + 1))[: 600 * 32000]  # 10 minutes, no gaps
    pipeline = voice_stack.pipeline(
        None, stream="long", end="transcript", max_utterance_s=8.0, end_of_speech_ms=800
    )
    events = collect(pipeline)
    async with pipeline:
        await asyncio.wait_for(
            run_audio(pipeline, speech.speak("Okay Nabu") + speech.silence(300) + talk, chunk_ms=100), 120
        )
    stops = of(events, "voice.vad.stopped")
    assert stops and stops[0].reason == "max_length"
    transcript = of(events, "voice.asr.transcript")[0]
    assert 7000 <= transcript.audio_ms <= 8400 and len(transcript.text.split()) > 10
    assert pipeline.max_buffered_bytes <= (8.0 + 0.5) * 32000  # memory stayed bounded
    assert pipeline.state == "idle"


async def test_wake_without_speech_times_out(voice_stack: VoiceStack) -> None:
    pipeline = voice_stack.pipeline(None, stream="timeout", listen_timeout_s=1.0)
    events = collect(pipeline)
    async with pipeline:
        await run_audio(pipeline, speech.speak("Okay Nabu") + speech.silence(2500))
    states = [(e.state, e.reason) for e in of(events, "voice.state")]
    assert states == [("listening", "wake"), ("idle", "timeout")]
    assert not of(events, "voice.asr.transcript")


async def test_push_to_talk_silence_gives_no_reply(voice_stack: VoiceStack) -> None:
    pipeline = voice_stack.pipeline(
        None, stream="ptt", start="listen", single_turn=True, listen_timeout_s=1.0
    )
    events = collect(pipeline)
    async with pipeline:
        await run_audio(pipeline, speech.silence(1500))
    assert ("idle", "timeout") in [(e.state, e.reason) for e in of(events, "voice.state")]
    assert pipeline.finished.is_set()


async def test_a_pause_inside_a_command_drops_the_early_decode(voice_stack: VoiceStack) -> None:
    """Decoding starts in a pause (SPECULATE_AFTER_MS); speech going on after it must not be lost."""
    from agent.voice.pipeline import SPECULATE_AFTER_MS

    pipeline = voice_stack.pipeline()
    events = collect(pipeline)
    pause_ms = SPECULATE_AFTER_MS + 200  # long enough to start an early decode, short of end_of_speech_ms
    assert pause_ms < voice_stack.settings.end_of_speech_ms
    audio = (
        speech.silence(300) + speech.speak("Okay Nabu") + speech.silence(300) + speech.speak("Turn on the")
    )
    audio += speech.silence(pause_ms) + speech.speak("air conditioning.") + speech.silence(1200)
    async with pipeline:
        await asyncio.wait_for(run_audio(pipeline, audio, realtime=True), 60)
    assert len(of(events, "voice.vad.stopped")) == 1  # one utterance, the pause inside it
    transcript = of(events, "voice.asr.transcript")[0].text
    assert "conditioning" in transcript.lower(), transcript


async def test_the_answer_is_prepared_in_the_trailing_silence(
    voice_stack: VoiceStack, tmp_path: Path
) -> None:
    """Decoded once the speaker pauses, a rules answer's first audio is begun before the reply asks for it.

    Marks are ms from the end-of-speech decision; the same pipeline with the early decode off starts
    both at the decision. The audio arrives in real time, as a microphone's does.
    """
    audio = speech.silence(300) + speech.speak("Okay Nabu") + speech.silence(300)
    audio += speech.speak("Close all windows.") + speech.silence(1200)
    marks = {}
    for early in (True, False):
        sink = WavSink(tmp_path / f"reply-{early}.wav")
        pipeline = voice_stack.pipeline(sink, stream=f"foresight-{early}", early_decode=early)
        events = collect(pipeline)
        async with pipeline:
            await asyncio.wait_for(run_audio(pipeline, audio, realtime=True), 60)
        reply = of(events, "voice.reply")[0]
        assert reply.answer_source == "intent" and reply.intent == "windows.close", reply
        assert sink.path.stat().st_size > 44 + 8000  # the answer was spoken
        marks[early] = pipeline.last_marks
    ours, late = marks[True], marks[False]
    # early: the synthesis began from the early text, before the reply's dialogue gave its first piece
    # (before the decision when the decode ended in the silence; just after it on a busy machine, where
    # the early decode may even begin after the decision: the loop was behind the audio)
    assert ours["decode_start"] < ours["transcript"] <= ours["first_audio"], ours
    assert ours["tts_start"] < ours["first_token"], ours
    # off: each stage waits for the one before, from the decision on
    assert 0 <= late["decode_start"] <= late["transcript"] <= late["first_token"] <= late["tts_start"], late
    assert late["tts_start"] < late["first_audio"], late


async def test_a_breath_in_the_pause_postpones_the_end_but_is_not_voice() -> None:
    """Between the VAD's lower level and its threshold a frame restarts the pause, not the utterance.

    The early decode is dropped only when voice is heard again (voiced_frames grows), so a breath
    or a click in the trailing silence keeps the text decoded in it.
    """
    from agent.voice.vad import Segmenter

    seg = Segmenter(threshold=0.5, end_of_speech_ms=500)
    assert [seg.update(p) for p in (0.9, 0.9, 0.9)] == [None, None, "start"]
    seg.update(0.8)
    for _ in range(8):
        seg.update(0.05)
    assert (seg.voiced_frames, seg.pause_ms) == (4, 8 * 32)
    seg.update(0.4)  # a breath: above the lower level, below the threshold
    assert (seg.voiced_frames, seg.pause_ms, seg.in_speech) == (4, 0, True)
    seg.update(0.6)  # voice
    assert seg.voiced_frames == 5
    decisions = [seg.update(0.05) for _ in range(seg.end_frames)]
    assert decisions[-1] == "stop:silence" and seg.voiced_frames == 0  # reset for the next utterance
