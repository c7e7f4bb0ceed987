"""The cluster of a multi_worker run: its workers (TF_CONFIG, or --workers and --worker-index), a bounded wait for
them to start, what every worker takes from the chief before the first step (the spec compared, the run's record
and checkpoint given), and a lost worker named.

The chief (the `chief` task of TF_CONFIG, else worker 0) alone writes the run directory. The other workers need
nothing from it: at the start the chief sends them its run record and last checkpoint (a new run sends none), so
the same command on every machine starts a run or resumes it. A worker that stops answering (killed, or its link
cut) is noticed by TensorFlow's coordination service within HEARTBEAT_S; every other worker then stops, names it
and exits 1, and the chief's run keeps its last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError

HEARTBEAT_S = 10  # a worker silent this long is lost (TensorFlow's coordination service heartbeat timeout)
LINGER_S = 3  # a worker that lost another stays this long before it exits (its port open: see lost_worker)
ADDRESS = re.compile(r"[^\s:,/]+:\d{1,5}")
SHAPE = 'expected {"cluster": {"worker": ["HOST:PORT", ...]}, "task": {"type": "worker", "index": N}}'


def cluster_from_flags(workers: tuple[str, ...], index: int | None) -> dict | None:
    """The TF_CONFIG that `--workers HOST:PORT,... --worker-index N` describe (each --workers may list one or more
    addresses, comma-separated); None without those flags."""
    if not workers and index is None:
        return None
    addresses = [address.strip() for item in workers for address in item.split(",") if address.strip()]
    if not addresses or index is None:
        raise UserError("--workers and --worker-index go together: --workers HOST:PORT,HOST:PORT,... (the same list, "
                        "in the same order, on every worker) and --worker-index N for this one")
    for address in addresses:
        if not ADDRESS.fullmatch(address):
            raise UserError(f"--workers: expected HOST:PORT (e.g. 10.0.0.2:12345), got {address[:60]!r}")
    if len(set(addresses)) < len(addresses):
        raise UserError(f"--workers: {', '.join(addresses)[:200]} names one address twice")
    if index >= len(addresses):
        raise UserError(f"--worker-index: {index} is not one of the {len(addresses)} workers (0-{len(addresses) - 1})")
    return {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}


def cluster_from_environment() -> dict:
    """TF_CONFIG, checked enough to give a clear message instead of a TensorFlow traceback."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("runtime.distribute: multi_worker needs the cluster: set TF_CONFIG, or pass "
                        "--workers HOST:PORT,... and --worker-index N")
    try:
        config = json.loads(text)
    except ValueError as err:
        raise UserError(f"TF_CONFIG: {SHAPE} (not JSON: {err})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError(f"TF_CONFIG: {SHAPE}")
    for kind, members in cluster.items():
        if kind not in ("chief", "worker") or not isinstance(members, list) or not members:
            raise UserError(f"TF_CONFIG: cluster.{str(kind)[:40]} must be a non-empty list of HOST:PORT "
                            "addresses, and only chief and worker lists are supported")
        for address in members:
            if not isinstance(address, str) or not ADDRESS.fullmatch(address):
                raise UserError(f"TF_CONFIG: cluster.{kind}: expected HOST:PORT strings, got {str(address)[:60]!r}")
    if "worker" not in cluster:
        raise UserError(f"TF_CONFIG: the cluster has no worker list; {SHAPE}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise UserError(f"TF_CONFIG: task.type {str(kind)[:40]!r} is not one of the cluster's lists ({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise UserError(f"TF_CONFIG: task index {str(index)[:40]} is not one of the {len(cluster[kind])} "
                        f"{kind} addresses (0-{len(cluster[kind]) - 1})")
    return config


def tasks(cluster: dict) -> list[tuple[str, int, str]]:
    """(type, index, address) of every task, the chief first: the order of TensorFlow's replica ids."""
    members = cluster["cluster"]
    return [(kind, index, address) for kind in ("chief", "worker") for index, address in enumerate(members.get(kind, []))]


def addresses(cluster: dict) -> list[str]:
    return [address for _, _, address in tasks(cluster)]


def task_name(kind: str, index: int) -> str:
    return "the chief" if kind == "chief" else f"worker {index}"


def me(cluster: dict) -> str:
    """This task, as messages name it: "worker 1 of 3"."""
    task = cluster["task"]
    return f"{task['type']} {task['index']} of {len(tasks(cluster))}"


def is_chief(cluster: dict) -> bool:
    """Whether this task writes the run: the chief task, else worker 0."""
    task = cluster["task"]
    return task["type"] == "chief" or ("chief" not in cluster["cluster"] and task["index"] == 0)


def _check_port_free(cluster: dict) -> None:
    """UserError when a program listens on this task's port on this machine (TensorFlow would fail with a
    traceback)."""
    task = cluster["task"]
    address = cluster["cluster"][task["type"]][task["index"]]
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a server that just ended leaves TIME_WAITs
        try:
            probe.bind(("", int(address.rsplit(":", 1)[1])))
        except OSError as err:
            raise UserError(f"{me(cluster)}: cannot listen on {address} ({err.strerror}): is another worker or "
                            "program using that port on this machine?") from None


_WATCHDOG = """
import ctypes, json, os, signal, socket, sys, time
pid, wait, peers, me = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
status, deadline, libc = f"/proc/{pid}/status", time.monotonic() + wait, ctypes.CDLL(None)
def end(sig):  # its handler needs the GIL, which the main thread holds: any other thread would wait
    try:
        libc.tgkill(pid, pid, sig)
    except AttributeError:  # a C library without tgkill
        os.kill(pid, sig)
    for _ in range(50):
        time.sleep(0.1)
        if not os.path.exists(status):
            sys.exit(0)
    os.kill(pid, signal.SIGKILL)  # the handler could not run
    sys.exit(0)
def silent(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except socket.gaierror:
        return "its name does not resolve"
    except ConnectionRefusedError:
        return "nothing listens there (not started, or another port)"
    except OSError:
        return "no answer (a wrong address, or a firewall)"
while True:
    try:
        pending = int(next(l for l in open(status) if l.startswith("ShdPnd:")).split()[1], 16)
    except (OSError, StopIteration):
        sys.exit(0)  # the worker is gone
    for sig in (signal.SIGINT, signal.SIGTERM):
        if pending & (1 << (sig - 1)):
            sys.stderr.write(f"\\nstopped by {sig.name} while waiting for the other workers\\n")
            end(signal.SIGUSR1)  # its C-level handler exits 128 + the signal
    if time.monotonic() > deadline:
        quiet = [f"{name} at {address}: {why}" for name, address in peers if (why := silent(address))]
        why = "; ".join(quiet) if quiet else ("every other worker answers, but they do not form one cluster: do all "
                                              "of them have the same worker list, in the same order?")
        sys.stderr.write(f"error: {me}: the other workers did not all start within {wait:g} s "
                         f"(runtime.cluster_wait): {why}\\n")
        end(signal.SIGUSR2)  # its C-level handler exits 2
    time.sleep(0.1)
"""


def _exit_for_watchdog(signum: int) -> None:
    """The watchdog's signal, run by the C signal handler on the main thread, which holds the GIL inside
    TensorFlow: SIGUSR2 (the cluster did not form in time) exits 2; SIGUSR1 ends the process as the shell would
    report the pending stop, 128 + its number (130 for Ctrl-C, 143 for SIGTERM)."""
    if signum == signal.SIGUSR2:
        os._exit(2)
    pending = signal.sigpending() & {signal.SIGINT, signal.SIGTERM}
    os._exit(128 + min(pending, default=signal.SIGINT))


@contextmanager
def bounded_wait(cluster: dict, wait_s: float) -> Iterator[None]:
    """While the main thread waits inside TensorFlow's C++ for the other workers, holding the GIL (no Python
    handler or thread runs): let Ctrl-C and SIGTERM end the process, and end it with exit 2 after `wait_s`
    seconds, naming the workers that do not answer. Both signals are blocked in every thread meanwhile
    (TensorFlow's own threads block them from the start, see backend.py), so they stay pending, and a small
    watchdog process reads this process's pending signals from /proc and watches the clock; it sends SIGUSR1 or
    SIGUSR2, whose handler (a C-level one, through ctypes) exits with the code. (Without /proc, no bound.)"""
    import ctypes

    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    libc = ctypes.CDLL(None)
    libc.signal.restype, libc.signal.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p]
    handler = ctypes.CFUNCTYPE(None, ctypes.c_int)(_exit_for_watchdog)  # referenced until restored
    previous = {sig: libc.signal(sig, ctypes.cast(handler, ctypes.c_void_p)) for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    task = cluster["task"]
    peers = [(task_name(kind, index), address) for kind, index, address in tasks(cluster)
             if (kind, index) != (task["type"], task["index"])]
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(wait_s), json.dumps(peers),
                                 me(cluster)]) if os.path.exists(f"/proc/{os.getpid()}/status") else None
    try:
        yield
    finally:
        if watchdog:
            watchdog.kill()
            watchdog.wait()
        for sig, old in previous.items():
            libc.signal(sig, old)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


