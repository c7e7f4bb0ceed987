"""The project's promises about itself: README in sync with the schema and the CLI, CI runs the README's tests."""

import os
import re
import subprocess
import sys

from click.testing import CliRunner

from conftest import ROOT
from mnist_keras.cli import main


def test_readme_spec_reference_is_generated_from_the_schema():
    result = subprocess.run([sys.executable, str(ROOT / "scripts/spec_reference.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_lists_every_command():
    readme = (ROOT / "README.md").read_text()
    for name, command in main.commands.items():
        names = [name] + [f"{name} {sub}" for sub in getattr(command, "commands", {})]
        for full in names:
            assert f"mnist-keras {full}" in readme, full


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"pip install -e \"\.\[test\]\" && python -m pytest[^\n`]*", readme).group(0)
    assert command in (ROOT / ".ci/run").read_text()


def test_help_is_quick_and_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("fit", "validate", "summary", "schema", "evaluate", "predict"):
        assert name in result.output


def test_no_arguments_prints_the_help_and_what_to_try_first():
    """`mnist-keras` alone (issue 23): the help, exit 2, and a last line naming a command that works."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "mnist_keras"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "Commands:" in done.stderr
    last = done.stderr.strip().splitlines()[-1].strip()
    assert last.startswith("Try first: mnist-keras fit model_specs/lenet5.yaml") and len(last) < 80, last
    spec = last.split()[4]
    checked = subprocess.run([sys.executable, "-m", "mnist_keras", "validate", spec], capture_output=True,
                             text=True, env=env, cwd=ROOT, timeout=120)
    assert checked.returncode == 0, checked.stderr


def _readme_blocks_after(heading: str) -> list[str]:
    section = (ROOT / "README.md").read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```\n", section, re.S)


def test_readme_spec_is_the_shipped_lenet5_and_its_layer_list_plans_alike():
    """README's "A spec" (issue 23: it had drifted from the file) and its layer-list form of the template."""
    import yaml

    from mnist_keras.spec import load_spec
    from mnist_keras.spec.schema import Spec

    shipped, layers = _readme_blocks_after("## A spec")[:2]
    assert shipped == (ROOT / "model_specs" / "lenet5.yaml").read_text()
    spec = load_spec(ROOT / "model_specs" / "lenet5.yaml")
    listed = Spec.model_validate({**spec.model_dump(mode="json"), "model": yaml.safe_load(layers)["model"]})
    plan = [(p.layer.keras_config(), p.output_shape, p.trainable) for p in spec.plan()]
    assert plan == [(p.layer.keras_config(), p.output_shape, p.trainable) for p in listed.plan()]
    assert len(plan) == 8 and sum(p[2] for p in plan) == 61_706
