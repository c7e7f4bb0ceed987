"""Where training runs: one device, tf.distribute.MirroredStrategy over this machine's GPUs, or
tf.distribute.MultiWorkerMirroredStrategy across machines; and the mixed-precision policy.

`data.batch_size` is the global batch: each step splits it across all replicas (every GPU of every
worker), and the learning rate is never rescaled, so a spec takes the same steps on 1 or 8 GPUs.
Under multi_worker every worker runs the same command; worker 0 (or the `chief` task of TF_CONFIG)
is the chief: it alone creates and writes the run directory. The other workers write nothing there
(they save into a scratch folder deleted at the end); to resume, each one is given the chief's run
directory (a shared folder, or a copy) and only reads it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import UserError

NO_GPU = "TensorFlow sees no GPU on this machine (`mnist-keras devices` lists what it sees)"


@dataclass
class Placement:
    """Where the model lives: a strategy, or one device when `strategy` is None."""

    described: str
    device: str = "/CPU:0"
    strategy: Any = None
    on_gpu: bool = False
    is_chief: bool = True  # false on the workers of a cluster that write nothing

    def scope(self) -> AbstractContextManager:
        """Create, compile and load models inside this."""
        from ..backend import tf

        return self.strategy.scope() if self.strategy else tf.device(self.device)


def cluster_from_flags(workers: tuple[str, ...], task_index: int | None) -> dict | None:
    """The TF_CONFIG that `--worker HOST:PORT ... --task-index N` describe; None without those flags."""
    if not workers and task_index is None:
        return None
    if not workers or task_index is None:
        raise UserError("--worker and --task-index go together: --worker HOST:PORT once per worker "
                        "(the same list, in the same order, on every worker) and --task-index N for this one")
    for address in workers:
        if not re.fullmatch(r"[^\s:]+:\d{1,5}", address):
            raise UserError(f"--worker: expected HOST:PORT (e.g. 10.0.0.2:12345), got {address!r}")
    if task_index >= len(workers):
        raise UserError(f"--task-index: {task_index} is not one of the {len(workers)} workers (0-{len(workers) - 1})")
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": task_index}}


def cluster_from_environment() -> dict:
    """TF_CONFIG, checked enough to give a clear message instead of a TensorFlow traceback."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("runtime.distribute: multi_worker needs the cluster: set TF_CONFIG, or pass "
                        "--worker HOST:PORT once per worker and --task-index N")
    shape = 'expected {"cluster": {"worker": ["HOST:PORT", ...]}, "task": {"type": "worker", "index": N}}'
    try:
        config = json.loads(text)
    except ValueError as err:
        raise UserError(f"TF_CONFIG: {shape} (not JSON: {err})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError(f"TF_CONFIG: {shape}")
    for kind, members in cluster.items():
        if kind not in ("chief", "worker") or not isinstance(members, list) or not members:
            raise UserError(f"TF_CONFIG: cluster.{str(kind)[:40]} must be a non-empty list of HOST:PORT "
                            "addresses, and only chief and worker lists are supported")
        for address in members:
            if not isinstance(address, str) or not re.fullmatch(r"[^\s:]+:\d{1,5}", address):
                raise UserError(f"TF_CONFIG: cluster.{kind}: expected HOST:PORT strings, got {str(address)[:60]!r}")
    if "worker" not in cluster:
        raise UserError(f"TF_CONFIG: the cluster has no worker list; {shape}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise UserError(f"TF_CONFIG: task.type {str(kind)[:40]!r} is not one of the cluster's lists ({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise UserError(f"TF_CONFIG: task index {str(index)[:40]} is not one of the {len(cluster[kind])} "
                        f"{kind} addresses (0-{len(cluster[kind]) - 1})")
    return config


_WATCHDOG = """
import ctypes, os, signal, sys, time
pid, status = int(sys.argv[1]), f"/proc/{sys.argv[1]}/status"
libc = ctypes.CDLL(None)
def to_main_thread(sig):  # its handler needs the GIL, which the main thread holds: any other thread would wait
    try:
        libc.tgkill(pid, pid, sig)
    except AttributeError:  # a C library without tgkill
        os.kill(pid, sig)
while True:
    try:
        pending = int(next(l for l in open(status) if l.startswith("ShdPnd:")).split()[1], 16)
    except (OSError, StopIteration):
        sys.exit(0)  # the worker is gone
    for sig in (signal.SIGINT, signal.SIGTERM):
        if pending & (1 << (sig - 1)):
            sys.stderr.write(f"\\nstopped by {sig.name} while waiting for the other workers\\n")
            to_main_thread(signal.SIGUSR1)  # its C-level handler exits 128 + the signal
            for _ in range(50):
                time.sleep(0.1)
                if not os.path.exists(status):
                    sys.exit(0)
            os.kill(pid, signal.SIGKILL)  # the handler could not run
            sys.exit(0)
    time.sleep(0.1)
"""


def _exit_for_pending_stop(_signum: int) -> None:
    """The watchdog's SIGUSR1, run by the C signal handler on the main thread, which holds the GIL inside
    TensorFlow: end the process as the shell would report the pending stop, 128 + its number (130 for
    Ctrl-C, 143 for SIGTERM)."""
    pending = signal.sigpending() & {signal.SIGINT, signal.SIGTERM}
    os._exit(128 + min(pending, default=signal.SIGINT))


@contextmanager
def stoppable_wait() -> Iterator[None]:
    """Let Ctrl-C and SIGTERM end the process while the main thread waits inside TensorFlow's C++ for the
    other workers, holding the GIL (no Python handler or thread runs) while TensorFlow takes SIGTERM as a
    preemption notice. Both signals are blocked in every thread meanwhile (TensorFlow's own threads block
    them from the start, see backend.py), so they stay pending, and a small watchdog process that reads
    this process's pending signals from /proc names the signal and sends SIGUSR1, whose handler (a C-level
    one, through ctypes) exits with the code a stop by that signal has: 130 for Ctrl-C. (Without /proc they
    wait until the wait is over.)"""
    import ctypes

    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    libc = ctypes.CDLL(None)
    libc.signal.restype, libc.signal.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p]
    handler = ctypes.CFUNCTYPE(None, ctypes.c_int)(_exit_for_pending_stop)  # referenced until restored
    previous = libc.signal(signal.SIGUSR1, ctypes.cast(handler, ctypes.c_void_p))
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid())]) \
        if os.path.exists(f"/proc/{os.getpid()}/status") else None
    try:
        yield
    finally:
        if watchdog:
            watchdog.kill()
            watchdog.wait()
        libc.signal(signal.SIGUSR1, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


@contextmanager
def scratch_run_dir(chief_run_dir: Path | None) -> Iterator[Path]:
    """Where a worker other than the chief saves: Keras 3 runs collective ops in model.save under
    MultiWorkerMirroredStrategy, so every worker must save what the chief saves, in step with it.
    A copy of the chief's run directory to resume it (or an empty one), deleted at the end."""
    with tempfile.TemporaryDirectory(prefix="mnist-keras-worker-") as folder:
        run_dir = Path(folder) / "run"
        if chief_run_dir:
            shutil.copytree(chief_run_dir, run_dir)
        else:
            (run_dir / "checkpoints").mkdir(parents=True)
        yield run_dir


def chosen_gpus(runtime, gpus: list) -> list[int]:
    """The indices of the GPUs a strategy uses: runtime.gpus, else all."""
    indices = runtime.gpus if runtime.gpus is not None else list(range(len(gpus)))
    for index in indices:
        if index >= len(gpus):
            raise UserError(f"runtime.gpus: GPU {index} was asked for, but {len(gpus)} GPU(s) are visible")
    return indices


def gpu_name(gpu) -> str:
    from ..backend import tf

    return tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")


def place(runtime, cluster: dict | None, notify: Callable[[str], None]) -> Placement:
    """The device or strategy runtime.device and runtime.distribute ask for; UserError if it is not there.

    Call before TensorFlow creates its first tensor (MultiWorkerMirroredStrategy requires it).
    """
    if cluster and runtime.distribute != "multi_worker":
        raise UserError("--worker/--task-index describe a cluster: use them with --distribute multi_worker")
    from ..backend import tf

    gpus = tf.config.list_physical_devices("GPU")
    if runtime.device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    if runtime.device.startswith("gpu") and not gpus:
        raise UserError(f"runtime.device: '{runtime.device}' was asked for, but {NO_GPU}; use --device cpu or auto")
    if runtime.distribute == "mirrored":
        return mirrored(runtime, gpus)
    if runtime.distribute == "multi_worker":
        return multi_worker(runtime, gpus, cluster or cluster_from_environment(), notify)
    if not gpus:
        notice = "" if runtime.device == "cpu" else "; TensorFlow sees no GPU"
        return Placement(f"cpu ({os.cpu_count()} cores{notice})")
    index = int(runtime.device.partition(":")[2] or 0)
    if index >= len(gpus):
        raise UserError(f"runtime.device: '{runtime.device}' was asked for, but {len(gpus)} GPU(s) are visible")
    return Placement(f"gpu:{index} ({gpu_name(gpus[index])})", f"/GPU:{index}", on_gpu=True)


def mirrored(runtime, gpus: list) -> Placement:
    """MirroredStrategy over the chosen GPUs; over CPU devices only where several are configured
    (tf.config.set_logical_device_configuration, as the tests do)."""
    from ..backend import tf

    if gpus:
        indices = chosen_gpus(runtime, gpus)
        names = ", ".join(f"gpu:{i} ({gpu_name(gpus[i])})" for i in indices)
        strategy = tf.distribute.MirroredStrategy([f"/GPU:{i}" for i in indices])
        return Placement(f"mirrored over {len(indices)} GPU(s): {names}", strategy=strategy, on_gpu=True)
    cpu = tf.config.list_physical_devices("CPU")[0]
    count = len(tf.config.get_logical_device_configuration(cpu) or [])
    if count < 2:
        why = "runtime.device is cpu" if runtime.device == "cpu" else NO_GPU
        raise UserError(f"runtime.distribute: 'mirrored' splits each batch across this machine's GPUs, but {why}; "
                        "use distribute: none")
    strategy = tf.distribute.MirroredStrategy([f"/CPU:{i}" for i in range(count)])
    return Placement(f"mirrored over {count} logical CPU devices", strategy=strategy)


def multi_worker(runtime, gpus: list, cluster: dict, notify: Callable[[str], None]) -> Placement:
    """MultiWorkerMirroredStrategy over every worker of `cluster` (a TF_CONFIG), with the chosen GPUs
    of this machine, or its CPU."""
    from ..backend import tf

    local = "CPU"
    if gpus:
        indices = chosen_gpus(runtime, gpus)
        tf.config.set_visible_devices([gpus[i] for i in indices], "GPU")
        local = f"{len(indices)} GPU(s)"
    os.environ["TF_CONFIG"] = json.dumps(cluster)
    task, members = cluster["task"], cluster["cluster"]
    count = sum(len(members.get(kind, [])) for kind in ("chief", "worker"))
    me = f"{task['type']} {task['index']} of {count}"
    notify(f"mnist-keras: {me} waiting for the other workers "
           f"({', '.join(members.get('chief', []) + members['worker'])}); Ctrl-C stops")
    work_around_keras_multi_worker_bugs()
    with stoppable_wait():
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return Placement(f"multi_worker, {me} ({local}), {strategy.num_replicas_in_sync} replicas in all",
                     strategy=strategy, on_gpu=bool(gpus), is_chief=strategy.extended.should_checkpoint)


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 (AVX512_BF16 or AMX): Linux's /proc/cpuinfo flags."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def gpu_has_bfloat16() -> bool:
    """Whether every GPU TensorFlow sees has compute capability 8.0 or more (Ampere and later: bfloat16 tensor cores)."""
    from ..backend import tf

    gpus = tf.config.list_physical_devices("GPU")
    return bool(gpus) and all(
        (tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0)) >= (8, 0) for gpu in gpus)