def form(cluster: dict, wait_s: float):
    """MultiWorkerMirroredStrategy over `cluster`, once every worker has started (at most `wait_s` seconds: then
    exit 2), with TensorFlow's coordination service watching every worker's heartbeat."""
    from ..backend import tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    _check_port_free(cluster)
    os.environ["TF_CONFIG"] = json.dumps(cluster)
    members = cluster["cluster"]
    context.context().configure_coordination_service(  # as the strategy would, with the heartbeat stated
        service_type="standalone", service_leader=f"/job:{'chief' if 'chief' in members else 'worker'}/replica:0/task:0",
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=kind, num_tasks=len(members[kind]))
                          for kind in ("chief", "worker") if kind in members],
        heartbeat_timeout_in_ms=HEARTBEAT_S * 1000)
    with bounded_wait(cluster, wait_s):
        return tf.distribute.MultiWorkerMirroredStrategy()


_WATCH = """
import json, os, socket, sys, time
pid, peers, misses = int(sys.argv[1]), json.loads(sys.argv[2]), {}
while os.path.exists(f"/proc/{pid}"):
    for name, address in peers:
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            misses[name] = 0
            continue
        except ConnectionRefusedError:
            why, enough = "its process ended", 1
        except OSError:
            why, enough = "no answer: its machine or network is down", 2
        misses[name] = misses.get(name, 0) + 1
        if misses[name] >= enough:
            print(json.dumps([name, address, why]), flush=True)
            sys.exit(0)
    time.sleep(0.5)
"""


