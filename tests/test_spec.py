"""The spec language without TensorFlow: loading, validation messages, overrides, schema, CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, SHIPPED
from mnist_keras.cli import main
from mnist_keras.errors import UserError
from mnist_keras.spec.loader import dump_spec, json_schema, load_spec

# The bad-spec corpus (tests/bad_specs) is run by test_hostile_specs.py.


def test_validate_reports_every_problem_of_every_file(write_spec):
    bad = write_spec("model: {layers: [flatten, {dense: 0}, {dense: 10}]}\ntrain: {epochs: -1}\n", "bad.yaml")
    result = CliRunner().invoke(main, ["validate", str(SHIPPED / "dense.yaml"), str(bad)])
    assert result.exit_code == 2
    assert "ok: " in result.output and "dense.yaml" in result.output
    assert "bad.yaml:1:28: model.layers[1].dense: expected a value greater than 0, got 0" in result.stderr
    assert "bad.yaml:2:9: train.epochs: expected a value greater than 0, got -1" in result.stderr


@pytest.mark.parametrize("name,total", [("lenet5", 61_706), ("dense", 235_146), ("cnn", 422_026)])
def test_shipped_specs_parameter_counts(name, total):
    spec = load_spec(SHIPPED / f"{name}.yaml")
    assert sum(p.trainable + p.non_trainable for p in spec.plan()) == total


def test_lenet5_layers_and_input_shape():
    spec = load_spec(SHIPPED / "lenet5.yaml")
    assert spec.input_shape() == (32, 32, 1)
    assert [p.trainable for p in spec.plan() if p.trainable] == [156, 2416, 48120, 10164, 850]


def test_lenet5_paper_variant_is_one_line(write_spec):
    spec = load_spec(write_spec("model: {template: {lenet5: {activation: tanh, pool: avg, padding: same}}}\n"))
    kinds = [p.layer.kind for p in spec.plan()]
    assert kinds.count("avg_pool2d") == 2 and "max_pool2d" not in kinds
    assert {p.layer.activation for p in spec.plan() if p.layer.kind in ("conv2d", "dense")} == {"tanh", None}
    assert spec.plan()[0].output_shape == (28, 28, 6)  # padding: same keeps 28x28 like the paper's 32x32


def test_summary_table_and_total():
    result = CliRunner().invoke(main, ["summary", str(SHIPPED / "lenet5.yaml")])
    assert result.exit_code == 0, result.output
    assert "Total params: 61,706" in result.output
    assert "(None, 5, 5, 16)" in result.output


def test_summary_of_stages_without_a_backbone(write_spec):
    """Each stage's line, with no backbone to describe (it ended in an AttributeError)."""
    path = write_spec("data: {source: bundled}\nmodel: {layers: [flatten, {dense: 10}]}\n"
                      "train: {stages: [{epochs: 1}, {epochs: 2, optimizer: sgd}]}\n")
    result = CliRunner().invoke(main, ["summary", str(path)])
    assert result.exit_code == 0, result.output
    assert "Stage 1: epochs 1-1, adam at learning rate 0.001: 7,850 trainable, 0 frozen" in result.output
    assert "Stage 2: epochs 2-3, sgd at learning rate 0.01: 7,850 trainable" in result.output


def test_overrides_apply_and_validate(write_spec):
    path = write_spec("model:\n  layers:\n    - conv2d: {filters: 4, kernel_size: 3}\n    - flatten\n    - dense: 10\n")
    spec = load_spec(path, ["train.epochs=3", "model.layers[0].conv2d.filters=8", "train.optimizer={type: sgd}"])
    assert spec.train.epochs == 3
    assert spec.plan()[0].output_shape == (26, 26, 8)
    assert spec.train.optimizer.type == "sgd"
    with pytest.raises(UserError, match=r"--set train.epochs=0: train.epochs: expected a value greater than 0"):
        load_spec(path, ["train.epochs=0"])
    with pytest.raises(UserError, match=r"model.layers has 3 items, so \[7\] does not exist"):
        load_spec(path, ["model.layers[7].dense.units=3"])
    with pytest.raises(UserError, match="expected PATH=VALUE"):
        load_spec(path, ["train.epochs"])


