"""The in-vehicle voice assistant: wake word → VAD → ASR → dialogue → TTS, with barge-in.

One module per concern, as in the Wyoming library: ``audio`` (formats and the
audio events), ``decode`` (WAV/FLAC in), ``resample`` (anything → 16 kHz mono
s16), ``sources`` and ``sinks`` (microphone, files, network; fades, ducking),
``vad``, ``wake``, ``asr``, ``postprocess``, ``intents`` (+ ``data/``), ``llm``,
``dialogue``, ``tts``, ``turn`` (one streamed reply), ``pipeline`` (the state
machine), ``events``, ``metrics``, ``wyoming_server``, ``service`` and
``factory`` (building it all from ``VoiceSettings``).

Every model is loaded through the model manager (``models.manager``):
``catalog`` shows it the voice models that ship as pip packages, and
``engines`` adapts the engines that are not tensor-in/tensor-out
(faster-whisper, vosk, llama-cpp) to the runtime protocol it loads with.

Nothing here is imported when the daemon starts with voice off, and numpy and
the engines are imported only inside the functions that need them.
"""
