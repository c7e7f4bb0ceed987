"""Issue 18's levers: the precision `auto`, the live progress bar, the one multiply-add of the pixels, the console
script's fast exit and the fixed-cost breakdown."""

import os
import subprocess
import sys

import numpy as np

from conftest import ROOT
from mnist_keras.data.pipeline import pixels
from mnist_keras.spec import Preprocess
from mnist_keras.spec.runtime_section import Runtime


def test_pixels_fold_scale_and_normalize_into_one_affine():
    x = np.arange(256, dtype=np.float32).reshape(16, 16)
    for prep, want in (
        (Preprocess(normalize={"mean": 0.1307, "std": 0.3081}), (x / 255 - 0.1307) / 0.3081),
        (Preprocess(scale=2.0, offset=-1.0), x * 2.0 - 1.0),
    ):
        np.testing.assert_allclose(pixels(x, prep), want, rtol=1e-5, atol=1e-5)
    rgb = np.stack([x, x, x], axis=-1)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(pixels(rgb, Preprocess(normalize="imagenet")), (rgb / 255 - mean) / std, rtol=1e-5,
                               atol=1e-5)


def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    from mnist_keras.train import distribute
    from mnist_keras.train.distribute import Placement, precision_policy

    auto, cpu, gpu = Runtime(mixed_precision="auto"), Placement("cpu"), Placement("gpu:0", on_gpu=True)
    monkeypatch.setattr(distribute, "cpu_has_bfloat16", lambda: True)
    monkeypatch.setattr(distribute, "gpu_has_bfloat16", lambda: False)
    assert precision_policy(auto, cpu) == "mixed_bfloat16" and precision_policy(auto, gpu) == "float32"
    monkeypatch.setattr(distribute, "cpu_has_bfloat16", lambda: False)
    monkeypatch.setattr(distribute, "gpu_has_bfloat16", lambda: True)
    assert precision_policy(auto, cpu) == "float32" and precision_policy(auto, gpu) == "mixed_bfloat16"


def test_cpu_flags_are_read_from_proc_cpuinfo():
    from mnist_keras.train.distribute import cpu_has_bfloat16

    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert cpu_has_bfloat16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_auto_precision_in_float32_adds_no_float32_layer():
    import keras

    from mnist_keras.model.build import build_model
    from mnist_keras.spec.loader import load_spec

    keras.mixed_precision.set_global_policy("float32")
    model = build_model(load_spec(ROOT / "model_specs" / "fast.yaml"))
    assert "float32_logits" not in [layer.name for layer in model.layers]


def test_live_progbar_moves_within_one_execution():
    """steps_per_execution: epoch, and the bar still shows steps before the epoch's one call returns."""
    import keras

    from mnist_keras.train.progress import LiveProgbar

    shown = []

    class Recording(LiveProgbar):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            update = self.progbar.update
            self.progbar.update = lambda current, *a, **k: (shown.append(current), update(current, *a, **k))

    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(512), keras.layers.Dense(512),
                              keras.layers.Dense(1)])
    model.compile("adam", "mse", steps_per_execution=400)
    x = np.random.rand(400 * 32, 256).astype("float32")
    model.fit(x, x[:, :1], batch_size=32, epochs=1, verbose=1, callbacks=[Recording(every=0.02)])
    assert any(0 < step < 400 for step in shown), shown
    assert shown[-1] == 400


def test_console_script_exits_fast_and_keeps_the_exit_code(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; sys.argv = ['mnist-keras', 'validate', sys.argv[1]]; import mnist_keras.backend; " \
           "from mnist_keras.cli import run; run()"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    done = subprocess.run([sys.executable, "-c", code, str(bad)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "error:" in done.stderr
    good = subprocess.run([sys.executable, "-c", code, str(ROOT / "model_specs" / "fast.yaml")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert good.returncode == 0 and good.stdout.startswith("ok: ")
