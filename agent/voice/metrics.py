"""Prometheus metrics of the voice pipeline, defined once at import (see agent.metrics for why).

The latency spans follow one utterance: wake word → end of speech (the VAD's
decision) → transcript → first reply token → first reply audio. The span the
issue targets is ``speech_end_to_first_audio``: what the user waits through.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

LATENCY = Histogram(
    "edge_voice_latency_seconds",
    "Voice pipeline latency by span: wake_to_speech_end, speech_end_to_transcript, "
    "transcript_to_first_token, first_token_to_first_audio, speech_end_to_first_audio, speech_end_to_reply_text; "
    "the stages: decode (the Whisper call whose text was used), tts_first_chunk, tts_ready_to_first_audio.",
    ["span"],
    buckets=_BUCKETS,
)
STAGE_RTF = Histogram(
    "edge_voice_stage_rtf",
    "Real-time factor per stage (processing seconds / audio seconds).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
)
WAKE_DETECTIONS = Counter("edge_voice_wake_detections_total", "Wake word detections.", ["name"])
UTTERANCES = Counter(
    "edge_voice_utterances_total", "Utterances by how they ended (silence, max_length, ...).", ["end"]
)
TURNS = Counter("edge_voice_turns_total", "Dialogue turns by answer source (intent, llm, none).", ["source"])
BARGE_INS = Counter(
    "edge_voice_barge_ins_total", "Replies interrupted by a wake word or a stop word.", ["by"]
)
DROPPED_AUDIO = Counter(
    "edge_voice_audio_dropped_bytes_total", "Input audio dropped because a consumer fell behind.", ["stream"]
)
