"""A study shared through a real PostgreSQL server (Debian's package, started in a temporary folder on a free
loopback port, as a non-root user): two sweep workers, every trial trained once. Skipped without PostgreSQL."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest

from test_sweeps import finish, state, sweep_process, write_sweep

pytestmark = pytest.mark.postgres
BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_owner(owner: str | None, *command) -> list[str]:
    return ["runuser", "-u", owner, "--", *command] if owner else list(command)


@pytest.fixture
def postgres_url():
    if not BINARIES:
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    bin_dir = Path(BINARIES[-1])
    owner = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres").pw_name
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server")
    folder = Path(tempfile.mkdtemp(prefix="mnist-keras-pg-"))  # not under pytest's root-only tmp folder
    port = _free_port()
    if owner:
        shutil.chown(folder, owner)
    data = folder / "data"
    subprocess.run(as_owner(owner, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust"),
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run(as_owner(owner, bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w",
                             "start"), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_owner(owner, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_postgresql_study_and_train_each_trial_once(tmp_path, postgres_url):
    write_sweep(tmp_path, trials=4)
    out = finish(sweep_process(tmp_path, "--storage", postgres_url, "--study", "shared", "--jobs", "2"))
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    assert 4 <= len(trials) <= 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    runs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(runs)) == len(runs) == len(list(tmp_path.glob("runs/shared/*/state.json")))
    assert all(state(tmp_path / run)["status"] == "finished" for run in runs)
    assert "[worker 1] trial" in out and "[worker 2] trial" in out
