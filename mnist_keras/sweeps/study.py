"""The Optuna side of a search: storage (SQLite by default, any RDB URL; in memory for --grid), the study and the
space it was made for, which trials count, and the workers' loop (Study.optimize). No TensorFlow here: trials train
in trial.py."""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import sqlite3
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Protocol

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ..errors import UserError
from ..runs.record import RunState
from ..spec.yamlfile import clip
from .file import Sweep, grid_size

HEARTBEAT_S = 5  # a running trial writes a heartbeat this often
GRACE_S = 60  # a trial without one for this long is taken as crashed (another machine's), failed and retried
MAX_RETRIES = 3  # a trial whose process keeps dying (out of memory, say) is retried this often, then left failed
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class FailedTrial(Exception):
    """A trial that failed in training (its message is its user attribute `error`): Optuna records it as failed,
    and the search goes on."""


@contextmanager
def quiet():
    """Without Optuna's notes on experimental features (heartbeats, the retry callback, matplotlib figures), on
    heartbeats used outside Study.optimize, and its log lines on failed trials (each is shown as one line)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def retry_crashed(study: optuna.Study, number: int) -> None:
    """Queue a retry of the failed trial `number` (its values and user attributes, its run directory included),
    unless it was retried MAX_RETRIES times already."""
    (trial,) = [t for t in study.get_trials() if t.number == number]
    with quiet():
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


class _Storage(RDBStorage):
    """Optuna's RDB storage, whose heartbeat (recorded by Study.optimize's thread) lets a busy database be: a
    failed beat would end the thread, and another worker would take the trial as crashed while it trains."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except optuna.exceptions.StorageInternalError:
            pass  # the next beat is in time


def shown_url(url: str) -> str:
    """A storage URL with its password hidden."""
    return clip(re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url), 120)


def default_storage(runs: Path) -> str:
    return f"sqlite:///{runs / 'sweeps.db'}"


