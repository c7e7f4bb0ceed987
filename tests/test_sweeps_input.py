"""Sweeps on odd and hostile input (issues 23 and 24): the best spec is what the best trial trained, a --set the
space would replace is refused, validate and summary know sweep files, another program's database is never
written, a study name never leaves --runs, and a sweep whose every trial failed exits 1. The study whose best spec
is checked, the fit that reproduces its trial and the sweep of --jobs workers run in real `python -m mnist_keras`
processes; the other commands run in this process (`in_process`), and one refusal of each kind also as a real
process, which must end the same."""

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import ROOT, in_process
from test_sweeps import write_sweep


def cli(folder: Path, *args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mnist_keras", *map(str, args)], cwd=folder, text=True,
                          capture_output=True, timeout=400, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def errors(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def body(best: Path) -> str:
    """A best spec without its header comment."""
    return best.read_text().split("\n", 1)[1]


# ------------------------------------------------------------------------- the best spec is the best trial's


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-trial sweep whose spec says 2 epochs and 640 images, run with --set for 1 epoch of 320."""
    folder = tmp_path_factory.mktemp("trained")
    write_sweep(folder, trials=2, epochs=2)
    done = cli(folder, "sweep", "sweep.yaml", "--set", "train.epochs=1", "--set", "data.max_train=320")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def best_trial(folder: Path) -> optuna.trial.FrozenTrial:
    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{folder / 'runs' / 'sweeps.db'}").best_trial


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "sweep")
    return tmp_path / "sweep"


def test_the_sweep_writes_the_best_trials_recorded_spec(trained):
    best, trial = trained / "runs" / "sweep-best.yaml", best_trial(trained)
    assert body(best) == (trained / trial.user_attrs["run_dir"] / "spec.yaml").read_text()
    assert f"(#{trial.number}, val_accuracy " in best.read_text().splitlines()[0]
    import mnist_keras as mk

    spec = mk.load_spec(best)
    assert (spec.train.epochs, spec.data.max_train) == (1, 320)  # the --set values, not the spec file's 2 and 640


def test_show_without_the_set_flags_writes_the_same_best_spec(copy):
    best = copy / "runs" / "sweep-best.yaml"
    before = best.read_text()
    best.unlink()
    done = in_process("sweep", "sweep.yaml", "--show", cwd=copy)
    assert done.returncode == 0 and "best spec: runs/sweep-best.yaml" in done.stdout, done.stdout + done.stderr
    assert best.read_text() == before


def test_show_after_the_spec_file_changed_keeps_what_the_trial_trained(copy):
    (copy / "tiny.yaml").write_text((copy / "tiny.yaml").read_text().replace("units: 16", "units: 32"))
    before = (copy / "runs" / "sweep-best.yaml").read_text()
    done = in_process("sweep", "sweep.yaml", "--show", cwd=copy)
    assert done.returncode == 0, done.stderr
    assert (copy / "runs" / "sweep-best.yaml").read_text() == before and "units: 16" in before


def test_show_after_the_run_directories_moved_writes_the_study_record(copy):
    before = (copy / "runs" / "sweep-best.yaml").read_text()
    shutil.move(copy / "runs" / "sweep", copy / "elsewhere")  # as on another machine of a shared study
    done = in_process("sweep", "sweep.yaml", "--show", cwd=copy)
    assert done.returncode == 0, done.stderr
    assert (copy / "runs" / "sweep-best.yaml").read_text() == before


def test_a_tampered_recorded_spec_is_refused_not_written(copy):
    best = copy / "runs" / "sweep-best.yaml"
    before = best.read_text()
    trial = best_trial(copy)
    with sqlite3.connect(copy / "runs" / "sweeps.db") as c:  # a finished trial is not updated through Optuna
        c.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'spec'",
                  (json.dumps("model: {layers: [{dense: -3}]}\n"), trial._trial_id))
    done = in_process("sweep", "sweep.yaml", "--show", cwd=copy)
    assert done.returncode == 2 and len(errors(done)) == 1, done.stderr
    assert f"study 'sweep', trial #{trial.number}: its recorded spec" in errors(done)[0]
    assert best.read_text() == before


def test_fitting_the_best_spec_show_wrote_reproduces_the_trial(copy):
    (copy / "runs" / "sweep-best.yaml").unlink()
    assert in_process("sweep", "sweep.yaml", "--show", cwd=copy).returncode == 0  # the next day, without the --sets
    done = cli(copy, "fit", "runs/sweep-best.yaml", "--runs", "again")
    assert done.returncode == 0, done.stderr
    (run,) = (copy / "again").glob("*/*/metrics.json")
    history = json.loads(run.read_text())["history"]
    assert max(epoch["val_accuracy"] for epoch in history) == pytest.approx(best_trial(copy).value, abs=1e-6)


# ------------------------------------------------------------------------- --set of a searched path

SEARCHES = """space:
  train.optimizer: {choice: [adam, sgd]}
  data.batch_size: {choice: [32, 64]}
  model.layers[1].dense.units: {choice: [8, 16]}
"""

REPLACED = {  # --set -> the space entry (line:col in sweep.yaml) it would be replaced by
    "train.optimizer=rmsprop": ("6:3", "train.optimizer"),
    "data.batch_size=16": ("7:3", "data.batch_size"),
    "train.optimizer.learning_rate=0.1": ("6:3", "train.optimizer"),  # a part of a searched value
    "train={epochs: 1, optimizer: adam}": ("6:3", "train.optimizer"),  # a mapping that holds it
    "data={source: bundled, batch_size: 8}": ("7:3", "data.batch_size"),
    "model.layers=[flatten, {dense: {units: 4}}, {dense: 10}]": ("8:3", "model.layers[1].dense.units"),  # a list
}


@pytest.mark.parametrize("command", ["sweep", "validate"])
@pytest.mark.parametrize("option", REPLACED)
def test_a_set_of_a_searched_path_is_refused_naming_the_space_line(tmp_path, command, option):
    write_sweep(tmp_path, trials=1, space=SEARCHES)
    done = in_process(command, "sweep.yaml", "--set", option, cwd=tmp_path)
    place, path = REPLACED[option]
    assert done.returncode == 2 and len(errors(done)) == 1, done.stdout + done.stderr
    assert errors(done)[0].startswith(f"error: --set {option}: sweep.yaml:{place}: space.{path} searches this path")
    assert not (tmp_path / "runs").exists()


def test_a_set_beside_the_searched_paths_is_taken(tmp_path):
    write_sweep(tmp_path, space=SEARCHES)
    done = in_process("validate", "sweep.yaml", "--set", "train.epochs=3", "--set", "data={validation: 64}",
                      "--set", "model.layers[2].dense.units=10", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("ok: sweep.yaml (tiny: "), done.stdout + done.stderr


def test_show_refuses_set_values(trained):
    done = in_process("sweep", "sweep.yaml", "--show", "--set", "train.epochs=1", cwd=trained)
    assert done.returncode == 2 and "--set goes with a sweep that trains" in done.stderr


# ------------------------------------------------------------------------- validate and summary of a sweep file


def test_validate_checks_the_shipped_sweep_file():
    done = in_process("validate", "model_specs/sweeps/dense.yaml", "model_specs/dense.yaml", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert re.match(r"ok: model_specs/sweeps/dense.yaml \(dense: 4 layers, [\d,]+ parameters; a sweep of 4 spec paths\)"
                    r"\nok: model_specs/dense.yaml \(dense: 4 layers", done.stdout), done.stdout


@pytest.mark.parametrize("space, expected", [
    ("  data.batch_size: {int: [0, 64]}\n", r"sweep.yaml:6:3: space.data.batch_size = 0: data.batch_size: expected a "
                                            r"value greater than 0"),
    ("  train.optimizer.learnin_rate: {choice: [0.1, 0.01]}\n", r"sweep.yaml:6:3: .*unknown key 'learnin_rate' "
                                                                r"\(did you mean 'learning_rate'\?\)"),
    ("  data.batch_size: {choice: [64]}\n", r"sweep.yaml:6:\d+: space.data.batch_size.choice: expected at least 2"),
])
def test_validate_of_a_bad_sweep_file_gives_the_message_sweep_gives(tmp_path, space, expected):
    write_sweep(tmp_path, space="space:\n" + space)
    checked, swept = (in_process(command, "sweep.yaml", cwd=tmp_path) for command in ("validate", "sweep"))
    assert checked.returncode == swept.returncode == 2
    assert errors(checked) == errors(swept) and len(errors(checked)) == 1, checked.stderr + swept.stderr
    assert re.match("error: " + expected, errors(checked)[0]), checked.stderr


def test_validate_of_a_sweep_whose_spec_is_bad_names_the_spec(tmp_path):
    write_sweep(tmp_path)
    (tmp_path / "tiny.yaml").write_text((tmp_path / "tiny.yaml").read_text().replace("units: 16", "units: -16"))
    done = in_process("validate", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2 and errors(done) and all("tiny.yaml:" in line for line in errors(done)), done.stderr


def test_summary_of_a_sweep_file_is_one_refusal_naming_its_spec(tmp_path):
    write_sweep(tmp_path)
    done = in_process("summary", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2 and errors(done) == [
        "error: sweep.yaml: a sweep file, and summary takes a spec: mnist-keras summary tiny.yaml"], done.stderr


# ------------------------------------------------------------------------- another program's database


def _foreign(db: Path) -> None:
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        c.execute("INSERT INTO notes (text) VALUES ('mine')")


def _alembic_app(db: Path) -> None:
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        c.execute("INSERT INTO alembic_version VALUES ('3f1c2a9b7d10')")
        c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")


def _alembic_only(db: Path) -> None:  # an application whose own tables are yet to come
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        c.execute("INSERT INTO alembic_version VALUES ('3f1c2a9b7d10')")


def _view(db: Path) -> None:
    with sqlite3.connect(db) as c:
        c.execute("CREATE VIEW totals AS SELECT 1 AS total")


def _study_mixed_in(db: Path) -> None:  # a study's tables and another program's in one file
    optuna.create_study(storage=f"sqlite:///{db}", study_name="sweep")
    _foreign(db)


FOREIGN = {"another program's tables": (_foreign, "tables that are not an Optuna study's (notes)"),
           "an Alembic application's": (_alembic_app, "tables that are not an Optuna study's (users)"),
           "an Alembic schema alone": (_alembic_only, "alembic_version is 3f1c2a9b7d10, another application's"),
           "another program's view": (_view, "tables that are not an Optuna study's (totals)"),
           "a study mixed with another program's": (_study_mixed_in, "tables that are not an Optuna study's (notes)")}


@pytest.mark.parametrize("show", [False, True], ids=["sweep", "show"])
@pytest.mark.parametrize("case", FOREIGN)
def test_a_database_of_another_program_is_refused_and_left_as_it_was(tmp_path, case, show):
    write_sweep(tmp_path)
    make, expected = FOREIGN[case]
    db = tmp_path / "app.db"
    make(db)
    before = digest(db)
    done = in_process("sweep", "sweep.yaml", "--storage", "sqlite:///app.db", *(["--show"] if show else []),
                      cwd=tmp_path)
    assert done.returncode == 2 and len(errors(done)) == 1, done.stdout + done.stderr
    assert errors(done)[0].startswith("error: app.db: this database") and expected in errors(done)[0], done.stderr
    assert digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "sweep.yaml", "tiny.yaml"]


def test_the_default_database_of_another_program_is_refused(tmp_path):
    write_sweep(tmp_path)
    (tmp_path / "runs").mkdir()
    _alembic_app(tmp_path / "runs" / "sweeps.db")
    before = digest(tmp_path / "runs" / "sweeps.db")
    done = in_process("sweep", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2 and errors(done)[0].startswith("error: runs/sweeps.db: this database holds tables")
    assert digest(tmp_path / "runs" / "sweeps.db") == before and os.listdir(tmp_path / "runs") == ["sweeps.db"]


@pytest.fixture
def read_only_study(trained, tmp_path) -> Path:
    """A study database that cannot be written: mode 444, and immutable for root, whom modes do not stop."""
    shutil.copytree(trained, tmp_path / "sweep")
    db = tmp_path / "sweep" / "runs" / "sweeps.db"
    db.chmod(0o444)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", db], capture_output=True).returncode:
        pytest.skip("running as root, where chattr +i is not permitted")
    yield db
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", db], check=True)


def test_show_reads_a_read_only_database_and_changes_nothing(read_only_study):
    folder, before = read_only_study.parent.parent, digest(read_only_study)
    done = in_process("sweep", "sweep.yaml", "--show", cwd=folder)
    assert done.returncode == 0 and done.stdout.count(" finished ") == 2, done.stdout + done.stderr
    assert digest(read_only_study) == before and sorted(os.listdir(read_only_study.parent)) == [
        "sweep", "sweep-best.yaml", "sweeps.db"]


def test_a_sweep_into_a_read_only_database_is_refused(read_only_study):
    folder, before = read_only_study.parent.parent, digest(read_only_study)
    done = in_process("sweep", "sweep.yaml", "--storage", "sqlite:///runs/sweeps.db", cwd=folder)
    assert done.returncode == 2 and errors(done) == [
        "error: runs/sweeps.db: the study database is read-only, and a sweep records its trials in it; only --show "
        "reads it"], done.stderr
    assert digest(read_only_study) == before


@pytest.mark.parametrize("content", [b"", b"not a database\n"], ids=["empty file", "text file"])
def test_show_of_a_file_without_a_study_creates_nothing(tmp_path, content):
    write_sweep(tmp_path)
    (tmp_path / "x.db").write_bytes(content)
    done = in_process("sweep", "sweep.yaml", "--show", "--storage", "sqlite:///x.db", cwd=tmp_path)
    assert done.returncode == 2 and len(errors(done)) == 1, done.stderr
    missing = in_process("sweep", "sweep.yaml", "--show", "--storage", "sqlite:///missing.db", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot open it" in missing.stderr
    assert (tmp_path / "x.db").read_bytes() == content and not (tmp_path / "missing.db").exists()


def test_a_real_process_ends_each_kind_of_refusal_as_this_process_does(tmp_path):
    """The refusals here run in this process; `python -m mnist_keras` gives one of each kind the same exit code and
    output, and writes nothing either."""
    write_sweep(tmp_path, space=SEARCHES)
    (tmp_path / "bad.yaml").write_text((tmp_path / "sweep.yaml").read_text().split("space:")[0] +
                                       "space:\n  data.batch_size: {choice: [64]}\n")
    _foreign(tmp_path / "app.db")
    before = digest(tmp_path / "app.db")
    for args in (["sweep", "sweep.yaml", "--set", "train.optimizer=rmsprop"], ["sweep", "bad.yaml"],
                 ["sweep", "sweep.yaml", "--storage", "sqlite:///app.db", "--show"],
                 ["sweep", "sweep.yaml", "--show", "--storage", "sqlite:///missing.db"],
                 ["sweep", "sweep.yaml", "--study", "../../escape"]):
        real, here = cli(tmp_path, *args), in_process(*args, cwd=tmp_path)
        assert real.returncode == 2 and len(errors(real)) == 1, real.stderr
        assert (real.returncode, real.stdout, real.stderr) == (here.returncode, here.stdout, here.stderr)
    assert digest(tmp_path / "app.db") == before
    assert sorted(os.listdir(tmp_path)) == ["app.db", "bad.yaml", "sweep.yaml", "tiny.yaml"]


# ------------------------------------------------------------------------- names that become paths


@pytest.mark.parametrize("name", ["../../escape", "..", "/tmp/escape-absolute", "a/b", "a\\b", "", "tab\there"])
@pytest.mark.parametrize("show", [False, True], ids=["sweep", "show"])
def test_a_study_name_that_is_no_plain_name_is_refused_before_anything_is_written(tmp_path, name, show):
    work = tmp_path / "work"
    work.mkdir()
    write_sweep(work)
    done = in_process("sweep", "sweep.yaml", "--study", name, *(["--show"] if show else []), cwd=work)
    assert done.returncode == 2 and len(errors(done)) == 1, done.stdout + done.stderr
    assert errors(done)[0].startswith("error: --study ") and "a name is 1-64 letters" in errors(done)[0]
    assert sorted(p.name for p in work.iterdir()) == ["sweep.yaml", "tiny.yaml"] and os.listdir(tmp_path) == ["work"]
    assert not Path("/tmp/escape-absolute").exists()


def test_a_sweep_file_whose_name_is_no_plain_name_needs_a_study_name(tmp_path):
    write_sweep(tmp_path)
    (tmp_path / "sweep.yaml").rename(tmp_path / "my sweep.yaml")
    done = in_process("sweep", "my sweep.yaml", cwd=tmp_path)
    assert done.returncode == 2 and errors(done)[0].startswith("error: my sweep.yaml: the study is named after the "
                                                               "file: a name is") and "give --study NAME" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_retry_never_trains_in_a_recorded_folder_outside_runs(tmp_path):
    write_sweep(tmp_path, trials=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    from mnist_keras.sweeps.search import open_search
    from mnist_keras.sweeps.study import distributions, quiet

    search = open_search(tmp_path / "sweep.yaml", runs=tmp_path / "runs")
    with quiet():
        crashed = search.study.ask(distributions(search.sweep))  # a trial whose process died, in a hostile study
    crashed.set_user_attr("process", {"trial": crashed.number, "host": socket.gethostname(), "pid": 2**22 + 1})
    crashed.set_user_attr("run_dir", str(outside))
    done = in_process("sweep", "sweep.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.listdir(outside) == [] and len(list(tmp_path.glob("runs/sweep/*/state.json"))) == 1, done.stdout


# ------------------------------------------------------------------------- every trial failed


def _bad_data(folder: Path) -> str:
    (folder / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip archive")
    (folder / "tiny.yaml").write_text((folder / "tiny.yaml").read_text().replace("source: bundled", "dataset: bad.npz"))
    return f"{folder / 'bad.npz'}: not an .npz file"  # the spec's relative path, recorded absolute


def _nan_loss(folder: Path) -> str:
    sweep = folder / "sweep.yaml"
    sweep.write_text(sweep.read_text().replace("[1.0e-3, 3.0e-2]", "[1.0e+20, 1.0e+30]"))
    return "the loss became NaN at epoch 1"


@pytest.mark.parametrize("make, jobs", [(_bad_data, 1), (_nan_loss, 1), (_bad_data, 2)], ids=["bad data file",
                                                                                               "NaN loss", "two jobs"])
def test_a_sweep_whose_every_trial_failed_exits_1_with_the_first_failure(tmp_path, make, jobs):
    write_sweep(tmp_path, trials=2)
    expected = make(tmp_path)
    args = ["sweep", "sweep.yaml", "--jobs", jobs]  # the workers of --jobs 2 print into the real process's output
    done = cli(tmp_path, *args) if jobs > 1 else in_process(*args, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert errors(done)[-1].startswith("error: every trial failed; the first, trial 0: " + expected), done.stderr
    assert done.stdout.count("failed: ") >= 2 and "best spec" not in done.stdout