class PeerWatch:
    """A small process that tries every other worker's port twice a second while this one trains, and tells the
    first that stops answering: the worker that was lost, where TensorFlow's errors may name a worker that only
    stopped because of it."""

    def __init__(self, cluster: dict):
        task = cluster["task"]
        peers = [(task_name(kind, index), address) for kind, index, address in tasks(cluster)
                 if (kind, index) != (task["type"], task["index"])]
        self.process = subprocess.Popen([sys.executable, "-c", _WATCH, str(os.getpid()), json.dumps(peers)],
                                        stdout=subprocess.PIPE, text=True)

    def first_lost(self, wait_s: float) -> str | None:
        """"worker 1 at HOST:PORT (its process ended)", waiting up to `wait_s` seconds for one; None if none."""
        import select

        if not select.select([self.process.stdout], [], [], wait_s)[0]:
            return None
        line = self.process.stdout.readline()
        if not line:
            return None
        name, address, why = json.loads(line)
        return f"{name} at {address} ({why})"


_PEER_FAILURE = re.compile(r"Collective ops is aborted|CoordinationService|unhealthy|heartbeat|Connection reset|"
                           r"Socket closed|failed to connect|Connection refused", re.IGNORECASE)


def lost_worker(err: BaseException, cluster: dict, watch: PeerWatch | None) -> str | None:
    """Who was lost when `err` is TensorFlow's error for a worker that stopped answering ("worker 1 at
    10.0.0.3:12345 (its process ended)"), None for any other error: the first worker `watch` saw silent, else
    the one TensorFlow's message names. Waits LINGER_S first: every worker that stops for a lost one does, so a
    watch slow to run (a busy machine) still finds the lost worker silent before the others."""
    from ..backend import tf

    text = str(err)
    if not isinstance(err, tf.errors.OpError) or not _PEER_FAILURE.search(text):
        return None
    time.sleep(LINGER_S)  # with the port still open, so the others' watches see the lost worker go first, not this one
    seen = watch.first_lost(wait_s=3) if watch else None
    if seen:
        return seen
    task = cluster["task"]
    named = text.split("unhealthy", 1)[1] if "unhealthy" in text else text
    where = {(kind, index): address for kind, index, address in tasks(cluster)}
    lost = []
    for kind, index in re.findall(r"/job:(chief|worker)/replica:\d+/task:(\d+)", named):
        key = (kind, int(index))
        if key in where and key != (task["type"], task["index"]) and key not in lost:
            lost.append(key)
    if not lost and "CoordinationService" in text:  # its heartbeats to the service, on the chief, went unanswered
        lost = [tasks(cluster)[0][:2]]
    return ", ".join(f"{task_name(*key)} at {where[key]}" for key in lost) or "a worker"