def open_storage(url: str, readonly: bool = False, attempts: int = 10) -> RDBStorage:
    """The study storage with heartbeats and retries of crashed trials; UserError when it cannot be reached, is
    read-only, or holds anything but Optuna's tables (checked before anything is written). `readonly` (--show)
    creates nothing and opens an SQLite file read-only. Processes started together may all create the tables at
    once: the losers try again a second later."""
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    for attempt in range(attempts):
        try:
            engine_kwargs = _engine_kwargs(url, readonly)
            _check_tables(url, engine_kwargs, readonly)
            with quiet():
                return _Storage(url, engine_kwargs=engine_kwargs, skip_table_creation=readonly,
                                heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
        except IntegrityError as err:
            if attempt == attempts - 1:
                raise _unusable(url, err) from None
            time.sleep(1)
        except (SQLAlchemyError, ImportError, ValueError, OSError, RuntimeError) as err:  # RuntimeError: an old schema
            raise _unusable(url, err) from None


def _sqlite_file(url: str) -> Path | None:
    """The file of an sqlite:/// URL (None for another database or one in memory)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _engine_kwargs(url: str, readonly: bool) -> dict:
    """How to connect: with a timeout; an SQLite file read-only for --show, and refused when it is read-only
    for a sweep, which writes its trials there."""
    file = _sqlite_file(url)
    if file is None:
        return {"connect_args": {"timeout": 60} if url.startswith("sqlite") else {"connect_timeout": 10}}
    if readonly:
        uri = f"{file.resolve().as_uri()}?mode=ro"
        return {"creator": lambda: sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)}
    marked = file.exists() and (not os.access(file, os.W_OK) or not file.stat().st_mode & 0o222)  # root too
    if marked or file.parent.is_dir() and not os.access(file.parent, os.W_OK | os.X_OK):
        raise UserError(f"{clip(str(file), 240)}: the study database is read-only, and a sweep records its trials "
                        "in it; only --show reads it")
    return {"connect_args": {"timeout": 60}}


def _check_tables(url: str, engine_kwargs: dict, readonly: bool) -> None:
    """UserError for a database that holds tables (or an Alembic schema) that are not an Optuna study's, and,
    for --show, for one without Optuna's tables."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as connection:
            inspector = sqlalchemy.inspect(connection)
            names = set(inspector.get_table_names()) | set(inspector.get_view_names())
            revisions = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalars().all() \
                if "alembic_version" in names else []
    finally:
        engine.dispose()
    place = clip(str(_sqlite_file(url) or shown_url(url)), 240)
    tables, known = _optuna_schema()
    foreign = sorted(names - tables)
    if foreign:
        listed = ", ".join(clip(name) for name in foreign[:5]) + (f" and {len(foreign) - 5} more" * (len(foreign) > 5))
        raise UserError(f"{place}: this database holds tables that are not an Optuna study's ({listed}); a sweep "
                        "writes nothing into another program's database: give it one of its own (--storage URL)")
    other = next((str(r) for r in revisions if r not in known), None)
    if other is not None:
        raise UserError(f"{place}: this database's alembic_version is {clip(other)}, another application's schema, "
                        "not Optuna's; give the sweep a database of its own (--storage URL)")
    if readonly and "studies" not in names:
        raise UserError(f"{place}: no Optuna study here")


@functools.cache
def _optuna_schema() -> tuple[set[str], set[str]]:
    """The tables a study's database may hold and the Alembic revisions of Optuna's schema, read from a storage
    made in memory (Optuna's public API names neither)."""
    import sqlalchemy

    with quiet():
        storage = RDBStorage("sqlite:///:memory:")
    try:
        return set(sqlalchemy.inspect(storage.engine).get_table_names()), set(storage.get_all_versions())
    finally:
        storage.engine.dispose()


def _unusable(url: str, err: Exception) -> UserError:
    reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
    driver = " (pip install 'psycopg[binary]' for postgresql://)" if isinstance(err, ImportError) else ""
    return UserError(f"--storage {shown_url(url)}: cannot open it: {clip(reason, 200)}{driver}")


def sampler(sweep: Sweep, salt: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler; with a `seed`, seeded by seed + salt (see work), except a grid's: its seed orders the
    grid, the same in every process. A --random draw of a grid is enqueued: no sampler draws it."""
    seed = None if sweep.config.seed is None else (sweep.config.seed + salt) % 2**32
    if sweep.drawn:
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.config.sampler == "grid":
        return optuna.samplers.GridSampler({path: d.values for path, d in sweep.space.items()}, seed=sweep.config.seed)
    if sweep.config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    return {"median": optuna.pruners.MedianPruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
            "none": optuna.pruners.NopPruner}[sweep.config.pruner]()


def open_study(sweep: Sweep, storage: RDBStorage, name: str, existing: bool = False) -> optuna.Study:
    """The named study (an `existing` one only loaded, nothing written), made for this sweep's space and
    objective if new; UserError if it was made for another."""
    with quiet():
        if existing:
            study = optuna.load_study(storage=storage, study_name=name, sampler=sampler(sweep), pruner=pruner(sweep))
        else:
            study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True, sampler=sampler(sweep),
                                        pruner=pruner(sweep), direction=sweep.config.objective.direction)
    record = sweep.space_record()
    made_for = study.user_attrs.get("space")
    if made_for is None and not existing:
        study.set_user_attr("space", record)
    elif made_for is not None and made_for != record:
        raise UserError(f"{sweep.where}: study '{clip(name)}' in {shown_url(storage.url)} was made for another "
                        f"search ({_difference(json.loads(made_for), json.loads(record))}); give this one its own "
                        "--study NAME, or run the study's own sweep file")
    return study


def _difference(old: dict, new: dict) -> str:
    if old["objective"] != new["objective"]:
        return f"its objective is {old['objective']['direction']} {old['objective']['metric']}"
    changed = sorted(set(old["space"]) ^ set(new["space"]) | {k for k in old["space"] if old["space"][k] !=
                                                              new["space"].get(k, old["space"][k])})
    return f"its space differs at {', '.join(changed)}"


def distributions(sweep: Sweep) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna's distribution of each space path."""
    made = {}
    for path, d in sweep.space.items():
        if d.kind in ("uniform", "loguniform"):
            made[path] = optuna.distributions.FloatDistribution(*d.values, log=d.kind == "loguniform")
        elif d.kind == "int":
            made[path] = optuna.distributions.IntDistribution(*d.values)
        else:
            made[path] = optuna.distributions.CategoricalDistribution(d.values)
    return made


def suggest(trial: optuna.Trial, sweep: Sweep) -> dict:
    """The trial's value of every space path (a retried or enqueued trial's own values)."""
    for path, made in distributions(sweep).items():
        if isinstance(made, optuna.distributions.FloatDistribution):
            trial.suggest_float(path, made.low, made.high, log=made.log)
        elif isinstance(made, optuna.distributions.IntDistribution):
            trial.suggest_int(path, made.low, made.high)
        else:
            trial.suggest_categorical(path, made.choices)
    return trial.params


def planned_trials(sweep: Sweep) -> int:
    """`trials`, or fewer when the grid sampler has fewer points."""
    if sweep.config.sampler != "grid":
        return sweep.config.trials
    return min(grid_size(sweep), sweep.config.trials)


def is_done(trial: FrozenTrial) -> bool:
    """Whether the trial counts as done: it finished, was pruned or failed in training (a NaN loss); one that
    crashed does not: its retry counts instead."""
    return trial.state in FINISHED or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def counts(trials: list[FrozenTrial]) -> tuple[int, int, int]:
    """(done, running, waiting), done as is_done says."""
    done = sum(is_done(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done, running, sum(t.state == TrialState.WAITING for t in trials)


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail (and so retry) the running trials whose process on this machine is gone, without waiting for the
    heartbeat's grace period; other machines' trials are left to the heartbeat."""
    kept, study.sampler = study.sampler, optuna.samplers.RandomSampler()  # a GridSampler's after_trial may stop an
    try:  # optimize, which outside one is an error; the dead trial's sampler was another process's anyway
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            process = trial.user_attrs.get("process", {})  # a retry inherits its crashed trial's until it sets its own
            if process.get("trial") != trial.number or process.get("host") != socket.gethostname() or \
                    RunState(pid=process.get("pid"), host=process.get("host")).process_alive():
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker got there first
            retry_crashed(study, trial.number)
    finally:
        study.sampler = kept


class Trials(Protocol):
    """What trains a worker's trials (trial.TrialRunner)."""

    def objective(self, trial: optuna.Trial) -> float: ...

    def summary(self, trial: FrozenTrial) -> str: ...


def work(sweep: Sweep, study: optuna.Study, trials: Trials, echo: Callable[[str], None], worker: int = 0) -> None:
    """Take trials from the shared study (Study.optimize) until it holds its planned number of done trials: first
    the retries of crashed ones (Optuna pops waiting trials first), then new ones; wait while the last ones run
    elsewhere (they may crash and need a retry). A seeded sampler is seeded anew for each trial from the trials so
    far and the worker's number, so one process draws the same values every time and the workers of --jobs
    draw different ones."""
    planned = planned_trials(sweep)

    def more(study: optuna.Study) -> bool:
        while True:
            with quiet():
                fail_dead_trials(study)
                optuna.storages.fail_stale_trials(study)
                known = study.get_trials(deepcopy=False)
            done, running, waiting = counts(known)
            if done >= planned:
                return False
            if waiting or done + running < planned:
                break
            time.sleep(HEARTBEAT_S)
        if sweep.config.sampler != "grid":
            study.sampler = sampler(sweep, 100_003 * worker + len(known))
        return True

    def after(study: optuna.Study, trial: FrozenTrial) -> None:
        echo(trials.summary(trial))
        if not more(study):
            study.stop()

    while more(study):  # a GridSampler stops the loop when no point is left unfinished, a retry may be
        with quiet():
            study.optimize(trials.objective, callbacks=[after], catch=(FailedTrial,))


def retry_of(trial: FrozenTrial) -> int | None:
    """The number of the crashed trial this one retries (None for a first try)."""
    with quiet():
        history = RetryHeartbeatStaleTrialCallback.retry_history(trial)
    return history[-1] if history else None
