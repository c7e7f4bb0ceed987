"""TensorFlow and Keras, imported once with their C++ start-up logs silenced.

Every module that needs them imports `tf` and `keras` from here, so no import order can let the
start-up noise through. Importing this module is what loads TensorFlow: do it inside the commands
and functions that train or predict, never at the top of a module that `--help` or `validate` load.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.stderr.flush()
_saved, _devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 2)  # absl writes to fd 2 before any log level applies
try:
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()
finally:
    os.dup2(_saved, 2)
    os.close(_saved)
    os.close(_devnull)
tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "tf"]
