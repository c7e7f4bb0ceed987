"""TensorFlow and Keras, imported once with their C++ start-up logs silenced.

Every module that needs them imports `tf` and `keras` from here, so no import order can let the
start-up noise through. Importing this module is what loads TensorFlow: do it inside the commands
and functions that train or predict, never at the top of a module that `--help` or `validate` load.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.stderr.flush()
_saved, _devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 2)  # absl writes to fd 2 before any log level applies
# The threads TensorFlow starts inherit this mask: Ctrl-C and SIGTERM reach the main thread only, even while
# it waits inside TensorFlow's C++ (train/distribute.py's stoppable_wait relies on it).
_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
try:
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()
finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, _mask)
    os.dup2(_saved, 2)
    os.close(_saved)
    os.close(_devnull)
tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "tf"]
