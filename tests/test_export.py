"""Exports of a trained run (issue 16): every format and quantization meets its parity bar through its own
runtime, the SavedModel is laid out and signed as TensorFlow Serving expects, bad input exits 2 naming the
place, and a missed bar exits 1 leaving no good-looking artifact."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
ROOT = Path(__file__).resolve().parents[1]


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


def test_format_all_exports_everything_into_one_record(run_dir):
    """--format all: the five exports, one record with the run, shapes and class names, and no lock left."""
    result = cli(run_dir, "--format", "all")
    assert result.exit_code == 0, result.output
    folder = run_dir / "export" / "tiny"
    assert [line for line in result.output.splitlines() if line.startswith("exported ")] == [
        f"exported {fmt}-{quantize}: {folder / artifact}" if quantize else f"exported {fmt}: {folder / artifact}"
        for fmt, quantize, artifact in EXPORTS]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["export.json", "labels.txt", *(artifact for _, _, artifact in EXPORTS)])  # no .lock, no scratch folder
    found = record(folder)
    assert sorted(found["formats"]) == ["litert", "litert-float16", "litert-int8", "onnx", "savedmodel"]
    assert found["name"] == "tiny" and found["run"] == str(run_dir.resolve()) and found["image_shape"] == [28, 28, 1]
    assert found["class_names"] == DIGITS and found["output"]["shape"] == [None, 10]
    assert "pending" not in found and all(len(entry["sha256"]) == 64 for entry in found["formats"].values())


def test_format_all_skips_a_format_whose_packages_are_missing(run_dir, tmp_path):
    """In a Python without ai-edge-litert and tf2onnx (imports blocked as Python does: sys.modules[name] = None),
    --format all exports the SavedModel and names what it skipped; --quantize is refused with it."""
    code = ("import sys; sys.modules['ai_edge_litert'] = sys.modules['tf2onnx'] = None; "
            "from mnist_keras.cli import run; sys.argv[1:] = sys.argv[2:]; run()")
    done = subprocess.run([sys.executable, "-c", code, "-", "export", str(run_dir), "--format", "all", "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        "note: --format all skips litert: it needs ai-edge-litert (pip install 'mnist-keras[export]')",
        "note: --format all skips onnx: it needs tf2onnx (pip install 'mnist-keras[export]')"]
    assert done.stdout.startswith(f"exported savedmodel: {tmp_path / 'tiny' / '1'}\n")
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1", "export.json", "labels.txt"]
    result = cli(run_dir, "--format", "all", "--quantize", "int8", "--out", tmp_path)
    assert result.exit_code == 2 and "--quantize int8: not with --format all" in result.output


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
    first = record(folder)["formats"]["litert-float16"]
    assert cli(run_dir, "--format", "litert", "--quantize", "float16", "--out", tmp_path).exit_code == 0
    again = record(folder)["formats"]["litert-float16"]
    assert (folder / "model-float16.tflite").read_bytes()[4:8] == b"TFL3" and again["exported_at"] >= \
        first["exported_at"]
    assert (folder / "model.onnx").stat().st_mtime_ns == onnx_before
    assert sorted(record(folder)["formats"]) == ["litert-float16", "onnx"]


def test_what_a_crashed_export_left_is_recovered(run_dir, tmp_path):
    """export.json names the scratch folder before it exists and the artifact before it is renamed into place,
    so a crash at any point leaves a folder the next export can prove it made: as export.json is then."""
    assert cli(run_dir, "--format", "onnx", "--out", tmp_path).exit_code == 0
    folder = tmp_path / "tiny"
    done = record(folder)
    # Killed after renaming model.onnx into place, before the final export.json: the entry is only `pending`.
    entry = done["formats"].pop("onnx")
    scratch = folder / ".partial-0123456789abcdef"
    (scratch / "1").mkdir(parents=True)  # half a conversion
    (folder / ".partial-crashed").mkdir()  # not named by export.json: not the export's to remove
    (folder / ".lock").touch()  # the empty lock file a killed export leaves
    (folder / "export.json").write_text(json.dumps({**done, "pending": {"scratch": scratch.name, "entry": entry}}))
    result = cli(run_dir, "--format", "onnx", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert not scratch.exists() and (folder / ".partial-crashed").is_dir() and not (folder / ".lock").exists()
    assert sorted(record(folder)["formats"]) == ["onnx"] and "pending" not in record(folder)
    # Killed before anything was put in place: only the scratch folder is named.
    (folder / "export.json").write_text(json.dumps({**record(folder), "pending": {"scratch": scratch.name}}))
    scratch.mkdir()
    assert cli(run_dir, "--format", "savedmodel", "--out", tmp_path).exit_code == 0
    assert not scratch.exists() and sorted(record(folder)["formats"]) == ["onnx", "savedmodel"]


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
    assert not (tmp_path / "tiny").exists()  # no artifact, no scratch folder, no export.json, no lock


def test_a_failure_after_an_export_keeps_the_record_and_removes_the_lock(run_dir, tmp_path, monkeypatch):
    from mnist_keras.deploy import export

    assert cli(run_dir, "--format", "onnx", "--out", tmp_path).exit_code == 0
    folder = tmp_path / "tiny"
    before = (folder / "export.json").read_bytes()
    def interrupted(deployable, path, fit):
        (path / "variables").mkdir(parents=True)
        raise KeyboardInterrupt  # Ctrl-C in the middle of the conversion

    monkeypatch.setattr(export, "write_saved_model", interrupted)
    result = cli(run_dir, "--format", "savedmodel", "--out", tmp_path)
    assert result.exit_code == 130, result.output
    assert (folder / "export.json").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "labels.txt", "model.onnx"]


@pytest.fixture(scope="module")
def template(run_dir, tmp_path_factory):
    """A real SavedModel export of run_dir (OUT/tiny), copied into each hostile folder below."""
    out = tmp_path_factory.mktemp("template")
    assert cli(run_dir, "--out", out).exit_code == 0
    return out / "tiny"


def snapshot(root):
    """Every path under root, not following links: a file's bytes, mode and mtime, a link's target."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if os.path.islink(path):
                found[path] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                found[path] = ("file", Path(path).read_bytes(), info.st_mode, info.st_mtime_ns)
            else:
                found[path] = ("folder" if os.path.isdir(path) else "other", info.st_mode)
    return found