def precision_policy(runtime, placement: Placement) -> str:
    """The Keras dtype policy: float32, or mixed float16 on GPU / bfloat16 on CPU (or as named); `auto` is mixed
    bfloat16 where the hardware has it, else float32."""
    choice = runtime.mixed_precision
    if choice == "auto":
        choice = "bfloat16" if (gpu_has_bfloat16() if placement.on_gpu else cpu_has_bfloat16()) else False
    if choice is False:
        return "float32"
    if choice is True:
        choice = "float16" if placement.on_gpu else "bfloat16"
    return f"mixed_{choice}"


def work_around_keras_multi_worker_bugs() -> None:
    """Keras 3's TensorFlow trainer fails under MultiWorkerMirroredStrategy (keras-team/keras#20585):
    it builds the model from a batch it all-reduces as a tuple, and averages each step's scalar
    metrics along axis 0. Build from this worker's first replica's batch (only its shapes matter),
    and average scalars across workers with axis=None. Applied only in multi_worker processes."""
    from keras import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_mnist_keras_patched", False):
        return
    keras_reduce = trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer._mnist_keras_patched = True


def device_lines() -> list[str]:
    """What TensorFlow sees: its build, the CPU, and each GPU with memory and compute capability."""
    from ..backend import tf

    from tensorflow.python.client import device_lib  # the one API that reports each device's memory

    build = tf.sysconfig.get_build_info()
    cuda = f"CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')}" if build.get("is_cuda_build") \
        else "built without CUDA"
    lines = [f"TensorFlow {tf.__version__} ({cuda})"]
    for cpu in tf.config.list_physical_devices("CPU"):
        lines.append(f"{cpu.name.removeprefix('/physical_device:')}  {os.cpu_count()} cores")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return lines + ["no GPU: TensorFlow sees none; runtime.device auto trains on the CPU"]
    memory = {d.name.replace("device:", ""): d.memory_limit
              for d in device_lib.list_local_devices() if d.device_type == "GPU"}
    for index, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        parts = [details.get("device_name", "GPU")]
        if capability:
            parts.append(f"compute capability {capability[0]}.{capability[1]}")
        if f"/GPU:{index}" in memory:
            parts.append(f"{memory[f'/GPU:{index}'] / 2**30:.1f} GiB usable")
        lines.append(f"GPU:{index}  " + ", ".join(parts))
    return lines


def configure(runtime, seed: int, cluster: dict | None, notify: Callable[[str], None]) -> Placement:
    """Apply threads, the device or strategy (place), determinism, the mixed-precision policy and seeding;
    return the Placement. Every global setting is set either way, so runs in one process (a sweep) do not
    inherit each other's. Raises UserError for a device that is not there."""
    from ..backend import keras, tf
    from tensorflow.python.framework import config as tf_config

    keras.backend.clear_session()
    threading = tf.config.threading
    for name, value in (("intra_op", runtime.threads.intra_op), ("inter_op", runtime.threads.inter_op)):
        getter = getattr(threading, f"get_{name}_parallelism_threads")
        if value and value != getter():
            try:
                getattr(threading, f"set_{name}_parallelism_threads")(value)
            except RuntimeError:
                raise UserError(f"runtime.threads.{name}: TensorFlow has started with {getter()} threads, which "
                                "cannot change within one process; give every run of a sweep the same threads") from None
    placement = place(runtime, cluster, notify)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()  # the public API has no off switch
    policy = precision_policy(runtime, placement)
    keras.mixed_precision.set_global_policy(policy)
    if policy != "float32":
        placement.described += f", {policy}"
    keras.utils.set_random_seed(seed)
    return placement
