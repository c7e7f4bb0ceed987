"""The project's promises about itself: README and docs in sync with the schema, the CLI and the package, every
link resolving, the docs site building strictly, CI running the README's tests."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import ROOT
from mnist_keras.cli import main


DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")  # the target of a Markdown link or image


def test_spec_reference_page_is_generated_from_the_schema():
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


def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    return re.sub(r"[\s-]+", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_readme_and_docs_links_resolve(page):
    """Every relative link names a file that exists, and an #anchor a heading of the page it points to."""
    broken = []
    for target in LINK.findall(re.sub(r"```.*?```", "", page.read_text(), flags=re.S)):
        if ":" in target:
            continue  # a URL
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    items = nav.values() if isinstance(nav, dict) else nav
    return [page for item in items for page in nav_pages(item)]


def test_every_docs_page_is_in_the_nav_once():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert sorted(nav) == sorted(p.relative_to(DOCS).as_posix() for p in PAGES)


def test_python_api_page_shows_the_readme_example():
    """The README's Python block (run by tests/test_api.py) is the one the Python API page starts from."""
    block = r"```python\n(.*?)```"
    readme = re.search(r"## Python API.*?" + block, (ROOT / "README.md").read_text(), re.S).group(1)
    assert re.search(block, (DOCS / "python-api.md").read_text(), re.S).group(1) == readme


def test_whole_specs_in_the_docs_load(tmp_path):
    """Every YAML block of the README and the docs with a top-level name and model is a spec that loads."""
    from mnist_keras.spec.loader import load_spec

    blocks = [block for page in [ROOT / "README.md", *PAGES]
              for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)
              if re.search(r"^name:", block, re.M) and re.search(r"^model:", block, re.M)]
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        (tmp_path / f"{i}.yaml").write_text(block)
        load_spec(tmp_path / f"{i}.yaml")


def test_code_layout_page_names_every_module_and_only_those():
    """docs/architecture.md's table names every module and package of mnist_keras/, and the files it names
    inside a package exist there."""
    rows = re.findall(r"^\| `(mnist_keras/[^`]+)` \| (.*) \|$", (DOCS / "architecture.md").read_text(), re.M)
    package = ROOT / "mnist_keras"
    for name, text in rows:
        path = ROOT / name
        assert path.is_file() if name.endswith(".py") else (path / "__init__.py").is_file(), name
        for file in re.findall(r"`(\w+\.(?:py|html))`", text):
            assert (path / file).is_file(), f"{name}{file}"
    present = {f"mnist_keras/{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    present |= {f"mnist_keras/{p.name}" for p in package.glob("*.py") if not p.name.startswith("__")}
    assert sorted(name for name, _ in rows) == sorted(present)
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layer = {module.strip(): index for index, names in enumerate(reversed(contract["layers"]))
             for module in names.split("|")}
    ranks = [layer["mnist_keras." + name[len("mnist_keras/"):].removesuffix("/").removesuffix(".py")] for name, _ in rows]
    assert sorted(layer) == sorted("mnist_keras." + n[12:].removesuffix("/").removesuffix(".py") for n, _ in rows)
    assert ranks == sorted(ranks), "the table's rows are not in the layers' order (lowest first)"


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocs_click")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, env=env)


def test_docs_site_builds_strictly_with_the_cli_reference(tmp_path):
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    cli = (tmp_path / "site/reference/cli/index.html").read_text()
    for name, command in main.commands.items():
        assert f"mnist-keras {name} [OPTIONS]" in cli, name
        for sub in getattr(command, "commands", {}):
            assert f"mnist-keras {name} {sub} [OPTIONS]" in cli, sub


@pytest.mark.parametrize("edit, message", [
    (("index.md", "[a page](no-such-page.md)"), "no-such-page.md"),
    (("index.md", "[a spec](../model_specs/no-such-spec.yaml)"), "no-such-spec.yaml"),
    (("index.md", "[a heading](specs.md#no-such-heading)"), "no-such-heading"),
    (("orphan.md", "# Not in the nav"), "orphan.md"),
], ids=["page", "repository file", "anchor", "page left out of the nav"])
def test_docs_build_fails_on_a_broken_link_or_a_missing_page(tmp_path, edit, message):
    """A copy of the site with one defect does not build."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(ROOT / "model_specs", tmp_path / "model_specs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    page, text = edit
    with open(tmp_path / "docs" / page, "a") as out:
        out.write(f"\n{text}\n")
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and message in result.stderr, result.stderr
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


def test_the_package_layering_holds():
    """pyproject.toml's import-linter contracts (the layers, no Keras in run records): none broken, and so no
    import cycle between the package's layers."""
    pytest.importorskip("importlinter")
    result = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                             "sys.exit(lint_imports(no_cache=True))"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"Contracts: (\d+) kept, 0 broken", result.stdout).group(1) == "2"