def with_record(setup):
    """`setup` applied to a copy of the real export (export.json, labels.txt, 1/)."""
    def apply(folder, user, template):
        shutil.copytree(template, folder, symlinks=True)
        setup(folder, user)
    return apply


def alone(setup):
    """`setup` applied to a new, empty folder: no export.json."""
    def apply(folder, user, template):
        folder.mkdir()
        setup(folder, user)
    return apply


def user_folder(name):
    def setup(folder, user):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "notes.txt").write_text("the user's own notes\n")
    return setup


def user_file(name):
    def setup(folder, user):
        shutil.rmtree(folder / name, ignore_errors=True)
        (folder / name).write_bytes(b"the user's own bytes\n")
    return setup


def link(name, to="victim.txt"):
    def setup(folder, user):
        if (folder / name).is_dir():
            shutil.copytree(folder / name, user / to)
            shutil.rmtree(folder / name)
        (folder / name).symlink_to(user / to)
    return setup


def foreign_saved_model(folder, user):
    (folder / "1").mkdir(exist_ok=True)
    (folder / "1" / "saved_model.pb").write_bytes(b"another program's SavedModel")
    (folder / "1" / "variables").mkdir(exist_ok=True)


def changed_saved_model(folder, user):
    (folder / "1" / "assets").mkdir(exist_ok=True)
    (folder / "1" / "assets" / "vocabulary.txt").write_text("added by the user\n")


def edit_record(change):
    def setup(folder, user):
        found = record(folder)
        change(found)
        (folder / "export.json").write_text(json.dumps(found))
    return setup


def fifo(name):
    return lambda folder, user: os.mkfifo(folder / name)


LITERT, FLOAT16, INT8, ONNX = ("--format", "litert"), ("--format", "litert", "--quantize", "float16"), \
    ("--format", "litert", "--quantize", "int8"), ("--format", "onnx")
