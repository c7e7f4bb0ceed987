"""Where training runs: one device, tf.distribute.MirroredStrategy over this machine's GPUs, or
tf.distribute.MultiWorkerMirroredStrategy across machines; and the mixed-precision policy.

`data.batch_size` is the global batch: each step splits it across all replicas (every GPU of every
worker), and the learning rate is never rescaled, so a spec takes the same steps on 1 or 8 GPUs.
Under multi_worker every worker runs the same command; worker 0 (or the `chief` task of TF_CONFIG)
is the chief: it alone creates and writes the run directory. The other workers write nothing there
(they save into a scratch folder deleted at the end) and take what they resume from the chief (train/cluster.py).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UserError
from .cluster import PeerWatch, cluster_from_environment, form, is_chief, me

NO_GPU = "TensorFlow sees no GPU on this machine (`mnist-keras devices` lists what it sees)"


@dataclass
class Placement:
    """Where the model lives: a strategy, or one device when `strategy` is None."""

    described: str
    device: str = "/CPU:0"
    strategy: Any = None
    on_gpu: bool = False
    is_chief: bool = True  # false on the workers of a cluster that write nothing
    cluster: dict | None = None  # multi_worker: the TF_CONFIG of the cluster
    peers: PeerWatch | None = None  # multi_worker: which other worker stops answering first

    def scope(self) -> AbstractContextManager:
        """Create, compile and load models inside this."""
        from ..backend import tf

        return self.strategy.scope() if self.strategy else tf.device(self.device)


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
        raise UserError("--workers/--worker-index describe a cluster: use them with --distribute multi_worker")
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
    members = cluster["cluster"]
    notify(f"mnist-keras: {me(cluster)} waiting for the other workers "
           f"({', '.join(members.get('chief', []) + members['worker'])}, at most {runtime.cluster_wait} s); "
           "Ctrl-C stops")
    if runtime.steps_per_execution != 1:
        notify(f"note: runtime.steps_per_execution: {runtime.steps_per_execution} runs as 1 under multi_worker (Keras "
               "3's loop of several steps per call fails under MultiWorkerMirroredStrategy)")
    work_around_keras_multi_worker_bugs()
    strategy = form(cluster, runtime.cluster_wait)
    return Placement(f"multi_worker, {me(cluster)} ({local}), {strategy.num_replicas_in_sync} replicas in all",
                     strategy=strategy, on_gpu=bool(gpus), is_chief=is_chief(cluster), cluster=cluster,
                     peers=PeerWatch(cluster))


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


_configured_before = False  # whether configure ran in this process already (a sweep, the Python API)


def configure(runtime, seed: int, cluster: dict | None, notify: Callable[[str], None]) -> Placement:
    """Apply threads, the device or strategy (place), determinism, the mixed-precision policy and seeding;
    return the Placement. Every global setting is set either way, so runs in one process (a sweep) do not
    inherit each other's. Raises UserError for a device that is not there."""
    from ..backend import keras, tf
    from tensorflow.python.framework import config as tf_config

    global _configured_before
    # Python's full collection after TensorFlow's import is 0.18 s of a run's fixed cost: only where an earlier run
    # of this process may have left models behind
    keras.backend.clear_session(free_memory=_configured_before)
    _configured_before = True
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
