"""Your own images end to end: a colour class-folder data set trains above chance, the run keeps its class
names, and predict names the class of new files."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_keras.cli import main
from test_folders import photos

SPEC = """
name: photos
seed: 3
data:
  dataset: {folder}
  image_shape: [24, 24, 3]
  num_classes: 2
  test_split: 0.25
  validation: 0.2
  preprocess: {{fit: crop, normalize: imagenet}}
  batch_size: 16
  class_weight: balanced
  cache: {cache}
model:
  layers:
    - random_flip: horizontal
    - conv_pool_stack: {{filters: [8, 16]}}
    - flatten
    - dense: 2
train: {{epochs: 20, optimizer: {{type: adam, learning_rate: 0.003}}, tensorboard: {{enabled: false}}}}
runtime: {{deterministic: true}}
"""


@pytest.mark.parametrize("cache", ["memory", "none", "disk"])
def test_colour_folders_train_and_predict_names_the_class(tmp_path, cache):
    """In memory (decoded once by Pillow, as predict decodes), or streamed from disk every epoch or from a
    disk cache of decoded images in the run's cache/ folder."""
    folder = photos(tmp_path / "photos", per_class=40)
    spec = tmp_path / "photos.yaml"
    spec.write_text(SPEC.format(folder=folder, cache=cache))
    result = CliRunner().invoke(main, ["fit", str(spec), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", result.output).group(1))
    assert accuracy >= 80  # chance is 50%
    (run,) = (tmp_path / "runs/photos").iterdir()
    state = json.loads((run / "state.json").read_text())
    assert state["classes"] == ["china", "flower"] and state["data"]["source"] == "folders"
    assert (run / "cache").is_dir() == (cache == "disk")
    new = tmp_path / "new.png"
    Image.open(folder / "flower" / "rgba.png").save(new)
    predicted = CliRunner().invoke(main, ["predict", str(run), str(new), str(folder / "china" / "1.jpg")])
    assert predicted.exit_code == 0, predicted.output
    assert re.search(rf"{re.escape(str(new))}: (china|flower) \(probability 0\.\d+\)", predicted.output)
    assert f"{folder / 'china' / '1.jpg'}: china (probability" in predicted.output
    evaluated = CliRunner().invoke(main, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    assert re.search(r"per class: china \d+\.\d% \(10\), flower \d+\.\d% \(10\)", evaluated.output), evaluated.output
    reported = CliRunner().invoke(main, ["report", str(run)])
    assert reported.exit_code == 0, reported.output
    assert json.loads((run / "report/report.json").read_text())["runs"][0]["classes"] == ["china", "flower"]


def test_the_cats_vs_dogs_spec_trains_on_a_class_folder(tmp_path):
    """model_specs/cats_vs_dogs.yaml as shipped, on two classes of photo patches named cat and dog."""
    from conftest import SHIPPED

    folder = photos(tmp_path / "pets", per_class=16)
    (folder / "china").rename(folder / "cat")
    (folder / "flower").rename(folder / "dog")
    result = CliRunner().invoke(main, ["fit", str(SHIPPED / "cats_vs_dogs.yaml"), "--epochs", "1",
                                       "--set", f"data.dataset={folder}", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs/cats_vs_dogs").iterdir()
    assert json.loads((run / "state.json").read_text())["classes"] == ["cat", "dog"]
    assert (run / "cache").is_dir()


@pytest.mark.parametrize("cache", ["none", "disk"])
def test_a_resumed_streamed_run_ends_bit_identical(tmp_path, cache):
    """Files streamed from disk: 1 epoch then --resume to 3 gives the weights of 3 epochs in one go."""
    from mnist_keras.model.objects import load_model

    folder = photos(tmp_path / "photos", per_class=24)
    spec = tmp_path / "photos.yaml"
    spec.write_text(SPEC.format(folder=folder, cache=cache).replace("epochs: 20", "epochs: 3"))
    runs = {}
    for name, steps in (("whole", [[]]), ("resumed", [["--epochs", "1"], ["--resume"]])):
        for args in steps:
            if args[:1] == ["--resume"]:
                args = ["--resume", str(runs[name]), "--epochs", "3"]
                result = CliRunner().invoke(main, ["fit", *args])
            else:
                result = CliRunner().invoke(main, ["fit", str(spec), "--name", name, *args,
                                                   "--runs", str(tmp_path / "runs")])
            assert result.exit_code == 0, result.output
            (runs[name],) = (tmp_path / "runs" / name).iterdir()
    whole, resumed = (load_model(runs[n] / "model.keras").get_weights() for n in ("whole", "resumed"))
    assert all(np.array_equal(a, b) for a, b in zip(whole, resumed))
