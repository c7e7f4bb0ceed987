"""Runtime set-up: a quiet TensorFlow import, device placement, precision, seeding and threads."""

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


def configure(runtime, seed: int, cluster: dict | None = None):
    """Apply threads, the device or tf.distribute strategy (distribute.place), determinism, the
    mixed-precision policy and seeding; return the distribute.Placement.

    Must run before TensorFlow creates its first tensor. Raises UserError for a device that is not there.
    """
    from .distribute import place, precision_policy

    tf = tensorflow()
    import keras

    if runtime.threads.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(runtime.threads.intra_op)
    if runtime.threads.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(runtime.threads.inter_op)
    placement = place(runtime, cluster)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = precision_policy(runtime, placement)
    keras.mixed_precision.set_global_policy(policy)
    if policy != "float32":
        placement.described += f", {policy}"
    keras.utils.set_random_seed(seed)
    return placement
