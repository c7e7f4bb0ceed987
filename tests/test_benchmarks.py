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
