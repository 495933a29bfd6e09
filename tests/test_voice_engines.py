"""Voice engines under the model manager: packaged models, accounting, pinning, eviction, broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import BadRequestError, EdgeAgentError, NotFoundError, ResourceExhaustedError
from agent.voice.catalog import CATALOG, VoiceModelStore, catalog_status, locate
from agent.voice.factory import voice_manager
from models.bundle import make_manifest, write_signed
from models.manifest import Variant
from models.signing import generate_keypair
from models.store import ModelStore
from tests.voice_fixtures import VoiceStack, require_models, voice_stack_fixture  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")
_MB = 1 << 20


async def test_catalog_exposes_installed_packages_with_record_hashes(tmp_path: Path) -> None:
    require_models("silero-vad", "piper-joe-medium")
    store = VoiceModelStore(ModelStore(tmp_path / "models"))
    assert {"silero-vad", "piper-joe-medium"} <= set(store.names())
    m = store.get("piper-joe-medium")
    assert m.active and m.path.is_dir() and m.manifest.variants[0].runtime == "onnxruntime"
    import hashlib

    entry = m.manifest.files[1]  # the small JSON: hash it here and compare with pip's RECORD
    assert hashlib.sha256((m.path / entry.path).read_bytes()).hexdigest() == entry.sha256
    rows = {r["name"]: r for r in catalog_status()}
    assert set(rows) == {c.name for c in CATALOG}
    with pytest.raises(NotFoundError, match="neither installed"):
        store.get("no-such-voice-model")


async def test_every_installed_voice_model_is_accounted_by_the_manager(voice_stack: VoiceStack) -> None:
    status = voice_stack.manager.status()
    loaded = {m["name"]: m for m in status["models"] if m["loaded"]}
    for name, runtime in [
        ("silero-vad", "onnxruntime"),
        ("wake-okay-nabu", "litert"),
        ("whisper-tiny-en", "ctranslate2"),
        ("piper-joe-medium", "onnxruntime"),
        ("smollm2-135m", "llama-cpp"),
    ]:
        assert loaded[name]["runtime"] == runtime
        assert loaded[name]["memory_bytes"] >= locate(name).manifest.memory_bytes  # type: ignore[union-attr]
    assert loaded["silero-vad"]["pinned"] and loaded["wake-okay-nabu"]["pinned"]
    assert not loaded["smollm2-135m"]["pinned"]
    assert status["memory_used_bytes"] >= sum(m["memory_bytes"] for m in loaded.values())


async def test_the_llm_is_evicted_under_memory_pressure_the_wake_word_and_vad_never(tmp_path: Path) -> None:
    require_models()
    manager = voice_manager(None, threads=1, idle_timeout_s=None)
    async with manager:
        await manager.pin("silero-vad")
        await manager.pin("wake-okay-nabu")
        # room for the LLM (220 MiB declared) or Whisper (160 MiB), not both
        manager.budget_bytes = manager.used_bytes() + 300 * _MB
        await manager.load("smollm2-135m")
        await manager.load("whisper-tiny-en")  # 160 MiB more: the LLM (LRU, unpinned) has to go
        assert manager.loaded_names() == ["silero-vad", "wake-okay-nabu", "whisper-tiny-en"]
        out = await manager.infer(
            "smollm2-135m", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        )
        assert out["tokens"] >= 1  # loaded again on demand, evicting Whisper in turn
        assert "whisper-tiny-en" not in manager.loaded_names()
        assert {"silero-vad", "wake-okay-nabu"} <= set(manager.loaded_names())
        async with manager.use("smollm2-135m"):  # a leased model is not evicted either
            with pytest.raises(ResourceExhaustedError, match="smollm2-135m .*in use"):
                await manager.load("whisper-tiny-en")


def install(root: Path, tmp: Path, name: str, files: dict[str, bytes], runtime: str) -> None:
    bundle = tmp / name
    bundle.mkdir()
    for rel, data in files.items():
        (bundle / rel).write_bytes(data)
    key = generate_keypair()
    manifest = make_manifest(
        bundle, name=name, version="1.0.0", task="llm",
        variants=[Variant(runtime, "int8", tuple(files))], memory_bytes=_MB, inputs=(), outputs=(),
    )  # fmt: skip
    write_signed(bundle, manifest, key.private_hex)
    ModelStore(root).install(bundle, [key.public_hex])


async def test_a_truncated_model_fails_to_load_with_what_to_do(tmp_path: Path) -> None:
    require_models("smollm2-135m", "piper-joe-medium")
    gguf = locate("smollm2-135m").path / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[union-attr]
    onnx = locate("piper-joe-medium").path / "en_US-joe-medium.onnx"  # type: ignore[union-attr]
    root = tmp_path / "models"
    install(root, tmp_path, "llm-cut", {"model.gguf": gguf.read_bytes()[: 2 * _MB]}, "llama-cpp")
    install(root, tmp_path, "voice-cut", {"model.onnx": onnx.read_bytes()[: 2 * _MB]}, "onnxruntime")
    manager = voice_manager(root, threads=1, idle_timeout_s=None)
    async with manager:
        with pytest.raises(
            EdgeAgentError, match=r"llm-cut .*cannot run here|cannot load model.gguf.*reinstall"
        ):
            await manager.load("llm-cut")
        with pytest.raises(EdgeAgentError, match="truncated or corrupt"):
            await manager.load("voice-cut")
        assert manager.loaded_names() == []
        assert manager.model_status("llm-cut")["last_error"]


async def test_engine_feeds_are_checked(voice_stack: VoiceStack) -> None:
    with pytest.raises(BadRequestError, match=r"missing \['messages'\]"):
        await voice_stack.manager.infer("smollm2-135m", {"max_tokens": 3})
    with pytest.raises(BadRequestError, match="unknown \\['prompt'\\]"):
        await voice_stack.manager.infer("whisper-tiny-en", {"audio": b"", "prompt": "x"})
