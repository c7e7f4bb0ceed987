"""Exports of a trained run (issue 16): every format and quantization meets its parity bar through its own
runtime, the SavedModel is laid out and signed as TensorFlow Serving expects, bad input exits 2 naming the
place, and a missed bar exits 1 leaving no good-looking artifact."""

import fcntl
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mnist_keras.cli import main

TINY_CNN = """
name: tiny
seed: 7
data: {source: bundled, max_train: 1280, validation: 256, batch_size: 64, shuffle: 1000}
model:
  layers: [{conv2d: {filters: 8, kernel_size: 3, activation: relu}}, {max_pool2d: {pool_size: 2}}, flatten,
           {dense: 10}]
train:
  epochs: 2
  optimizer: {type: adam, learning_rate: 0.003}
  tensorboard: {enabled: false}
runtime: {deterministic: true}
"""
DIGITS = [str(digit) for digit in range(10)]


def cli(*args):
    return CliRunner().invoke(main, ["export", *(str(a) for a in args)])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny trained run shared by the module: a conv layer, pooling and a dense head."""
    import mnist_keras as mk

    root = tmp_path_factory.mktemp("export")
    (root / "tiny.yaml").write_text(TINY_CNN)
    return mk.fit(mk.load_spec(root / "tiny.yaml"), runs=root / "runs").path


@pytest.fixture(scope="module")
def test_images(run_dir):
    """The run's raw uint8 test images (N, 28, 28, 1), its labels, and the Keras probabilities of them."""
    import mnist_keras as mk
    from mnist_keras.data import load_arrays
    from mnist_keras.deploy.serving import run_deployable

    spec = mk.open_run(run_dir).spec
    arrays = load_arrays(spec.data, seed=spec.seed)
    images = arrays.x_test[..., np.newaxis]
    return images, arrays.y_test, run_deployable(run_dir).model.predict(images, verbose=0)


def record(folder):
    return json.loads((folder / "export.json").read_text())


EXPORTS = [("savedmodel", None, "1"), ("litert", None, "model.tflite"), ("litert", "float16", "model-float16.tflite"),
           ("litert", "int8", "model-int8.tflite"), ("onnx", None, "model.onnx")]


def export_args(fmt, quantize):
    return ["--format", fmt, *(["--quantize", quantize] if quantize else [])]


@pytest.mark.parametrize("fmt, quantize, artifact", EXPORTS)
def test_each_export_meets_its_bar(run_dir, fmt, quantize, artifact):
    result = cli(run_dir, *export_args(fmt, quantize))
    assert result.exit_code == 0, result.output
    folder = run_dir / "export" / "tiny"  # the default --out is RUN_DIR/export
    assert (folder / artifact).exists() and not (folder / f"{artifact}.failed").exists()
    assert (folder / "labels.txt").read_text().splitlines() == DIGITS
    key = f"{fmt}-{quantize}" if quantize else fmt
    entry = record(folder)["formats"][key]
    parity = entry["parity"]
    assert entry["status"] == "ok" and entry["path"] == artifact and parity["images"] == 2000
    if quantize == "int8":
        assert parity["keras_accuracy"] - parity["export_accuracy"] <= 0.005
    else:
        assert parity["agreement"] >= 0.999 and parity["max_probability_difference"] < 1e-2
    assert parity["file_bytes"] > 0 and parity["latency_ms"] > 0
    assert f"top-1 agreement with Keras   {parity['agreement']:.2%}" in result.output
    assert "passed" in result.output and "tensorflow" in entry["versions"]


def test_export_json_describes_every_export(run_dir):
    """One record for all five exports (those of the test above), with the run, shapes and class names."""
    folder = run_dir / "export" / "tiny"
    for fmt, quantize, artifact in EXPORTS:
        if not (folder / artifact).exists():
            assert cli(run_dir, *export_args(fmt, quantize)).exit_code == 0
    found = record(folder)
    assert sorted(found["formats"]) == ["litert", "litert-float16", "litert-int8", "onnx", "savedmodel"]
    assert found["name"] == "tiny" and found["run"] == str(run_dir.resolve()) and found["image_shape"] == [28, 28, 1]
    assert found["class_names"] == DIGITS and found["output"]["shape"] == [None, 10]
    assert not list(folder.glob(".partial-*"))


