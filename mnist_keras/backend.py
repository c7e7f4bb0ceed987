"""TensorFlow and Keras, imported once with their C++ start-up logs silenced.

Every module that needs them imports `tf` and `keras` from here, so no import order can let the
start-up noise through. Importing this module is what loads TensorFlow: do it inside the commands
and functions that train or predict, never at the top of a module that `--help` or `validate` load.
"""

import contextlib
import io
import logging
import os
import signal
import sys
import warnings


@contextlib.contextmanager
def silenced_stderr():
    """File descriptor 2 sent to /dev/null: absl and TensorFlow's C++ write there past any log level."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Defaults for TensorFlow's import, where the caller has not chosen; the caller's environment is put back after it.
# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; elsewhere
# (an AMD EPYC with AVX2, say) it falls back to Eigen, 3-5x slower for convolutions (docs: performance).
# Set TF_ENABLE_ONEDNN_OPTS=0 to compare, or for bit-exact results across machines.
_IMPORT_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
_added = [name for name in _IMPORT_DEFAULTS if name not in os.environ]
os.environ.update({name: _IMPORT_DEFAULTS[name] for name in _added})
# The threads TensorFlow starts inherit this mask: Ctrl-C and SIGTERM reach the main thread only, even while
# it waits inside TensorFlow's C++ (train/cluster.py's bounded_wait relies on it).
_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
_hidden: list = []
try:
    # Keras imports scikit-learn (for its sklearn wrappers, which need scipy.stats) and matplotlib.pyplot (for
    # keras.visualization) when they are installed: 1.5-2 s of the import, for features mnist-keras never uses.
    # Hidden while Keras loads, they stay importable afterwards.
    _hidden = [name for name in ("sklearn", "matplotlib.pyplot") if name not in sys.modules]
    sys.modules.update(dict.fromkeys(_hidden))
    with silenced_stderr():
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()
finally:
    for _name in _hidden:
        sys.modules.pop(_name, None)
    for _name in _added:  # both are read once, while TensorFlow starts
        os.environ.pop(_name, None)
    signal.pthread_sigmask(signal.SIG_SETMASK, _mask)
tf.get_logger().setLevel("ERROR")


@contextlib.contextmanager
def quiet():
    """Silence a converter: its C++ logs, Python warnings, log records and prints."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with silenced_stderr(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)


__all__ = ["keras", "quiet", "tf"]
