"""The hand-written baselines of benchmarks/throughput.py train with the shipped specs' hyperparameters."""

import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT, SHIPPED
from mnist_keras.spec.loader import load_spec

sys.path.insert(0, str(ROOT / "benchmarks"))
from common import learning_rate  # noqa: E402
from throughput import baseline_args  # noqa: E402


@pytest.mark.parametrize("model", ["lenet5", "dense"])
@pytest.mark.parametrize("warmup", [0, 1])
def test_baseline_schedule_is_the_specs(model, warmup):
    from mnist_keras.train.compile import make_schedule

    spec = load_spec(SHIPPED / f"{model}.yaml", [f"train.lr_schedule.warmup={warmup}"])
    args = baseline_args(spec, spec.train.epochs)
    given = SimpleNamespace(**{args[i][2:].replace("-", "_"): float(args[i + 1]) for i in range(0, len(args), 2)})
    assert given.validation == 6000 and given.batch_size == spec.data.batch_size
    steps = -(-54000 // spec.data.batch_size)
    schedule = make_schedule(spec, steps)
    for step in (0, steps // 2, steps, 3 * steps + 7, spec.train.epochs * steps - 1):
        assert learning_rate(given, step, steps) == pytest.approx(float(schedule(step)), rel=1e-4, abs=1e-9)


def test_recipe_rows_add_each_recipe_to_best_and_nothing_else():
    from recipes import BEST, ROWS, row_overrides, to_target

    specs = {name: load_spec(BEST, row_overrides(recipes)) for name, recipes in ROWS.items()}
    best, every = specs["best"], specs["all"]
    assert specs["best"].model_dump() == load_spec(BEST).model_dump()
    assert specs["ema"].train.optimizer.ema == every.train.optimizer.ema == 0.999 and best.train.optimizer.ema is None
    assert specs["one_cycle"].train.lr_schedule.type == every.train.lr_schedule.type == "one_cycle"
    assert specs["ema"].model_dump(exclude={"train"}) == best.model_dump(exclude={"train"})
    mixing = {name: (s.data.augment.mixup, s.data.augment.cutmix) for name, s in specs.items()}
    assert mixing["mixup"] == (0.2, 0) and mixing["cutmix"] == (0, 1.0) and mixing["mixup_cutmix"] == mixing["all"] == (0.2, 1.0)
    assert specs["mixup"].model_dump(exclude={"data"}) == best.model_dump(exclude={"data"})
    names = {name: [p.name for p in s.plan()] for name, s in specs.items()}
    assert names["rand_augment"] == ["rand_augment_1", *names["best"]]
    assert names["random_erasing"] == [*names["best"][:3], "random_erasing_1", *names["best"][3:]]
    assert names["all"] == ["rand_augment_1", *names["random_erasing"]]
    epochs = [{"epoch": 1, "epoch_seconds": 10.0, "test_accuracy": 0.99},
              {"epoch": 2, "epoch_seconds": 5.0, "test_accuracy": 0.995}]
    assert to_target(epochs) == {"epoch": 2, "seconds": 15.0} and to_target(epochs[:1]) is None


def test_the_image_pipelines_compared_each_read_the_folder_twice_alike(tmp_path):
    from image_pipeline import PROGRAMS, class_folders, epochs_of

    (tmp_path / "images").mkdir()
    class_folders(tmp_path / "images", 40)
    for program in [p for p in PROGRAMS if not p.startswith("torchvision")]:
        work = tmp_path / program.replace(" ", "-")
        work.mkdir()
        epoch = epochs_of(program, str(tmp_path / "images"), 8, str(work))
        first, second = epoch(), epoch()
        assert first == second and (first == 40 if program.startswith("keras") else 30 <= first <= 40), program
        if program == "mnist-keras disk":  # the second epoch read the copies the first wrote
            assert len(list(work.glob("train-*/*.u8"))) == first


def test_the_recipes_table_keeps_what_an_earlier_sitting_trained(tmp_path):
    """A second run of benchmarks/recipes.py with the same --out trains only the runs it lacks and keeps the rest,
    other rows too; an --out that is not its JSON stops it with exit 2 before anything trains."""
    import json
    import subprocess

    import numpy as np
    from test_data import write_folder

    sample = np.load(ROOT / "mnist_keras/data/mnist_sample.npz")
    data = write_folder(tmp_path / "mnist", {key: sample[key] for key in sample.files})
    out = tmp_path / "recipes.json"

    def recipes(rows: str):
        return subprocess.run([sys.executable, str(ROOT / "benchmarks/recipes.py"), "--data-dir", str(data), "--seeds",
                               "1", "--epochs", "1", "--max-train", "220", "--rows", rows, "--out", str(out)],
                              capture_output=True, text=True, timeout=300)

    first = recipes("best")
    assert first.returncode == 0, first.stderr[-2000:]
    trained = json.loads(out.read_text())["rows"]["best"][0]
    second = recipes("one_cycle")
    assert second.returncode == 0, second.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert rows["best"] == [trained] and len(rows["one_cycle"]) == 1, rows.keys()
    third = recipes("best,one_cycle")
    assert third.returncode == 0 and json.loads(out.read_text())["rows"] == rows, third.stderr[-2000:]
    assert third.stdout.count(f"(kept from {out}: ") == 2, third.stdout
    out.write_text('{"rows": [1, 2]}')
    broken = recipes("best")
    assert broken.returncode == 2 and f"error: {out}: not the runs of an earlier benchmarks/recipes.py" in broken.stderr
    assert out.read_text() == '{"rows": [1, 2]}'