def test_saved_model_serves_raw_uint8_images(run_dir, test_images, tmp_path):
    from mnist_keras.backend import tf

    assert cli(run_dir, "--out", tmp_path).exit_code == 0
    version = tmp_path / "tiny" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert (spec.name, spec.dtype, spec.shape.as_list()) == ("images", tf.uint8, [None, 28, 28, 1])
    assert list(signature.structured_outputs) == ["probabilities"]
    images, _, keras_probabilities = test_images
    probabilities = signature(images=tf.constant(images[:64]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, keras_probabilities[:64], atol=1e-5)
    # A stock TensorFlow, without this project or Keras' custom objects, serves it too.
    code = ("import numpy as np, tensorflow as tf; s = tf.saved_model.load(%r).signatures['serving_default'];"
            "print(s(images=tf.zeros([2, 28, 28, 1], tf.uint8))['probabilities'].shape)" % str(version))
    stock = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert stock.stdout.strip() == "(2, 10)", stock.stderr[-2000:]


def test_litert_int8_takes_uint8_images_and_computes_in_int8(run_dir):
    from ai_edge_litert.interpreter import Interpreter

    folder = run_dir / "export" / "tiny"
    if not (folder / "model-int8.tflite").exists():
        assert cli(run_dir, "--format", "litert", "--quantize", "int8").exit_code == 0
    interpreter = Interpreter(model_path=str(folder / "model-int8.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    assert runner.get_input_details()["images"]["dtype"] == np.uint8
    assert runner.get_output_details()["probabilities"]["dtype"] == np.float32
    tensors = interpreter.get_tensor_details()
    floats = [t["name"] for t in tensors if t["dtype"] == np.float32]  # the input cast, the probabilities
    assert len(floats) == 2 and "preprocessing" in floats[0], floats
    assert any("conv2d" in t["name"] and len(t["shape"]) == 4 and t["dtype"] == np.int8 for t in tensors)


def test_onnx_names_its_input_and_output(run_dir, test_images, tmp_path):
    import onnxruntime

    assert cli(run_dir, "--format", "onnx", "--out", tmp_path).exit_code == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "tiny" / "model.onnx"), providers=["CPUExecutionProvider"])
    (images_in,), (probabilities_out,) = session.get_inputs(), session.get_outputs()
    assert (images_in.name, images_in.type, images_in.shape) == ("images", "tensor(uint8)", ["batch", 28, 28, 1])
    assert probabilities_out.name == "probabilities"
    images, _, keras_probabilities = test_images
    np.testing.assert_allclose(session.run(None, {"images": images[:5]})[0], keras_probabilities[:5], atol=1e-5)


def test_exporting_again_replaces_that_format_only(run_dir, tmp_path):
    assert cli(run_dir, "--format", "onnx", "--out", tmp_path).exit_code == 0
    assert cli(run_dir, "--format", "litert", "--quantize", "float16", "--out", tmp_path).exit_code == 0
    folder = tmp_path / "tiny"
    onnx_before = (folder / "model.onnx").stat().st_mtime_ns
    first = record(folder)["formats"]["litert-float16"]["exported_at"]
    (folder / "model-float16.tflite").write_bytes(b"stale")
    (folder / ".partial-crashed").mkdir()  # as a crash in the middle of an export leaves it
    assert cli(run_dir, "--format", "litert", "--quantize", "float16", "--out", tmp_path).exit_code == 0
    assert (folder / "model-float16.tflite").read_bytes()[4:8] == b"TFL3"  # rewritten
    assert (folder / "model.onnx").stat().st_mtime_ns == onnx_before and not (folder / ".partial-crashed").exists()
    assert sorted(record(folder)["formats"]) == ["litert-float16", "onnx"] and first


def copy_run(run_dir, tmp_path, name="copy"):
    copy = tmp_path / name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("export"))
    return copy


