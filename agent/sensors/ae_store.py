"""Versioning trained autoencoders in the model store (models/), signed with the device key.

A model trained on the box is a model like any other: a bundle with a
manifest (files with sha256, tensors, task), installed through the store's
verified, atomic install, so it can be listed, rolled back and reported to
the hub. Its signature is the device's own key (``agent.security.identity``)
and only that key is trusted for the install: the store never holds an
unsigned model. Versions are 1, 2, 3... per machine (``sensor-ae-<machine>``).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.sensors.spec import MachineSpec


def model_name(machine: str) -> str:
    return "sensor-ae-" + re.sub(r"[^a-z0-9._-]", "-", machine.lower())[:50]


class StorePublisher:
    """``AePublisher`` for the engine: bundle, sign, install, activate; returns the installed ONNX path."""

    def __init__(self, store: Any, data_dir: Path, device_id: str) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.device_id = device_id

    def __call__(self, ae: Any, calibration: dict[str, float], spec: MachineSpec) -> Path:
        from agent.security.identity import load_or_create
        from agent.sensors.lstm_ae import save_bundle
        from models.bundle import make_manifest
        from models.manifest import MANIFEST_FILE, SignedManifest, Variant
        from runtimes.base import TensorSpec

        identity = load_or_create(self.data_dir, self.device_id)
        name = model_name(spec.name)
        existing = (
            [int(v) for v in self.store.versions(name) if v.isdigit()] if name in self.store.names() else []
        )
        version = str(max(existing, default=0) + 1)
        tmp = Path(tempfile.mkdtemp(prefix="edge-ae-bundle-"))
        try:
            files = save_bundle(ae, tmp, calibration)
            manifest = make_manifest(
                tmp,
                name=name,
                version=version,
                task="sensor-anomaly-autoencoder",
                variants=[
                    Variant(runtime="onnxruntime", precision="fp32", files=tuple(files), devices=("cpu",))
                ],
                memory_bytes=16 * 1024 * 1024,
                inputs=[TensorSpec("x", "float32", (None, ae.T, ae.C))],
                outputs=[TensorSpec("recon", "float32", (None, ae.T, ae.C))],
                description=f"LSTM autoencoder trained on {spec.name}'s baseline",
                extra={"machine": spec.name, "channels": list(spec.channel_names), "trained_at": time.time()},
            )
            data = manifest.canonical_bytes()
            signed = SignedManifest(manifest=manifest, signature=identity.sign(data), signed_bytes=data)
            (tmp / MANIFEST_FILE).write_bytes(signed.to_json())
            installed = self.store.install(tmp, [identity.public_hex], activate=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return installed.file_path("model.onnx")
