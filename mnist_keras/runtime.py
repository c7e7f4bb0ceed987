"""Runtime set-up: a quiet TensorFlow import, device placement, seeding and threads."""

from __future__ import annotations

import os
import sys


def tensorflow():
    """Import TensorFlow and Keras with their C++ start-up logs silenced; return the tf module."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # absl writes to fd 2 before any log level applies
    try:
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel("ERROR")
    return tf


def configure(runtime, seed: int) -> tuple[str, str]:
    """Apply threads, determinism, seeding and device choice; return (tf device name, description).

    Must run before TensorFlow creates its first tensor. Raises UserError for a device that is not there.
    """
    from .errors import UserError

    tf = tensorflow()
    import keras

    if runtime.threads.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(runtime.threads.intra_op)
    if runtime.threads.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(runtime.threads.inter_op)
    gpus = tf.config.list_physical_devices("GPU")
    wanted = runtime.device
    if wanted == "cpu" or (wanted == "auto" and not gpus):
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        device, described = "/CPU:0", f"cpu ({os.cpu_count()} cores)"
    else:
        index = int(wanted.partition(":")[2] or 0)
        if index >= len(gpus):
            seen = f"{len(gpus)} GPU(s) are visible" if gpus else "TensorFlow sees no GPU on this machine"
            raise UserError(f"runtime.device: '{wanted}' was asked for, but {seen}; use --device cpu or auto")
        details = tf.config.experimental.get_device_details(gpus[index])
        device, described = f"/GPU:{index}", f"gpu:{index} ({details.get('device_name', 'GPU')})"
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    return device, described