def _from_first(strategy, value):
    """Replica 0's `value` (a numpy array; the chief's first device), given to every replica."""
    from ..backend import tf

    @tf.function(autograph=False)
    def given(local):
        context = tf.distribute.get_replica_context()
        first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), local.dtype)
        return context.all_reduce("SUM", local * first)

    return strategy.experimental_local_results(strategy.run(given, args=(tf.constant(value),)))[0].numpy()


def agree(strategy, cluster: dict, spec_text: str) -> None:
    """UserError on every worker, naming the workers whose spec is not the chief's (each worker's spec, as text,
    compared through a digest)."""
    import numpy as np
    from ..backend import tf

    replicas = strategy.num_replicas_in_sync
    digest = int.from_bytes(hashlib.sha256(spec_text.encode()).digest()[:7], "big")

    @tf.function(autograph=False)
    def place(local):  # this replica's digest in its own slot, then every slot summed
        context = tf.distribute.get_replica_context()
        return context.all_reduce("SUM", tf.scatter_nd([[context.replica_id_in_sync_group]], [local], [replicas]))

    digests = strategy.experimental_local_results(strategy.run(place, args=(tf.constant(digest, tf.int64),)))[0].numpy()
    everyone = tasks(cluster)
    per_task = replicas // len(everyone)
    differ = sorted({slot // per_task for slot in np.flatnonzero(digests != digests[0])})
    if differ:
        from tensorflow.python.eager import context

        context.context().wait_at_barrier("mnist-keras: the specs compared", 60_000)  # no one leaves before all know
        names = ", ".join(f"{task_name(*everyone[i][:2])} at {everyone[i][2]}" for i in differ)
        raise UserError(f"{me(cluster)}: the spec of {names} is not the chief's: run the same spec, with the same "
                        "--set values, on every worker")


def from_chief(strategy, files: dict[str, bytes] | None) -> dict[str, bytes]:
    """The chief's `files` (name -> contents; None on the other workers) on every worker."""
    import numpy as np

    if files is not None:
        header = json.dumps({name: len(data) for name, data in files.items()}).encode()
        payload = len(header).to_bytes(8, "big") + header + b"".join(files.values())
    size = int(_from_first(strategy, np.array([len(payload) if files is not None else 0], np.int64))[0])
    mine = np.frombuffer(payload, np.uint8).astype(np.int32) if files is not None else np.zeros(size, np.int32)
    payload = _from_first(strategy, mine).astype(np.uint8).tobytes()
    length = int.from_bytes(payload[:8], "big")
    sizes, offset, shared = json.loads(payload[8:8 + length]), 8 + length, {}
    for name, count in sizes.items():
        shared[name], offset = payload[offset:offset + count], offset + count
    return shared


@contextmanager
def scratch_run_dir(files: dict[str, bytes]) -> Iterator[Path]:
    """Where a worker other than the chief saves: Keras 3 runs collective ops in model.save under
    MultiWorkerMirroredStrategy, so every worker must save what the chief saves, in step with it. Holds the
    chief's run record and checkpoint (`files`) to resume from; deleted at the end."""
    with tempfile.TemporaryDirectory(prefix="mnist-keras-worker-") as folder:
        run_dir = Path(folder) / "run"
        (run_dir / "checkpoints").mkdir(parents=True)
        for name, data in files.items():
            (run_dir / name).write_bytes(data)
        yield run_dir