def test_override_on_cli(write_spec):
    path = write_spec("model: {layers: [flatten, {dense: 10}]}\n")
    result = CliRunner().invoke(main, ["validate", str(path), "--set", "model.layers[1].dense.units=5"])
    assert result.exit_code == 2
    assert "--set model.layers[1].dense.units=5" in result.stderr and "must output 10 logits" in result.stderr


def test_defaults_fill_every_section(write_spec):
    spec = load_spec(write_spec("model: {layers: [flatten, {dense: 10}]}\n", "tiny.yaml"))
    assert spec.name == "tiny"
    assert spec.data.dataset == "mnist" and spec.data.batch_size == 128
    assert spec.train.optimizer.type == "adam" and spec.train.lr_schedule.type == "constant"
    assert spec.runtime.device == "auto" and spec.loss() == "categorical_crossentropy"
    assert load_spec(write_spec(dump_spec(spec), "again.yaml")) == spec  # the resolved spec round-trips


def test_shorthands(write_spec):
    spec = load_spec(write_spec(
        "model:\n  layers:\n    - reshape: [784]\n    - dense: 32\n    - dropout: 0.5\n"
        "    - activation: gelu\n    - dense: 10\ntrain: {optimizer: sgd, lr_schedule: {type: step, every: 2}}\n"
    ))
    assert [p.layer.kind for p in spec.plan()] == ["reshape", "dense", "dropout", "activation", "dense"]
    assert spec.train.optimizer.type == "sgd" and spec.train.optimizer.learning_rate is None


def test_regression_spec_is_allowed(write_spec):
    spec = load_spec(write_spec(
        "data: {preprocess: {one_hot: false}}\nmodel: {layers: [flatten, {dense: 1}]}\ntrain: {loss: mse}\n"
    ))
    assert spec.loss() == "mse"


def test_json_schema_covers_sections_and_layers():
    schema = json_schema()
    assert set(schema["properties"]) >= {"data", "model", "train", "runtime"}
    text = json.dumps(schema)
    for name in ("conv_pool_stack", "dense_stack", "lenet5", "inverse_time", "adamw"):
        assert name in text
    result = CliRunner().invoke(main, ["schema"])
    assert json.loads(result.output)["title"] == "mnist-keras spec"


