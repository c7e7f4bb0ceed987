"""The API leaves the process as it found it: Keras' dtype policy, op determinism and every seed are the
caller's again when `fit` returns, and importing the package changes no environment variable."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

SPEC = """
name: state
seed: 3
data: {source: bundled, max_train: 256, validation: 64, batch_size: 64}
model:
  layers: [flatten, {dense: {units: 8, activation: relu}}, {dense: 10}]
train: {epochs: 1, tensorboard: {enabled: false}}
runtime: RUNTIME
"""


@pytest.mark.parametrize("caller, runtime", [
    (("float32", False, None), "{mixed_precision: bfloat16, deterministic: true}"),
    (("mixed_bfloat16", True, 5), "{mixed_precision: false, deterministic: false}"),
])
def test_fit_restores_the_callers_policy_determinism_and_seeds(write_spec, tmp_path, caller, runtime):
    import mnist_keras as mk
    from mnist_keras.backend import keras, tf
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as tf_config

    policy, deterministic, tf_seed = caller
    keras.config.set_dtype_policy(policy)
    tf.config.experimental.enable_op_determinism() if deterministic else tf_config.disable_op_determinism()
    tf.random.set_seed(tf_seed)
    random.seed(11)
    np.random.seed(11)
    expected = (random.random(), float(np.random.rand()))
    random.seed(11)
    np.random.seed(11)
    try:
        run = mk.fit(mk.load_spec(write_spec(SPEC.replace("RUNTIME", runtime))), runs=tmp_path / "runs")
        assert run.metrics.epochs_done == 1
        assert (random.random(), float(np.random.rand())) == expected
        assert keras.config.dtype_policy().name == policy
        layer = keras.layers.Dense(3)
        layer.build((None, 4))
        assert layer.dtype_policy.name == policy and layer.kernel.dtype == "float32"
        assert tf_config.is_op_determinism_enabled() == deterministic
        assert context.global_seed() == tf_seed
    finally:
        keras.config.set_dtype_policy("float32")
        tf_config.disable_op_determinism()


@pytest.mark.parametrize("chosen", [{}, {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "1"}])
def test_importing_the_package_changes_no_environment_variable(chosen):
    code = ("import os; before = dict(os.environ); import mnist_keras.backend, mnist_keras.api; "
            "from tensorflow.python.util import _pywrap_util_port as port; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
            "print(port.IsMklEnabled())")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**env, "PYTHONPATH": str(ROOT), **chosen}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ("False" if chosen else "True")  # the caller's choice, else oneDNN on


def test_importing_the_sweeps_leaves_optunas_logging_as_the_caller_set_it():
    code = ("import optuna; optuna.logging.set_verbosity(optuna.logging.DEBUG); "
            "import mnist_keras.sweeps.study as study; study._optuna_schema(); "
            "print(optuna.logging.get_verbosity() == optuna.logging.DEBUG)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
