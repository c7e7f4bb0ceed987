"""The process-wide settings training changes (Keras' dtype policy, op determinism, the Python, NumPy, TensorFlow
and Keras seeds), put back as the caller had them when an API call returns."""

from __future__ import annotations

import functools
import inspect
import random
import sys
from contextlib import contextmanager
from typing import Any, Callable

_KERAS_SEED_ATTRIBUTES = ("global_random_seed", "global_seed_generator")


def _tensorflow_state() -> dict[str, Any] | None:
    """The TensorFlow and Keras settings now, or None while TensorFlow is not loaded (so all are defaults)."""
    if "tensorflow" not in sys.modules:
        return None
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as tf_config

    from ..backend import keras

    return {"policy": keras.config.dtype_policy().name,
            "deterministic": tf_config.is_op_determinism_enabled(),  # not in the public API
            "tf_seed": context.global_seed(),
            "keras": {name: global_state.get_global_attribute(name) for name in _KERAS_SEED_ATTRIBUTES}}


def _restore_tensorflow(saved: dict[str, Any] | None) -> None:
    if "tensorflow" not in sys.modules:
        return
    from keras.src.backend.common import global_state
    from tensorflow.python.framework import config as tf_config

    from ..backend import keras, tf

    saved = saved or {"policy": "float32", "deterministic": False, "tf_seed": None,
                      "keras": dict.fromkeys(_KERAS_SEED_ATTRIBUTES)}
    keras.config.set_dtype_policy(saved["policy"])
    if saved["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()  # the public API has no off switch
    tf.random.set_seed(saved["tf_seed"])
    for name, value in saved["keras"].items():
        global_state.set_global_attribute(name, value)


@contextmanager
def kept_global_state():
    """Within the block training may set any of these; on leaving it, each is as it was before."""
    # NumPy only if the caller has it: imported here it would start OpenBLAS' threads before backend.py can
    # block Ctrl-C in them (train/cluster.py's bounded_wait needs every thread to block it)
    numpy = sys.modules.get("numpy")
    python_seed, saved = random.getstate(), _tensorflow_state()
    numpy_seed = numpy.random.get_state() if numpy else None
    try:
        yield
    finally:
        random.setstate(python_seed)
        if numpy_seed is not None:
            numpy.random.set_state(numpy_seed)
        _restore_tensorflow(saved)


def keeps_global_state(func: Callable) -> Callable:
    """`func` (a function, or a generator function step by step) run inside kept_global_state."""
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def generator(*args, **kwargs):  # the caller's settings hold again while it has each item
            steps = func(*args, **kwargs)
            while True:
                with kept_global_state():
                    try:
                        item = next(steps)
                    except StopIteration as done:
                        return done.value
                yield item
        return generator

    @functools.wraps(func)
    def call(*args, **kwargs):
        with kept_global_state():
            return func(*args, **kwargs)
    return call
