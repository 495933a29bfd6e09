"""Isolation Forest (ours vs scikit-learn), the LSTM autoencoder (numpy vs onnxruntime), the detectors' edges."""

from __future__ import annotations

import numpy as np
import pytest

from agent.sensors.iforest import IsolationForestModel
from agent.sensors.lstm_ae import LstmAutoencoder
from agent.sensors.readings import Validator
from agent.sensors.spec import parse_machine


def test_flat_forest_scores_equal_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.ensemble")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4))
    forest = sklearn.IsolationForest(n_estimators=50, random_state=3).fit(X)
    ours = IsolationForestModel.from_sklearn(forest)
    Y = rng.normal(size=(700, 4)) * 2
    np.testing.assert_allclose(ours.score_samples(Y), forest.score_samples(Y), rtol=0, atol=1e-12)
    # micro-batches give the same scores as one batch
    parts = np.concatenate([ours.score_samples(Y[i : i + 7]) for i in range(0, len(Y), 7)])
    np.testing.assert_array_equal(parts, ours.score_samples(Y))


def test_native_forest_separates_like_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.ensemble")
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 3))
    test = np.vstack([rng.normal(size=(500, 3)), rng.normal(size=(500, 3)) * 3])
    labels = np.r_[np.zeros(500), np.ones(500)]
    ours = roc_auc_score(labels, IsolationForestModel.fit(X, seed=1).anomaly_score(test))
    theirs = roc_auc_score(labels, -sklearn.IsolationForest(random_state=1).fit(X).score_samples(test))
    assert ours > 0.8 and abs(ours - theirs) < 0.03


def test_lstm_autoencoder_gradients_onnx_export_and_learning() -> None:
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    t = np.arange(2400) * 0.1
    load = np.sin(t / 2.0) + 0.2 * rng.normal(size=t.size)
    X = np.c_[load, 2 * load, -load] + 0.1 * rng.normal(size=(t.size, 3))
    ae = LstmAutoencoder(3, hidden=6, window=12, seed=2)
    # analytic gradients agree with finite differences (BPTT through both LSTMs and the repeat)
    W = ae.windows((X[:100] - X.mean(0)) / X.std(0))[:6]
    _, grads = ae._loss_and_grads(W)
    for i, p in enumerate(ae.params()):
        idx = tuple(rng.integers(s) for s in p.shape)
        old = p[idx]
        p[idx] = old + 1e-5
        up, _ = ae._loss_and_grads(W)
        p[idx] = old - 1e-5
        down, _ = ae._loss_and_grads(W)
        p[idx] = old
        assert grads[i][idx] == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-9)
    before = ae._loss_and_grads(ae.windows((X - X.mean(0)) / X.std(0)))[0]
    report = ae.fit(X[:2000], epochs=8)
    assert report.final_loss < before * 0.7
    sess = ort.InferenceSession(ae.to_onnx(), providers=["CPUExecutionProvider"])
    win = ae.windows((X[2000:2100] - ae.mean) / ae.std).astype(np.float32)
    onnx_out = sess.run(None, {"x": win})[0]
    np.testing.assert_allclose(onnx_out, ae.reconstruct(win.astype(np.float64)), atol=1e-4)
    # a broken relation reconstructs worse than normal data
    bad = X[2000:2100].copy()
    bad[:, 1] = -bad[:, 1]
    wbad = ae.windows((bad - ae.mean) / ae.std)
    assert ((ae.reconstruct(wbad) - wbad) ** 2).mean() > 3 * (
        (ae.reconstruct(win.astype(np.float64)) - win) ** 2
    ).mean()


def test_autoencoder_as_a_detector_through_runtimes_and_the_model_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    from agent.sensors.ae_store import StorePublisher, model_name
    from agent.sensors.engine import AeDetector
    from agent.sensors.simulator import Fault, MachineSimulator
    from agent.sensors.spec import parse_machines, sample_machines
    from models.store import ModelStore

    spec = parse_machines(sample_machines())[0]
    spec = type(spec)(**{**spec.__dict__, "ae_epochs": 6, "learn_rows": 1500})
    sim = MachineSimulator(spec, seed=3, faults=[Fault("decorrelate", "current", 170.0, 60.0)])
    _, X, labels = sim.generate(2400)
    store = ModelStore(tmp_path / "models")
    det = AeDetector(spec, StorePublisher(store, tmp_path, "dev-1"))
    det.fit(X[:1500])
    installed = store.get(model_name("press-1"))
    assert (
        installed.version == "1" and installed.active and det.model_path == installed.file_path("model.onnx")
    )
    assert store.verify(model_name("press-1"), "1", []).ok is False  # signed by the device key, not a hub key
    raw, shares = det.raw(X[1500:])
    score = raw[:, 0]
    assert shares[0].shape == (900, 4) and np.isfinite(score).all()
    fault = labels[1500:] >= 0
    assert score[fault].mean() > 2 * score[~fault].mean()
    det.fit(X[:1500])  # a refit is a new version
    assert store.get(model_name("press-1")).version == "2"


def test_validator_rejects_bad_input_and_counts_it() -> None:
    spec = parse_machine("m", {"channels": {"a": {"min": 0, "max": 10}, "b": {}}})
    v = Validator({"m": spec}, max_future_s=5, clock=lambda: 1000.0)
    assert v.row("m", 1.0, {"a": 1, "b": 2}).values == [1.0, 2.0]
    row = v.row("m", 2.0, {"a": float("nan"), "b": "inf"})
    assert row is not None and np.isnan(row.values).all()  # kept as missing values: dropout sees them
    assert v.row("m", 2.5, {"a": 1}).values[0] == 1.0
    row = v.row("m", 3.0, {"a": 11, "b": "x", "zzz": 1})
    assert row is not None and np.isnan(row.values).all()
    assert v.row("m", 2.9, {"a": 1}) is None  # out of order
    assert v.row("m", 1006.0, {"a": 1}) is None  # future
    assert v.row("m", "soon", {"a": 1}) is None
    assert v.row("nope", 5.0, {"a": 1}) is None
    assert v.row("m", 5.0, {"zzz": 1}) is None
    c = v.counts
    assert c["out_of_range"] == 1 and c["not_a_number"] == 3 and c["unknown_channel"] == 2
    assert c["out_of_order"] == 1 and c["future"] == 1 and c["bad_timestamp"] == 1
    assert c["unknown_machine"] == 1 and c["empty"] == 1 and c["accepted"] == 4


def test_detectors_survive_nan_constant_and_tiny_batches() -> None:
    from agent.sensors.engine import MachineEngine

    spec = parse_machine("m", {"channels": ["a", "b", "c"], "learn_rows": 64, "rate_hz": 1.0})
    eng = MachineEngine(spec)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    X[:, 2] = 5.0  # a constant channel
    eng.process(np.arange(64.0), X)
    assert eng.needs_fit
    eng.fit()
    assert eng.phase == "detecting" and not eng.errors
    for i in range(70, 90):
        row = np.array([[np.nan if i % 3 == 0 else rng.normal(), np.inf if i == 80 else 0.0, 5.0]])
        row[~np.isfinite(row)] = np.nan
        s = eng.process(np.array([float(i)]), row)
        assert np.isfinite(s.combined).all()