HOSTILE = {  # id: (how OUT/tiny is made, the export's arguments, the path the refusal names)
    "lock link, no record": (alone(link(".lock")), (), ".lock"),
    "lock link": (with_record(link(".lock")), (), ".lock"),
    "lock a user file": (with_record(user_file(".lock")), (), ".lock"),
    "lock a folder": (with_record(user_folder(".lock")), (), ".lock"),
    "lock a fifo": (with_record(fifo(".lock")), (), ".lock"),
    "version folder link": (with_record(link("1", "saved")), (), "1"),
    "version folder link to a missing place": (with_record(lambda f, u: (shutil.rmtree(f / "1"), (f / "1").symlink_to(
        u / "nowhere"))), (), "1"),
    "foreign SavedModel, no record": (alone(foreign_saved_model), (), ""),
    "foreign SavedModel in a recorded folder": (with_record(lambda f, u: (shutil.rmtree(f / "1"),
                                                                         foreign_saved_model(f, u))), (), "1"),
    "foreign SavedModel, record without it": (
        with_record(lambda f, u: (edit_record(lambda r: r["formats"].clear())(f, u))), (), "1"),
    "recorded SavedModel changed": (with_record(changed_saved_model), (), "1"),
    "saved_model.pb replaced": (with_record(user_file("1/saved_model.pb")), (), "1"),
    "export.json link": (with_record(lambda f, u: (shutil.copy(f / "export.json", u / "record.json"),
                                                   (f / "export.json").unlink(),
                                                   (f / "export.json").symlink_to(u / "record.json"))), (), "export.json"),
    "export.json a folder": (with_record(lambda f, u: ((f / "export.json").unlink(), user_folder("export.json")(f, u))),
                             (), "export.json"),
    "export.json a list": (with_record(lambda f, u: (f / "export.json").write_text("[1, 2]")), (), "export.json"),
    "record names a scratch folder outside": (with_record(edit_record(lambda r: r.update(
        pending={"scratch": "../../user"}))), (), "export.json"),
    "record names a path outside": (with_record(edit_record(lambda r: r["formats"]["savedmodel"].update(
        path="../user"))), (), "export.json"),
    "record's path a list": (with_record(edit_record(lambda r: r["formats"]["savedmodel"].update(path=["1"]))), (),
                             "export.json"),
    "record's formats a list": (with_record(edit_record(lambda r: r.update(formats=[]))), (), "export.json"),
    "labels.txt changed": (with_record(user_file("labels.txt")), (), "labels.txt"),
    "labels.txt link": (with_record(lambda f, u: (shutil.copy(f / "labels.txt", u / "labels.txt"),
                                                  (f / "labels.txt").unlink(),
                                                  (f / "labels.txt").symlink_to(u / "labels.txt"))), (), "labels.txt"),
    "export folder link": (lambda f, u, t: (shutil.copytree(t, u / "export"), f.symlink_to(u / "export")), (), ""),
    "export folder a file": (lambda f, u, t: f.write_text("mine"), (), ""),
    "folder model.tflite, no record": (alone(user_folder("model.tflite")), LITERT, ""),
    "folder model.tflite": (with_record(user_folder("model.tflite")), LITERT, "model.tflite"),
    "file model.tflite": (with_record(user_file("model.tflite")), LITERT, "model.tflite"),
    "folder model.tflite.failed": (with_record(user_folder("model.tflite.failed")), LITERT, "model.tflite.failed"),
    "folder model-float16.tflite": (with_record(user_folder("model-float16.tflite")), FLOAT16, "model-float16.tflite"),
    "file model-int8.tflite": (with_record(user_file("model-int8.tflite")), INT8, "model-int8.tflite"),
    "link model.tflite": (with_record(link("model.tflite")), LITERT, "model.tflite"),
    "folder model.onnx": (with_record(user_folder("model.onnx")), ONNX, "model.onnx"),
    "file model.onnx": (with_record(user_file("model.onnx")), ONNX, "model.onnx"),
    "fifo model.onnx": (with_record(fifo("model.onnx")), ONNX, "model.onnx"),
    "file 1.failed": (with_record(user_file("1.failed")), (), "1.failed"),
    "file 1": (with_record(user_file("1")), (), "1"),
}


@pytest.mark.parametrize("setup, args, offender", HOSTILE.values(), ids=HOSTILE)
def test_export_replaces_nothing_it_cannot_prove_it_made(run_dir, template, tmp_path, setup, args, offender):
    """Links, another program's files and the user's own at every name an export writes: exit 2 naming the path,
    and every file under tmp_path (the user's outside OUT included) as it was, to the byte and the mtime."""
    out, user = tmp_path / "out", tmp_path / "user"
    out.mkdir()
    user.mkdir()
    (user / "victim.txt").write_text("the user's file a link points to\n")
    setup(out / "tiny", user, template)
    before = snapshot(tmp_path)
    result = cli(run_dir, "--out", out, *args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    named = out / "tiny" / offender if offender else out / "tiny"
    assert result.output.startswith(f"error: {named}: ") and result.output.count("\n") == 1, result.output
    assert snapshot(tmp_path) == before
