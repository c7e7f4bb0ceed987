"""Parity of an exported model with the Keras model it came from: the run's test set through the export's own
runtime (TensorFlow's SavedModel loader, the LiteRT interpreter, ONNX Runtime), compared image by image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..runs.exports import Parity

FLOAT_MIN_AGREEMENT = 0.999  # a float export gives the Keras model's top-1 class on >= 99.9% of test images
INT8_MAX_ACCURACY_DROP = 0.005  # an int8 export loses at most 0.5 accuracy points
BATCH = 256
LATENCY_IMAGES = 100

Predict = Callable[[np.ndarray], np.ndarray]


def saved_model_predictor(path: Path) -> Predict:
    """The SavedModel's serving_default signature, loaded by TensorFlow alone (no Keras, no project code)."""
    from ..backend import tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    return lambda images: signature(images=tf.constant(images))["probabilities"].numpy()


def litert_predictor(path: Path) -> Predict:
    """The .tflite file's serving_default signature in the LiteRT interpreter (ai_edge_litert)."""
    from ai_edge_litert.interpreter import Interpreter

    from ..backend import quiet

    with quiet():  # the interpreter announces its CPU delegate on stderr when it first allocates
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner("serving_default")
    return lambda images: runner(images=images)["probabilities"]


def onnx_predictor(path: Path) -> Predict:
    """The .onnx file in ONNX Runtime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run(["probabilities"], {"images": images})[0]


PREDICTORS = {"savedmodel": saved_model_predictor, "litert": litert_predictor, "onnx": onnx_predictor}


def predict_all(predict: Predict, images: np.ndarray) -> np.ndarray:
    """Probabilities of every image, BATCH at a time."""
    return np.concatenate([predict(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def latency_ms(predict: Predict, images: np.ndarray, count: int = LATENCY_IMAGES) -> float:
    """Mean milliseconds of one call on one image, after a few warm-up calls."""
    sample = images[:count]
    for image in sample[:3]:
        predict(image[np.newaxis])
    start = time.perf_counter()
    for image in sample:
        predict(image[np.newaxis])
    return (time.perf_counter() - start) * 1000 / len(sample)


def size_bytes(path: Path) -> int:
    """A file's size, or the total of the files under a folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_parity(fmt: str, path: Path, quantize: str | None, keras_probabilities: np.ndarray,
                 images: np.ndarray, labels: np.ndarray) -> Parity:
    """Run the test images through the export at `path` and measure it against the Keras probabilities."""
    predict = PREDICTORS[fmt](path)
    probabilities = predict_all(predict, images)
    keras_top, export_top = keras_probabilities.argmax(axis=1), probabilities.argmax(axis=1)
    agreement = float((keras_top == export_top).mean())
    keras_accuracy, export_accuracy = float((keras_top == labels).mean()), float((export_top == labels).mean())
    if quantize == "int8":
        bar = f"accuracy drop at most {INT8_MAX_ACCURACY_DROP * 100:.1f} points"
        passed = keras_accuracy - export_accuracy <= INT8_MAX_ACCURACY_DROP + 1e-9
    else:
        bar = f"top-1 agreement at least {FLOAT_MIN_AGREEMENT:.1%}"
        passed = agreement >= FLOAT_MIN_AGREEMENT
    return Parity(images=len(images), agreement=agreement, keras_accuracy=keras_accuracy,
                  export_accuracy=export_accuracy,
                  max_probability_difference=float(np.abs(probabilities - keras_probabilities).max()),
                  file_bytes=size_bytes(path), latency_ms=latency_ms(predict, images), bar=bar, passed=passed)
