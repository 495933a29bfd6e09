"""Voice commands: ``say``, ``listen``, ``ask``, ``chat``, ``wake`` and ``audio devices``.

Each runs the voice engines in this process (through the same model manager
and packaged models as the daemon), so they work on a box where the daemon
is stopped, and they are how a person checks a microphone, a wake word or a
voice before enabling the assistant. Audio files in, WAV files out; the
microphone and speaker when no file is given (PortAudio, extra 'voice').
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.config import Settings, VoiceSettings, load_settings
from agent.core.output import print_json, print_json_or, print_listing
from agent.errors import BadRequestError, EdgeAgentError


def register(sub: argparse._SubParsersAction) -> None:
    def cmd(name: str, help_text: str, handler: Any, description: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=description)
        c.set_defaults(handler=handler)
        return c

    c = cmd(
        "say", "speak text (to a WAV file or the speaker)", say, "Synthesise text with the configured voice."
    )
    c.add_argument("text", help="what to say")
    c.add_argument("--out", type=Path, help="write a WAV file instead of playing it")
    c.add_argument("--voice", help="piper model name or espeak:<voice> (default: voice.tts_voice)")
    c.add_argument("--speed", type=float, help="speaking rate (1 normal)")
    c.add_argument(
        "--alert", metavar="SEVERITY", help="broadcast as an alert: info, warning, minor, major or critical"
    )

    c = cmd(
        "listen",
        "transcribe speech from a file or the microphone",
        listen,
        "Transcribe a whole file, segment by segment at its pauses (word times in --json), "
        "or one utterance from the microphone.",
    )
    c.add_argument("--input", default="mic", help="WAV/FLAC file, or mic[:<name or index>] (default mic)")
    c.add_argument("--first", action="store_true", help="stop after the first utterance of the file")
    c.add_argument("--engine", choices=["whisper", "vosk"], help="recognizer (default: voice.asr_engine)")
    c.add_argument("--phrases", help="comma-separated phrases to favour")
    c.add_argument("--json", action="store_true", help="print JSON (segments, and word times with whisper)")

    c = cmd(
        "ask",
        "answer a question or command, typed or spoken",
        ask,
        "Run one dialogue turn: through the running daemon when one answers, else with models loaded here.",
    )
    c.add_argument("text", nargs="?", help="the question (or use --input)")
    c.add_argument("--input", help="a WAV/FLAC file with the spoken question")
    c.add_argument("--out", type=Path, help="also write the spoken answer to this WAV file")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--local", action="store_true", help="load the models here even when a daemon runs")

    c = cmd(
        "chat",
        "chat with the local LLM (multi-turn)",
        chat,
        "Chat with the local LLM; an empty line ends. Uses the running daemon's LLM when one answers.",
    )
    c.add_argument("--system", help="system prompt (default: voice.system_prompt)")
    c.add_argument("--local", action="store_true", help="load the model here even when a daemon runs")

    c = cmd("wake", "watch a file or the microphone for wake words", wake, "Print wake word detections.")
    c.add_argument("--input", default="mic", help="WAV/FLAC file, or mic[:<name or index>] (default mic)")
    c.add_argument("--words", help="comma-separated wake words (default: voice.wake_words)")
    c.add_argument(
        "--seconds", type=float, default=0, help="stop after this long on the microphone (0: Ctrl-C)"
    )
    c.add_argument(
        "--json", action="store_true", help='print {"detections": [{"t_s", "phrase", "probability"}]}'
    )

    a = sub.add_parser("audio", help="audio devices", description="Audio devices of this box.")
    asub = a.add_subparsers(dest="audio_command", metavar="ACTION", required=True)
    d = asub.add_parser(
        "devices", help="list microphones and speakers", description="List audio devices (PortAudio)."
    )
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(handler=devices)


# -- helpers ---------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> tuple[Settings, VoiceSettings]:
    from agent.voice.sources import quiet_audio_noise

    quiet_audio_noise()  # the clear error, not the audio libraries' probing noise
    settings = load_settings(args.config)
    return settings, settings.voice


def _manager(settings: Settings, voice: VoiceSettings) -> Any:
    from agent.voice.factory import voice_manager

    return voice_manager(settings.data_path / "models", threads=voice.threads, idle_timeout_s=None)


async def _pipeline_audio(spec: str) -> AsyncIterator[bytes]:
    from agent.voice.resample import Resampler
    from agent.voice.sources import open_source

    source = open_source(spec, realtime=False)
    resampler = None
    try:
        async for raw in source.chunks():
            if resampler is None:
                resampler = Resampler(source.format)
            yield resampler.process(raw)
        if resampler is not None:
            yield resampler.flush()
    finally:
        await source.close()


async def _write_or_play(
    tts: Any, text: str, out: Path | None, speed: float | None, prelude: Any = None
) -> float:
    from agent.voice.sinks import SpeakerSink, WavSink
    from agent.voice.turn import Stamps, one_piece, speak

    sink = WavSink(out) if out else SpeakerSink()

    async def ignore(event: Any) -> None:
        return None

    try:
        _, played = await speak(
            one_piece(text), tts, sink, ignore, "cli", Stamps(), speed=speed, prelude=prelude
        )
    finally:
        await sink.aclose()
    return played


# -- commands --------------------------------------------------------------------------------------


def say(args: argparse.Namespace) -> int:
    from agent.voice.tts import SpeechAudio, alert_text, chime, make_tts

    settings, voice = _settings(args)

    async def run() -> float:
        async with _manager(settings, voice) as manager:
            tts = make_tts(
                manager, args.voice or voice.tts_voice, args.speed or voice.tts_rate, voice.tts_pitch
            )
            await tts.load()
            text, prelude, speed = args.text, None, args.speed
            if args.alert:
                text = alert_text(args.alert, args.text)
                prelude = SpeechAudio(tts.rate, chime(args.alert.lower(), tts.rate), "")
                speed = speed or 0.85
            return await _write_or_play(tts, text, args.out, speed, prelude)

    seconds = asyncio.run(run())
    print(f"{seconds:.2f} s of speech" + (f" written to {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def listen(args: argparse.Namespace) -> int:
    from agent.voice.factory import build_engines, pipeline_config
    from agent.voice.pipeline import VoicePipeline

    settings, voice = _settings(args)
    if args.engine:
        from dataclasses import replace

        voice = replace(voice, asr_engine=args.engine, asr_model="")
    phrases = tuple(p.strip() for p in (args.phrases or "").split(",") if p.strip()) or voice.phrases
    result: dict[str, Any] = {}
    whole_file = not args.input.startswith("mic") and not args.first
    if whole_file and not Path(args.input).is_file():
        raise BadRequestError(f"no such audio file: {args.input} (give a WAV/FLAC file, or mic)")

    async def run() -> None:
        async with _manager(settings, voice) as manager:
            engines = build_engines(manager, voice, llm_available=False)
            if whole_file:
                from agent.voice.transcribe_file import transcribe_file

                result.update(await transcribe_file(args.input, engines, manager, voice, phrases))
                return
            cfg = pipeline_config(voice, start="listen", end="transcript", single_turn=True, phrases=phrases)
            pipeline = VoicePipeline(engines, cfg, stream="cli")

            def keep(event: Any) -> None:
                if event.type == "voice.asr.partial" and sys.stderr.isatty():
                    print(f"\r… {event.text}", end="", file=sys.stderr)
                elif event.type == "voice.asr.transcript":
                    result.update(
                        text=event.text, raw_text=event.raw_text, audio_ms=event.audio_ms, asr_ms=event.asr_ms
                    )

            pipeline.listeners.append(keep)
            async with pipeline:
                await pipeline.run(_pipeline_audio(args.input))

    asyncio.run(run())
    if args.json:
        print_json(result)
    elif whole_file:  # one line per segment; the times are in --json
        for seg in result["segments"]:
            print(seg["text"])
    else:
        print(result.get("text", ""))
    if whole_file and not result.get("segments"):
        print(f"no speech found in {args.input}", file=sys.stderr)
        return 1
    return 0 if result else 1


def ask(args: argparse.Namespace) -> int:
    from agent.voice.dialogue import TurnResult
    from agent.voice.factory import build_engines

    settings, voice = _settings(args)
    if not args.text and not args.input:
        raise BadRequestError("give the question as text or as --input FILE")
    if args.input and not Path(args.input).is_file():
        raise BadRequestError(f"no such audio file: {args.input}")
    out: dict[str, Any] = {}
    if not args.local:
        from agent.cli import voice_remote

        client = voice_remote.daemon_voice(settings, getattr(args, "token", None))
        if client is not None:
            try:
                question = args.text
                if args.input:
                    question = out["transcript"] = voice_remote.transcribe_remote(client, Path(args.input))
                out.update(voice_remote.ask_remote(client, question))
                out.pop("conversation", None)
                if args.out and out["answer"]:
                    voice_remote.speak_remote(client, out["answer"], args.out)
            except EdgeAgentError as exc:
                if exc.code not in voice_remote.NO_VOICE:
                    raise
                voice_remote.note(f"the daemon cannot answer ({exc}); loading the models here")
                out = {}
            else:
                print_json_or(args.json, out, out["answer"])
                return 0

    async def run() -> None:
        async with _manager(settings, voice) as manager:
            engines = build_engines(manager, voice)
            question = args.text
            if args.input:
                from agent.voice.decode import decode_file
                from agent.voice.resample import to_pipeline

                decoded = decode_file(args.input)
                question = engines.postprocess(
                    await engines.asr.transcribe(to_pipeline(decoded.pcm, decoded.format))
                )
                out["transcript"] = question
            result = TurnResult()
            parts = []
            async for piece in engines.dialogue.respond(question, "cli", result):
                parts.append(piece)
                if not args.json:
                    print(piece, end="", flush=True)
            if not args.json:
                print()
            out.update(answer="".join(parts), source=result.source)
            if result.intent is not None:
                out["intent"] = {"name": result.intent.name, "slots": result.intent.slots}
            if args.out and out["answer"]:
                await _write_or_play(engines.tts, out["answer"], args.out, None)

    asyncio.run(run())
    if args.json:
        print_json(out)
    return 0


def chat(args: argparse.Namespace) -> int:
    from agent.voice.llm import LlmChat

    settings, voice = _settings(args)
    if not args.local:
        from agent.cli import voice_remote

        if args.system:
            voice_remote.note("--system: the daemon answers with its own prompt; loading the model here")
        else:
            client = voice_remote.daemon_voice(settings, getattr(args, "token", None))
            if client is not None:
                voice_remote.chat_remote(client, sys.stdin.readline)
                return 0

    async def run() -> None:
        async with _manager(settings, voice) as manager:
            llm = LlmChat(
                manager,
                voice.llm_model,
                system_prompt=args.system or voice.system_prompt,
                max_tokens=voice.llm_max_tokens,
                tools=False,
            )
            loop = asyncio.get_running_loop()
            while True:
                if sys.stdin.isatty():
                    print("> ", end="", flush=True, file=sys.stderr)
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line.strip():
                    return
                async for piece in llm.reply(line.strip(), "cli"):
                    print(piece, end="", flush=True)
                print()

    asyncio.run(run())
    return 0


def wake(args: argparse.Namespace) -> int:
    import time

    from agent.voice.wake import WakeDetector

    settings, voice = _settings(args)
    words = [w.strip() for w in (args.words or "").split(",") if w.strip()] or list(voice.wake_words)
    hits = 0
    found: list[dict[str, Any]] = []

    async def run() -> None:
        nonlocal hits
        async with (
            _manager(settings, voice) as manager,
            WakeDetector(manager, words, threshold=voice.wake_threshold) as det,
        ):
            t0 = time.monotonic()
            async for pcm in _pipeline_audio(args.input):
                for hit in await det.process(pcm):
                    hits += 1
                    found.append(
                        {
                            "t_s": round(hit.timestamp_ms / 1000, 3),
                            "phrase": hit.phrase,
                            "probability": round(hit.probability, 3),
                        }
                    )
                    if not args.json:
                        print(
                            f"{hit.timestamp_ms / 1000:8.2f} s  {hit.phrase}  (p={hit.probability:.2f})",
                            flush=True,
                        )
                if args.seconds and time.monotonic() - t0 > args.seconds:
                    return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    if args.json:
        print_json({"detections": found})
    print(f"{hits} detection(s)", file=sys.stderr)
    return 0


def devices(args: argparse.Namespace) -> int:
    from agent.voice.sources import list_devices, quiet_audio_noise

    quiet_audio_noise()
    print_listing(
        args.json,
        list_devices(),
        lambda d: [d["index"], d["name"], d["inputs"], d["outputs"], d["default_rate"]],
        ["index", "name", "in", "out", "rate"],
        empty="no audio devices (PortAudio sees none)",
    )
    return 0
