"""A whole recording, transcribed segment by segment (``edge-agent listen --input FILE``).

The live pipeline stops at the end of the first utterance: right for a
microphone, wrong for a file, where the user wants everything said. Here the
file is cut at the pauses Silero VAD finds (each segment padded by a short
pre- and post-roll so no syllable is clipped), each segment is recognised on
its own, and the segments come back in order with their times in the file;
with Whisper, each word carries its own start and end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.voice.audio import BYTES_PER_MS
from agent.voice.vad import FRAME_MS, Segmenter, VoiceActivity, VoiceStarted, VoiceStopped

#: audio kept before the VAD's start and after its stop, so soft onsets and endings survive
PREROLL_MS = 300
POSTROLL_MS = 200
#: a file with no pause this long is still cut (Whisper reads at most 30 s at a time)
MAX_SEGMENT_MS = 25_000


async def find_segments(
    manager: Any, pcm: bytes, *, threshold: float, end_of_speech_ms: int, vad_model: str
) -> list[tuple[float, float]]:
    """(start_ms, end_ms) of every stretch of speech in 16 kHz mono s16 ``pcm``."""
    vad = VoiceActivity(
        manager, Segmenter(threshold, end_of_speech_ms, max_utterance_ms=MAX_SEGMENT_MS), "file", vad_model
    )
    total_ms = len(pcm) / BYTES_PER_MS
    step = int(FRAME_MS * BYTES_PER_MS) * 32  # ~1 s per call
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for offset in range(0, len(pcm), step):
        for event in await vad.process(pcm[offset : offset + step]):
            if isinstance(event, VoiceStarted):
                start = event.timestamp_ms
            elif isinstance(event, VoiceStopped) and start is not None:
                spans.append((start, event.timestamp_ms))
                start = None
    if start is not None:
        spans.append((start, total_ms))
    padded = [(max(0.0, s - PREROLL_MS), min(total_ms, e + POSTROLL_MS)) for s, e in spans]
    merged: list[tuple[float, float]] = []
    for s, e in padded:  # padding can make neighbours overlap: one segment then
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


async def transcribe_file(
    path: Path | str,
    engines: Any,
    manager: Any,
    voice: Any,
    phrases: tuple[str, ...] = (),
    *,
    words: bool = True,
) -> dict[str, Any]:
    """``{"text", "segments": [{"start", "end", "text", "words"}], "audio_ms", "asr_ms"}`` for a file."""
    from agent.voice.decode import decode_file
    from agent.voice.resample import to_pipeline

    decoded = decode_file(str(path))
    pcm = to_pipeline(decoded.pcm, decoded.format)
    spans = await find_segments(
        manager,
        pcm,
        threshold=voice.vad_threshold,
        end_of_speech_ms=voice.end_of_speech_ms,
        vad_model=getattr(engines, "vad_model", "silero-vad"),
    )
    t0 = time.perf_counter()
    segments: list[dict[str, Any]] = []
    raw_texts: list[str] = []
    for start_ms, end_ms in spans:
        piece = pcm[int(start_ms * BYTES_PER_MS) // 2 * 2 : int(end_ms * BYTES_PER_MS) // 2 * 2]
        raw, found = await recognise(engines.asr, piece, phrases, words=words)
        text = engines.postprocess(raw)
        if not text.strip():
            continue
        raw_texts.append(raw.strip())
        offset = start_ms / 1000
        segment: dict[str, Any] = {
            "start": round(offset, 3),
            "end": round(end_ms / 1000, 3),
            "text": text.strip(),
        }
        if words:
            segment["words"] = [
                {**w, "start": round(w["start"] + offset, 3), "end": round(w["end"] + offset, 3)}
                for w in found
            ]
        segments.append(segment)
    return {
        "text": " ".join(s["text"] for s in segments),
        "raw_text": " ".join(raw_texts),
        "segments": segments,
        "audio_ms": round(len(pcm) / BYTES_PER_MS, 1),
        "asr_ms": round((time.perf_counter() - t0) * 1000, 1),
        "language": getattr(engines.asr, "language", ""),
    }


async def recognise(
    asr: Any, pcm: bytes, phrases: tuple[str, ...], *, words: bool
) -> tuple[str, list[dict[str, Any]]]:
    """Text of one segment, and its words with times when the engine can give them (Whisper)."""
    if words and hasattr(asr, "transcribe_words"):
        return await asr.transcribe_words(pcm, phrases)
    return await asr.transcribe(pcm, phrases), []
