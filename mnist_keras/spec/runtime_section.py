"""The `runtime` section of a spec: device, distribution, precision, threads and the size limits."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field

from .fields import NonNegativeInt, PositiveInt, StrictModel

MAX_THREADS = 1024



class Threads(StrictModel):
    """TensorFlow's thread pools."""

    intra_op: Annotated[int, Field(ge=0, le=MAX_THREADS)] = Field(
        0, description="threads inside one op, at most 1024 (0: TensorFlow decides)")
    inter_op: Annotated[int, Field(ge=0, le=MAX_THREADS)] = Field(
        0, description="ops run in parallel, at most 1024 (0: TensorFlow decides)")


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|gpu|gpu:\d+", value):
        raise ValueError(f"expected auto, cpu, gpu or gpu:N (e.g. gpu:1), got {value!r}")
    return value


class Runtime(StrictModel):
    """Where and how the model runs."""

    device: Annotated[str, AfterValidator(_device_name)] = Field("auto", description="auto, cpu, gpu or gpu:N")
    distribute: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="mirrored: this machine's GPUs; multi_worker: several machines")
    gpus: list[NonNegativeInt] | None = Field(None, description="the GPUs distribute uses (default: all)")
    cluster_wait: Annotated[int, Field(ge=1, le=86_400)] = Field(
        300, description="multi_worker: seconds each worker waits for all the others to start, then exit 2")
    mixed_precision: bool | Literal["float16", "bfloat16", "auto"] = Field(
        False, description="true: float16 on GPU, bfloat16 on CPU; auto: bfloat16 where the hardware computes in it "
        "(CPUs with AVX512_BF16 or AMX, GPUs of compute capability 8.0 and up), else float32")
    jit_compile: bool = Field(False, description="compile each step with XLA")
    # "epoch" (a whole epoch per call into TensorFlow) is 18-50% faster on CPU (benchmarks/throughput.py), but the
    # progress bar, per-batch callbacks and the NaN check then see only the end of each epoch.
    steps_per_execution: Union[PositiveInt, Literal["epoch"]] = Field(
        1, description="steps per call into TensorFlow: N (a divisor of the epoch's steps) or epoch")
    autotune: bool = Field(
        False, description="before the first epoch, time mixed precision, jit_compile and steps_per_execution on "
        "this model and machine for a few seconds and keep the fastest whose loss agrees with float32; the fields the "
        "spec sets are kept")
    deterministic: bool = Field(False, description="deterministic TensorFlow ops: bit-exact repeats, slower")
    threads: Threads = Field(Threads(), description="TensorFlow's thread pools")
    tracking: Literal["none", "mlflow"] = Field(
        "none", description="mlflow: log the run to MLflow too (MLFLOW_TRACKING_URI, else runs/mlflow.db)")
    max_params: PositiveInt = Field(50_000_000, description="refuse to build larger models; raise it to go bigger")
    max_activation_bytes: Annotated[int, Field(gt=0, le=2**50)] = Field(
        8 * 2**30, description="refuse models whose layer outputs for one batch (float32) take more bytes; "
        "raise it to go bigger")
