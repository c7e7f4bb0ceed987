"""Run the `mnist-keras` CLI with one fault injected at a chosen moment (used by test_faults.py).

    python tests/faults.py FAULT [mnist-keras arguments...]

FAULT is one of
    kill-at-batch:E:S        SIGKILL itself after training step S of epoch E (mid-epoch)
    kill-in-validation:E:S   SIGKILL after validation step S at the end of epoch E
    kill-in-test:S           SIGKILL after step S of the final test-set evaluation
    kill-in-write:NAME:K     SIGKILL while writing the K-th file called NAME: its temporary file
                             is half written and neither fsynced nor renamed
    kill-after-write:NAME:K  SIGKILL just after the K-th file called NAME was renamed into place
    sigint-at-batch:E:S      SIGINT (Ctrl-C) after training step S of epoch E
    fail-in-write:NAME:K     the K-th write of NAME fails with "No space left on device"
    run-dir-together:DIR:N   no fault: wait until N processes have come to create their run directory
                             (each leaves a file in DIR), then create it at the same instant as the others
The kill is real (signal 9 to this process), so nothing runs after it: no finally, no atexit.

Forked(FAULT, ARGS, cwd) is that command in a process forked from one that has already loaded TensorFlow
(multiprocessing's fork server, one per test process): the same process but for the seconds of the import.
"""

from __future__ import annotations

import errno
import multiprocessing.forkserver
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from mnist_keras import cli
from mnist_keras.backend import keras
from mnist_keras.runs import files, run
from mnist_keras.train import callbacks, loop

HERE = Path(__file__).resolve().parent


def die(sig: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), sig)


class AtStep(keras.callbacks.Callback):
    """Sends `sig` after training (or validation) step `step` of epoch `epoch` (both from 1)."""

    def __init__(self, epoch: int, step: int, validation: bool = False, sig: int = signal.SIGKILL):
        super().__init__()
        self.target, self.validation, self.sig, self.epoch = (epoch, step), validation, sig, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if not self.validation and (self.epoch, batch + 1) == self.target:
            die(self.sig)

    def on_test_batch_end(self, batch, logs=None):
        if self.validation and (self.epoch, batch + 1) == self.target:
            die(self.sig)


def add_callback(callback) -> None:
    make = loop.make_callbacks

    def with_fault(*args, **kwargs):
        callbacks, guard = make(*args, **kwargs)
        return [*callbacks, callback], guard

    loop.make_callbacks = with_fault


def kill_in_test(step: int) -> None:
    evaluate = keras.Model.evaluate

    def evaluate_then_die(self, *args, callbacks=None, **kwargs):
        if callbacks is None:  # the test-set evaluation (fit's validation passes its callbacks)
            callbacks = [AtStep(0, step, validation=True)]
        return evaluate(self, *args, callbacks=callbacks, **kwargs)

    keras.Model.evaluate = evaluate_then_die


