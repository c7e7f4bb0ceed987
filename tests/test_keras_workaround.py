"""The Keras multi-worker patch (train/distribute.py, keras-team/keras#20585) is kept only while Keras still needs it:
plain Keras under MultiWorkerMirroredStrategy with two workers on loopback still fails, the patched one trains,
and a process that trains without multi_worker never has Keras patched."""

import json
import os
import socket
import subprocess
import sys

from conftest import ROOT

WORKER = """
import json, os, sys
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
data = tf.data.Dataset.from_tensor_slices((np.ones((64, 4), "float32"), np.zeros(64, "int64"))).batch(16)
for mode in ("plain", "patched"):  # plain Keras first, in a process it has not touched; then patched
    if mode == "patched":
        from mnist_keras.train.distribute import work_around_keras_multi_worker_bugs
        work_around_keras_multi_worker_bugs()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    try:
        model.fit(data, epochs=1, verbose=0)
        print(mode, "trained", flush=True)
    except ValueError as err:
        print(mode, "failed:", str(err).splitlines()[0][:200], flush=True)
"""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def two_workers() -> list[list[str]]:
    """Each worker's lines: plain Keras's outcome, then the patched one's."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env={**env, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                              "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    try:
        return [p.communicate(timeout=180)[0].strip().splitlines() for p in procs]
    finally:
        for p in procs:
            p.kill()


def test_keras_multi_worker_bug_is_still_there_and_the_patch_mends_it():
    outcomes = two_workers()
    plain = [next((o for o in lines if o.startswith("plain ")), "plain: no outcome") for lines in outcomes]
    patched = [next((o for o in lines if o.startswith("patched ")), "patched: no outcome") for lines in outcomes]
    assert all(o.startswith("plain failed: Attempt to convert a value (PerReplica") for o in plain), (
        f"plain Keras now trains under MultiWorkerMirroredStrategy ({plain}): keras-team/keras#20585 is "
        "fixed, so remove work_around_keras_multi_worker_bugs from train/distribute.py")
    assert patched == ["patched trained", "patched trained"], outcomes


UNPATCHED = """
import sys
import mnist_keras as mk
from keras.src.backend.tensorflow import trainer
spec = mk.load_spec(sys.argv[1])
mk.fit(spec, runs=sys.argv[2])
print("patched" if getattr(trainer, "_mnist_keras_patched", False) else "unpatched")
"""


def test_training_without_multi_worker_leaves_keras_unpatched(write_spec, tmp_path):
    """In a fresh process: another test in this one may have trained multi_worker, which patches Keras for good."""
    spec = write_spec("name: p\ndata: {source: bundled, max_train: 128, validation: 64, batch_size: 64}\n"
                      "model: {layers: [flatten, {dense: 10}]}\ntrain: {epochs: 1, tensorboard: {enabled: false}}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", UNPATCHED, str(spec), str(tmp_path / "runs")], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "unpatched", done.stdout
