"""Paths in a spec, the classes the data has, and the one YAML reader, through the command: a real process where it
trains or could hang, in this process (`in_process`) where it stops before training, and one of each kind both ways.

Relative paths in a spec file are inside the file's folder; from --set, --dataset or Python, inside the
current folder; a run records them absolute. data.num_classes, left out, is the number of class folders or
CSV labels. Every YAML file the tool reads has the same limits.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import ROOT, in_process
from hostile import _billion_laughs

import mnist_keras as mk
from mnist_keras.runs.record import RunState, write_state

MODEL3 = "model:\n  layers: [flatten, {dense: 3}]\n"
FORMS = ("mnist or fashion_mnist", "a folder of IDX files", "an .npz file", ".json.gz", "a folder of class folders",
         ".csv of path,label lines")


def mnist_keras(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m mnist_keras ARGS` run in `cwd` (this checkout's code), with a hang guard."""
    return subprocess.run([sys.executable, "-m", "mnist_keras", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def classes(folder: Path, names=("a", "b", "c"), per_class: int = 4) -> Path:
    """A folder of class folders of tiny gray PNGs."""
    for k, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), 40 * k + i).save(folder / name / f"{i}.png")
    return folder


def csv_list(folder: Path, names=("x", "y", "z")) -> Path:
    """`list.csv` of path,label lines over a class folder beside it."""
    classes(folder / "img", names)
    lines = ["path,label"] + [f"img/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
    (folder / "list.csv").write_text("\n".join(lines) + "\n")
    return folder / "list.csv"


def spec_file(folder: Path, data: str, model: str = MODEL3, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"data:\n{data}  image_shape: [8, 8, 1]\n  validation: 0.25\n{model}"
                               "train: {epochs: 1}\n")
    return folder / name


def fake_run(folder: Path, spec_text: str) -> Path:
    """A run directory as `fit` leaves it, as far as reading its spec goes: spec.yaml and state.json."""
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(spec_text)
    write_state(folder, RunState(status="finished", epochs_done=1))
    return folder


# ------------------------------------------------------------------------------------------- paths


def test_a_spec_run_from_elsewhere_reads_its_own_folder_and_the_run_records_absolute_paths(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    classes(project / "digits")
    spec = spec_file(project, "  dataset: digits\n  cache_dir: cache\n")
    elsewhere.mkdir()
    done = mnist_keras("fit", spec, "--runs", "runs", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    run = next((elsewhere / "runs" / "spec").iterdir())
    recorded = yaml.safe_load((run / "spec.yaml").read_text())["data"]
    assert recorded["dataset"] == str(project / "digits") and recorded["cache_dir"] == str(project / "cache")
    assert recorded["num_classes"] == 3
    assert json.loads((run / "state.json").read_text())["data"]["path"] == str((project / "digits").resolve())


def test_set_and_dataset_paths_are_inside_the_current_folder(tmp_path):
    project, here = tmp_path / "project", tmp_path / "here"
    classes(here / "digits")
    spec = spec_file(project, "  dataset: nowhere\n")
    assert in_process("data", "check", spec, "--set", "data.dataset=digits", cwd=here).returncode == 0
    assert in_process("data", "check", spec, "--dataset", "digits", cwd=here).returncode == 0
    refused = in_process("data", "check", spec, "--set", "data.dataset=digits", cwd=project)
    assert refused.returncode == 2 and f"--set data.dataset=digits: data.dataset: {project / 'digits'}: " \
        "no such file or folder" in refused.stderr


def test_a_relative_dataset_is_inside_data_dir_or_the_data_dir_flag(tmp_path):
    project, data, flag = tmp_path / "project", tmp_path / "project" / "data", tmp_path / "flag"
    classes(data / "digits"), classes(flag / "digits", ("p", "q", "r"))
    spec = spec_file(project, "  dataset: digits\n  data_dir: data\n")
    inside = in_process("data", "check", spec, cwd=tmp_path)
    assert inside.returncode == 0 and f"dataset   {data / 'digits'} from folders" in inside.stdout
    flagged = in_process("data", "check", spec, "--data-dir", flag, cwd=tmp_path)
    assert flagged.returncode == 0 and f"{flag / 'digits'} from folders" in flagged.stdout
    assert "\np " in flagged.stdout


def test_a_backbone_run_is_inside_the_spec_folder_and_a_set_one_inside_the_current_folder(tmp_path):
    project = tmp_path / "project"
    fake_run(project / "earlier", "data: {image_shape: [8, 8, 1]}\nmodel:\n  layers: [flatten, {dense: 16}, "
             "{dense: 10}]\n")
    spec = spec_file(project, "  dataset: mnist\n", "model:\n  layers: [{backbone: {run: earlier}}, {dense: 10}]\n")
    assert in_process("validate", spec, cwd=tmp_path).returncode == 0
    refused = in_process("validate", spec, "--set", "model.layers[0].backbone.run=earlier", cwd=tmp_path)
    assert refused.returncode == 2 and f"{tmp_path / 'earlier'} is not a run directory" in refused.stderr


def test_python_api_paths_follow_the_same_rule(tmp_path, monkeypatch):
    project = tmp_path / "project"
    spec = spec_file(project, "  dataset: digits\n", "model:\n  layers: [{backbone: {name: MobileNetV2, weights: "
                     "w.weights.h5}}, {dense: 10}]\n")
    monkeypatch.chdir(tmp_path)
    loaded = mk.load_spec(spec, ["data.cache_dir=c", "data.num_classes=10", "data.image_shape=[32, 32, 3]"])
    assert loaded.data.dataset == str(project / "digits") and loaded.data.cache_dir == str(tmp_path / "c")
    assert loaded.model.layers[0].backbone.weights == str(project / "w.weights.h5")
    built = mk.Spec.model_validate({"data": {"dataset": "d", "data_dir": "data", "num_classes": 10},
                                    "model": {"layers": ["flatten", {"dense": 10}]}})
    assert built.data.dataset == str(tmp_path / "data" / "d") and built.data.data_dir == str(tmp_path / "data")
    assert mk.Spec.model_validate(built.model_dump()) == built  # absolute: the same wherever it is read again


# ------------------------------------------------------------------------------- missing paths


@pytest.mark.parametrize("classes_given", [False, True], ids=["num_classes inferred", "num_classes given"])
@pytest.mark.parametrize("dataset", ["digitz", "list.csv", "arrays.npz", "mnist.json.gz"])
def test_a_missing_dataset_names_the_spec_line_and_every_form(tmp_path, dataset, classes_given):
    project = tmp_path / "project"
    spec = spec_file(project, f"  dataset: {dataset}\n" + "  num_classes: 3\n" * classes_given)
    for command in (["data", "info", spec], ["fit", spec, "--runs", tmp_path / "runs"]):
        done = in_process(*command, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"{spec}:2:3: data.dataset: {project / dataset}: no such file or folder" in done.stderr
        assert all(form in done.stderr for form in FORMS), done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_real_process_ends_each_kind_of_refusal_as_this_process_does(tmp_path):
    """The commands here that stop before training run in this process; `python -m mnist_keras` gives one of each
    kind the same exit code and output: a missing dataset (that fit finds once TensorFlow has loaded), classes that
    do not fit the data, a spec nested too deep, and a data check that passes."""
    project = tmp_path / "project"
    classes(project / "digits")
    missing = spec_file(project, "  dataset: digitz\n  num_classes: 3\n", name="missing.yaml")
    ten = spec_file(project, "  dataset: digits\n  num_classes: 10\n", "model:\n  layers: [flatten, {dense: 10}]\n",
                    name="ten.yaml")
    (tmp_path / "deep.yaml").write_bytes(HOSTILE["too deep"][0])
    for command in (["fit", missing, "--runs", tmp_path / "runs"], ["data", "check", ten], ["validate", "deep.yaml"],
                    ["data", "check", spec_file(project, "  dataset: digits\n")]):
        real, here = mnist_keras(*command, cwd=tmp_path), in_process(*command, cwd=tmp_path)
        assert (real.returncode, real.stdout, real.stderr) == (here.returncode, here.stdout, here.stderr), command
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------- classes


@pytest.mark.parametrize("layout", ["folders", "split-folders", "csv"])
def test_num_classes_is_the_data_s(tmp_path, layout):
    project = tmp_path / "project"
    if layout == "folders":
        dataset = classes(project / "digits")
    elif layout == "split-folders":
        classes(project / "digits" / "train"), classes(project / "digits" / "test", per_class=2)
        dataset = project / "digits"
    else:
        dataset = csv_list(project)
    spec = spec_file(project, f"  dataset: {dataset.name}\n")
    assert in_process("validate", spec, cwd=tmp_path).returncode == 0
    checked = in_process("data", "check", spec, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    default = in_process("data", "check", "--dataset", dataset, cwd=tmp_path)  # no spec: the default model fits
    assert default.returncode == 0, default.stderr


@pytest.mark.parametrize("dataset", ["digits", "list.csv"])
def test_an_output_layer_that_does_not_fit_the_data_names_both_numbers_and_the_classes(tmp_path, dataset):
    project = tmp_path / "project"
    classes(project / "digits") if dataset == "digits" else csv_list(project, ("a", "b", "c"))
    spec = spec_file(project, f"  dataset: {dataset}\n", "model:\n  layers: [flatten, {dense: 10}]\n")
    done = in_process("validate", spec, cwd=tmp_path)
    assert done.returncode == 2 and f"{spec}:6:22: model.layers[1].dense: the model outputs shape (10,), but it " \
        f"must output 3 logits, one per class (data.num_classes is left out, and {project / dataset} has 3 " \
        "classes: a, b, c)" in done.stderr, done.stderr


def test_an_explicit_num_classes_that_does_not_fit_the_data_is_refused_at_its_line(tmp_path):
    project = tmp_path / "project"
    classes(project / "digits")
    spec = spec_file(project, "  dataset: digits\n  num_classes: 10\n", "model:\n  layers: [flatten, {dense: 10}]\n")
    for command in (["data", "check", spec], ["fit", spec, "--runs", tmp_path / "runs"]):
        done = in_process(*command, cwd=tmp_path)
        assert done.returncode == 2 and f"{spec}:3:3: data.num_classes: {project / 'digits'} has 3 classes (a, b, " \
            "c), but data.num_classes is 10" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()


def test_classes_are_counted_without_numpy_or_tensorflow(tmp_path):
    classes(tmp_path / "digits")
    spec = spec_file(tmp_path, "  dataset: digits\n")
    code = ("import sys; from mnist_keras.spec import load_spec; n = load_spec(sys.argv[1]).data.num_classes; "
            "print(n, [m for m in ('numpy', 'tensorflow', 'PIL') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.split() == ["3", "[]"], done.stderr


# ------------------------------------------------------------------------------ validation wording


def test_data_info_says_how_validation_is_chosen(tmp_path):
    classes(tmp_path / "digits")
    drawn = in_process("data", "info", spec_file(tmp_path, "  dataset: digits\n"), cwd=tmp_path)
    assert drawn.returncode == 0 and "validation (drawn per class with seed 42)" in drawn.stdout, drawn.stderr
    last = in_process("data", "info", "--set", "data.source=bundled", cwd=tmp_path)
    assert last.returncode == 0 and "validation (the last training images)" in last.stdout, last.stderr
    assert "held out from the end" not in drawn.stdout + last.stdout


# ---------------------------------------------------------------------------------- YAML limits


HOSTILE = {
    "alias bomb": (_billion_laughs(), "the spec expands to over 20,000 YAML nodes (an alias/anchor bomb?)"),
    "too deep": (b"model: {layers: [flatten, {dense: 10}]}\ndescription: " + b"[" * 40 + b"]" * 40 + b"\n",
                 "nested more than 32 levels deep"),
    "too large": (b"model: {layers: [flatten, {dense: 10}]}\n" + b"#" * 1_000_100 + b"\n",
                  "is too large for a spec (limit 1,000,000)"),
}


def _hostile_case(kind: str, content: bytes, tmp_path: Path) -> tuple[list, str]:
    """(the command, the hostile YAML file it reads, as its messages name it) for one kind of YAML file."""
    if kind in ("spec", "sweep file"):
        name = "spec.yaml" if kind == "spec" else "sweep.yaml"
        (tmp_path / name).write_bytes(content)
        return ["validate" if kind == "spec" else "sweep", name], f"{name}:"
    run = fake_run(tmp_path / "runs" / "earlier" / "20260101-000000", "")
    (run / "spec.yaml").write_bytes(content)
    if kind == "backbone run's spec.yaml":
        spec_file(tmp_path, "  dataset: mnist\n", f"model:\n  layers: [{{backbone: {{run: {run}}}}}, {{dense: 10}}]\n")
        return ["validate", "spec.yaml"], f"{run / 'spec.yaml'}:"
    if kind == "fit of a backbone run":
        spec_file(tmp_path, "  dataset: mnist\n", f"model:\n  layers: [{{backbone: {{run: {run}}}}}, {{dense: 10}}]\n")
        return ["fit", "spec.yaml", "--runs", "new_runs"], f"{run / 'spec.yaml'}:"
    if kind == "resumed run's spec.yaml":
        return ["fit", "--resume", run], f"{run / 'spec.yaml'}:"
    return ["runs", "runs"], f"{Path('runs/earlier/20260101-000000/spec.yaml')}:"  # the runs table


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("kind", ["spec", "sweep file", "backbone run's spec.yaml", "fit of a backbone run",
                                  "resumed run's spec.yaml", "runs table"])
def test_every_yaml_file_has_the_same_limits(tmp_path, kind, hostile):
    content, message = HOSTILE[hostile]
    command, where = _hostile_case(kind, content, tmp_path)
    # an alias bomb in a real process: were the limit gone, expanding it would hang this one
    done = (mnist_keras if hostile == "alias bomb" else in_process)(*command, cwd=tmp_path)
    assert "Traceback" not in done.stderr and where in done.stderr and message in done.stderr, done.stderr
    if kind == "runs table":  # the other runs are listed; this one is unreadable, with the reason
        assert done.returncode == 0 and "unreadable" in done.stdout
    else:
        assert done.returncode == 2
    assert not (tmp_path / "new_runs").exists()