def in_write(name: str, nth: int, how: str) -> None:
    real = files.atomic_write
    count = 0

    def faulty(path, write):
        nonlocal count
        count += os.path.basename(path) == name
        if os.path.basename(path) != name or count != nth:
            return real(path, write)
        if how == "fail":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if how == "after":
            real(path, write)
            die()

        def half_then_die(tmp):
            write(tmp)
            size = os.path.getsize(tmp)
            with open(tmp, "r+b") as handle:
                handle.truncate(size // 2)
            die()

        real(path, half_then_die)

    files.atomic_write = callbacks.atomic_write = loop.atomic_write = faulty


def run_dir_together(folder: str, count: int) -> None:
    create = run.create_run_dir

    def create_with_the_others(*args, **kwargs):
        """Leave this process's arrival time in `folder`; once `count` are there (at most 5 minutes), wait for
        0.1 s past the whole second after the last arrival, an instant every process computes alike."""
        mine = os.path.join(folder, str(os.getpid()))
        with open(mine + ".partial", "w") as handle:
            handle.write(repr(time.time()))
        os.replace(mine + ".partial", mine)
        deadline = time.monotonic() + 300
        while len(arrivals := [n for n in os.listdir(folder) if n.isdigit()]) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        last = max(float(open(os.path.join(folder, name)).read()) for name in arrivals)
        time.sleep(max(0.0, int(last) + 1.1 - time.time()))
        on_time = len(arrivals) >= count and int(time.time()) == int(last) + 1
        print(f"run-dir-together: {'on time' if on_time else 'late'}", flush=True)
        return create(*args, **kwargs)

    run.create_run_dir = create_with_the_others


def install(fault: str) -> None:
    kind, *args = fault.split(":")
    if kind == "kill-at-batch":
        add_callback(AtStep(int(args[0]), int(args[1])))
    elif kind == "sigint-at-batch":
        add_callback(AtStep(int(args[0]), int(args[1]), sig=signal.SIGINT))
    elif kind == "kill-in-validation":
        add_callback(AtStep(int(args[0]), int(args[1]), validation=True))
    elif kind == "kill-in-test":
        kill_in_test(int(args[0]))
    elif kind in ("kill-in-write", "kill-after-write", "fail-in-write"):
        in_write(args[0], int(args[1]), {"kill-in-write": "in", "kill-after-write": "after", "fail-in-write": "fail"}[kind])
    elif kind == "run-dir-together":
        run_dir_together(args[0], int(args[1]))
    elif kind != "none":
        raise SystemExit(f"unknown fault {fault!r}")


def main(argv: list[str]) -> None:
    """FAULT [mnist-keras arguments...], as on this script's command line."""
    # Ctrl-C as in a terminal, also when the test runner was started in the background (`cmd &` makes
    # a non-interactive shell's children ignore SIGINT, and Python then installs no KeyboardInterrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(argv[0])
    cli.main(argv[1:], prog_name="mnist-keras")


def forked_main(argv: list[str], cwd: str, env: dict[str, str], logs: str, merge: bool) -> None:
    """A Forked's process: main(argv) in `cwd` with `env` added to its environment, stdout and stderr written
    (unbuffered) to files in `logs`, or both to the stdout file where `merge`."""
    out = os.open(os.path.join(logs, "stdout"), os.O_WRONLY)
    err = out if merge else os.open(os.path.join(logs, "stderr"), os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for log in {out, err}:
        os.close(log)
    sys.stdout.reconfigure(write_through=True)  # as PYTHONUNBUFFERED: each line is in the file at once
    os.environ.update(env)
    tempfile.tempdir = None  # read TMPDIR again
    os.chdir(cwd)
    main(argv)


def fork_server() -> multiprocessing.context.BaseContext:
    """multiprocessing's fork server, started (once per process) with this module, so TensorFlow, loaded."""
    server = multiprocessing.get_context("forkserver")
    server.set_forkserver_preload(["faults"])
    # Python 3.11's fork server imports its preload before it takes the caller's sys.path: PYTHONPATH finds us
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE), *([saved] if saved else [])])
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    return server


class Forked:
    """`python tests/faults.py FAULT ARGS...` in `cwd`, forked from a process that has loaded TensorFlow, with
    Popen's pid, poll, wait (a killed one gives minus its signal), send_signal and kill; stdout() and stderr()
    read what it wrote so far (`merge`: stderr goes to stdout). `env`: variables to set in its environment."""

    def __init__(self, fault: str, *args, cwd: Path, env: dict[str, str] | None = None, merge: bool = False):
        self.fault, self.logs = fault, Path(tempfile.mkdtemp(prefix=".fault-logs-", dir=cwd))
        for name in ("stdout", "stderr"):
            (self.logs / name).touch()
        argv = [fault, *map(str, args)]
        self.process = fork_server().Process(target=forked_main,
                                             args=(argv, str(cwd), env or {}, str(self.logs), merge))
        self.process.start()
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise TimeoutError(f"faults.py {self.fault} still runs after {timeout} s")
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.process.kill()

    def stdout(self) -> str:
        return (self.logs / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.logs / "stderr").read_text(errors="replace")

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        """Wait for its end: (exit code, stdout, stderr)."""
        return self.wait(timeout), self.stdout(), self.stderr()


if __name__ == "__main__":
    main(sys.argv[1:])
