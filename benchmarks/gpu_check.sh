#!/usr/bin/env bash
# One pass on a GPU machine: per-epoch seconds and time to 99% for LeNet-5 and the fast spec, and the same
# LeNet-5 with mixed precision (bfloat16) and with XLA, to check that they train to the same accuracy.
#   bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]
# Needs TensorFlow with CUDA in `python3`; installs nothing.
set -u
DATA=${1:?give the MNIST folder}; OUT=${2:-/tmp/gpu-check}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD:$PWD/benchmarks"
if ! $PY -c "import tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); print('TensorFlow', tf.__version__, gpus); assert gpus" 2>"$OUT/tf.err"; then
  echo "no TensorFlow with a GPU here:"; tail -3 "$OUT/tf.err"; exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
grep -m1 "model name" /proc/cpuinfo; grep -o -m1 -w "amx_bf16\|avx512_bf16" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
$PY -m mnist_keras devices
run() {  # NAME SPEC ARGS...
  local name=$1 spec=$2; shift 2
  local start; start=$(date +%s.%N)
  timeout 75 $PY benchmarks/fit_probe.py "$OUT/$name.json" fit "$spec" --data-dir "$DATA" --runs "$OUT/runs-$name" "$@" \
    > "$OUT/$name.log" 2>&1 || { echo "$name: failed"; tail -5 "$OUT/$name.log"; return; }
  $PY - "$OUT/$name.json" "$start" "$name" "$OUT/runs-$name" <<'PY'
import json, statistics, sys, glob
epochs = json.load(open(sys.argv[1]))["epochs"]; start = float(sys.argv[2])
metrics = json.load(open(glob.glob(sys.argv[4] + "/*/*/metrics.json")[0]))
seconds = metrics["seconds_per_epoch"]
reached = [e for e in epochs if e["test_accuracy"] >= 0.99]
to99 = f"{reached[0]['end_time'] - start - reached[0]['excluded_seconds']:.1f} s (epoch {reached[0]['epoch']})" if reached else "not reached"
print(f"{sys.argv[3]:22} {metrics['device'][:60]}: s/epoch first {seconds[0]:.2f}, median of the rest "
      f"{statistics.median(seconds[1:] or seconds):.2f}; images/s {statistics.median(e['images_per_second'] for e in epochs[1:] or epochs):,.0f}; "
      f"test acc {metrics['test']['accuracy']:.2%}; to 99%: {to99}")
PY
}
run lenet5 model_specs/lenet5.yaml
run fast model_specs/fast.yaml
run lenet5-bfloat16 model_specs/lenet5.yaml --set runtime.mixed_precision=bfloat16

run lenet5-xla model_specs/lenet5.yaml --set runtime.jit_compile=true
run lenet5-float16 model_specs/lenet5.yaml --set runtime.mixed_precision=float16