def test_cli_validate_does_not_import_tensorflow():
    code = (
        "import sys; from mnist_keras.cli import main\n"
        f"try: main(['validate', r'{SHIPPED / 'lenet5.yaml'}'])\n"
        "except SystemExit as e: assert e.code in (0, None)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_json_schema_accepts_shipped_specs_and_rejects_bad_ones():
    import jsonschema
    import yaml

    validator = jsonschema.Draft202012Validator(json_schema())
    for path in SHIPPED.glob("*.yaml"):
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path
    for name in ("unknown_layer", "zero_units", "unknown_top_key", "bad_activation"):
        bad = yaml.safe_load((Path(__file__).parent / "bad_specs" / f"{name}.yaml").read_text())
        assert list(validator.iter_errors(bad)), name


def test_shipped_schema_file_is_current():
    shipped = json.loads((ROOT / "mnist-keras.schema.json").read_text())
    assert shipped == json.loads(json.dumps(json_schema())), "run: mnist-keras schema --out mnist-keras.schema.json"


@pytest.mark.parametrize("written,value", [("1e-3", 1e-3), ("1E-3", 1e-3), ("+1e4", 1e4), ("1.0e5", 1e5), (".5", 0.5),
                                           ("1.", 1.0), ("5e+0", 5.0), ("0.1", 0.1), ("2.5E-2", 0.025)])
def test_yaml_12_floats_in_files_and_overrides(written, value, write_spec):
    """YAML 1.2 float forms are numbers in a file and in --set alike; quoted, they stay text (and are refused)."""
    path = write_spec(f"model: {{layers: [flatten, {{dense: 10}}]}}\ntrain: {{optimizer: {{learning_rate: {written}}}}}\n")
    assert load_spec(path).train.optimizer.learning_rate == value
    assert load_spec(path, [f"train.optimizer.learning_rate={written}"]).train.optimizer.learning_rate == value
    with pytest.raises(UserError, match="expected a number"):
        load_spec(path, [f"train.optimizer.learning_rate='{written}'"])


def test_yaml_11_forms_and_plain_text_are_unchanged():
    from mnist_keras.spec.yamlfile import parse_yaml

    data, _ = parse_yaml("[1_000, 0x10, 1e, e5, 1e5e, 1.2.3, 12, -.inf, .nan, 1_0.5, 1e3x, yes, '1e3']", "t")
    assert data[:6] == [1000, 16, "1e", "e5", "1e5e", "1.2.3"] and data[6] == 12 and data[7] == float("-inf")
    assert data[8] != data[8] and data[9:] == [10.5, "1e3x", True, "1e3"]
    with pytest.raises(UserError, match="the YAML tag '!!python/object/apply:os.system' is not allowed"):
        parse_yaml("!!python/object/apply:os.system [1e3]", "t")


def test_did_you_mean_ignores_case_first():
    from mnist_keras.spec.messages import did_you_mean

    assert did_you_mean("ReLU", ["linear", "relu", "elu"]) == " (did you mean 'relu'?)"
    assert did_you_mean("ELU", ["relu", "elu"]) == " (did you mean 'elu'?)"
    assert did_you_mean("MNIST", ["mnist", "fashion_mnist"]) == " (did you mean 'mnist'?)"
    assert did_you_mean("Relu6", ["relu6", "relu"]) == " (did you mean 'relu6'?)"
    assert did_you_mean("qqq", ["relu"]) == "" and did_you_mean("x" * 500_000, ["relu"]) == ""


def test_cross_field_problems_raised_by_a_model_validator_are_placed(write_spec, monkeypatch):
    """When Spec checks problems() in a model validator raising SpecProblems(ValueError) with `.problems`,
    each problem is its own placed message, as when validate_spec calls problems() itself."""
    from pydantic import model_validator

    from mnist_keras.spec import loader
    from mnist_keras.spec.schema import Spec

    class SpecProblems(ValueError):
        def __init__(self, problems):
            super().__init__("; ".join(message for _, message in problems))
            self.problems = problems

    class CheckedSpec(Spec):
        @model_validator(mode="after")
        def _cross_field(self):
            if self.problems():
                raise SpecProblems(self.problems())
            return self

    text = ("model: {layers: [flatten, {dense: 5}]}\nruntime: {max_params: 10}\n"
            "train: {loss: categorical_crossentropy}\n")
    with pytest.raises(UserError) as today:
        load_spec(write_spec(text))
    monkeypatch.setattr(loader, "Spec", CheckedSpec)
    with pytest.raises(UserError) as moved:
        load_spec(write_spec(text))
    assert moved.value.messages == today.value.messages and len(moved.value.messages) == 2
    assert any(":1:28: model.layers[1].dense: the model outputs shape (5,)" in m for m in moved.value.messages)
    assert any(": model: the model has 3,925 parameters, over runtime.max_params = 10" in m for m in moved.value.messages)


def test_sweep_draws_from_a_huge_grid_without_building_it():
    from mnist_keras.sweeps.grid import MAX_RUNS, combinations

    grid = [f"train.k{i}={','.join(str(v) for v in range(9))}" for i in range(9)]  # 387,420,489 combinations
    drawn = combinations(grid, sample=5, seed=7)
    assert len({tuple(c) for c in drawn}) == 5 and drawn == combinations(grid, 5, 7) != combinations(grid, 5, 8)
    assert all(c.flag == f"--grid {c}" for combo in drawn for c in combo)
    with pytest.raises(UserError, match="387,420,489 combinations: a sweep trains at most 10,000 runs; draw fewer with --random N"):
        combinations(grid)
    with pytest.raises(UserError, match=f"--random {MAX_RUNS + 1:,}: a sweep trains at most"):
        combinations(grid, sample=MAX_RUNS + 1)
    with pytest.raises(UserError, match="too many to draw from"):
        combinations([f"train.k{i}=1,2" for i in range(70)], sample=1)
    small = ["a=1,2,3", "b=x,y", "c=[1,2],[3]"]
    every = combinations(small)
    assert len(every) == 12 and every[:3] == [["a=1", "b=x", "c=[1,2]"], ["a=1", "b=x", "c=[3]"], ["a=1", "b=y", "c=[1,2]"]]
    assert combinations(small, sample=12) == every and sorted(combinations(small, 11, 3)) != every
    assert combinations(small, sample=4, seed=3) == [every[i] for i in __import__("random").Random(3).sample(range(12), 4)]