def test_bad_input_exits_2_naming_the_place(run_dir, tmp_path):
    def refused(*args, says):
        result = cli(*args)
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert says in result.output and "Traceback" not in result.output, result.output

    refused(tmp_path / "nowhere", says=f"{tmp_path / 'nowhere'}: no such run directory")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", says=f"{tmp_path / 'empty'}: not a run directory (no spec.yaml or state.json)")
    refused(run_dir, "--format", "tflite", says="Invalid value for '--format': 'tflite' is not one of")
    refused(run_dir, "--format", "savedmodel", "--quantize", "int8",
            says="--quantize int8: only --format litert is quantized")
    refused(run_dir, "--format", "onnx", "--quantize", "float16", says="--quantize float16: only --format litert")

    unfinished = copy_run(run_dir, tmp_path, "unfinished")
    (unfinished / "model.keras").unlink()
    shutil.rmtree(unfinished / "checkpoints")
    state = json.loads((unfinished / "state.json").read_text())
    (unfinished / "state.json").write_text(json.dumps({**state, "status": "interrupted", "checkpoint": None,
                                                       "best": None}))
    refused(unfinished, says=f"{unfinished}: no model.keras or checkpoint in this run directory")

    regression = copy_run(run_dir, tmp_path, "regression")
    spec = yaml.safe_load((regression / "spec.yaml").read_text())
    spec["model"]["layers"][-1] = {"dense": 1}
    spec["train"]["loss"], spec["data"]["preprocess"]["one_hot"] = "mse", False
    (regression / "spec.yaml").write_text(yaml.safe_dump(spec))
    refused(regression, says=f"{regression}: a regression model (loss mse) gives a value, not class probabilities")

    foreign = tmp_path / "foreign"
    (foreign / "tiny").mkdir(parents=True)
    (foreign / "tiny" / "notes.txt").write_text("mine")
    refused(run_dir, "--out", foreign, says=f"{foreign / 'tiny'}: exists and is not an mnist-keras export")

    other = copy_run(run_dir, tmp_path, "other")
    (other / "export" / "tiny").mkdir(parents=True)
    (other / "export" / "tiny" / "export.json").write_text(json.dumps(
        {"name": "tiny", "run": "/elsewhere", "model": "/elsewhere/model.keras", "model_sha256": "0", "formats": {}}))
    refused(other, says=f"{other / 'export' / 'tiny'}: holds the export of another model (/elsewhere/model.keras)")

    busy = tmp_path / "busy"
    (busy / "tiny").mkdir(parents=True)
    with open(busy / "tiny" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another export in progress holds it
        refused(run_dir, "--out", busy, says=f"{busy / 'tiny'}: another export is writing into this folder")


def test_api_exports_an_unfinished_run_from_its_last_checkpoint(run_dir, tmp_path):
    import mnist_keras as mk

    unfinished = copy_run(run_dir, tmp_path)
    (unfinished / "model.keras").unlink()
    state = json.loads((unfinished / "state.json").read_text())
    (unfinished / "state.json").write_text(json.dumps({**state, "status": "interrupted"}))
    notes = []
    exported = mk.export(mk.open_run(unfinished), "litert", "float16", reporter=mk.Reporter(echo=notes.append))
    assert notes == [f"note: {unfinished} is interrupted, not finished: exporting its last checkpoint "
                     "epoch-0002.keras"]
    assert exported.path == unfinished / "export" / "tiny" / "model-float16.tflite" and exported.parity.passed
    assert record(exported.folder)["model"] == str((unfinished / "checkpoints" / "epoch-0002.keras").resolve())


def test_api_refuses_unknown_format_and_quantization(run_dir):
    import mnist_keras as mk

    with pytest.raises(mk.UserError, match="--format tflite: unknown format; choose one of savedmodel, litert, onnx"):
        mk.export(run_dir, "tflite")
    with pytest.raises(mk.UserError, match="--quantize int4: unknown quantization"):
        mk.export(run_dir, "litert", "int4")


def test_a_missed_bar_exits_1_and_leaves_no_good_artifact(run_dir, tmp_path, monkeypatch):
    from mnist_keras.deploy import parity

    assert cli(run_dir, "--format", "litert", "--out", tmp_path).exit_code == 0
    monkeypatch.setattr(parity, "FLOAT_MIN_AGREEMENT", 1.01)  # no export can agree on 101% of images
    result = cli(run_dir, "--format", "litert", "--out", tmp_path)
    assert result.exit_code == 1, result.output
    folder = tmp_path / "tiny"
    assert "FAILED" in result.output and f"error: {folder / 'model.tflite.failed'}: the litert export missed its " \
                                         "bar (top-1 agreement at least 101.0%)" in result.output
    assert not (folder / "model.tflite").exists() and (folder / "model.tflite.failed").is_file()
    entry = record(folder)["formats"]["litert"]
    assert entry["status"] == "failed" and entry["path"] == "model.tflite.failed" and not entry["parity"]["passed"]
    monkeypatch.undo()
    assert cli(run_dir, "--format", "litert", "--out", tmp_path).exit_code == 0  # a good export clears it
    assert (folder / "model.tflite").is_file() and not (folder / "model.tflite.failed").exists()


def test_a_failing_converter_exits_1_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    from mnist_keras.deploy import export

    def broken(deployable, path):
        path.write_bytes(b"half an onnx file")
        raise RuntimeError("Unsupported op: Foo\ndetails")

    monkeypatch.setattr(export, "write_onnx", broken)
    result = cli(run_dir, "--format", "onnx", "--out", tmp_path)
    assert result.exit_code == 1 and "the onnx converter failed: Unsupported op: Foo" in result.output
    assert "Traceback" not in result.output and "details" not in result.output
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [".lock"]  # no artifact, no scratch folder
