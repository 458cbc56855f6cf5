#!/usr/bin/env bash
# The GPU checks of the benchmark, prepared to run on a lent GPU machine (README: "Checking the GPU path"):
#
#   bash benchmarks/device/check.sh bench   # torch build and GPU name, benchmarks.run and benchmarks.amp on cuda
#   bash benchmarks/device/check.sh tests   # the test suite with CUDA visible
#
# That machine has PyTorch but not our other dependencies; their wheels travel in .whl (`make device-wheels`
# here, then `carry: [".whl"]`). Results go to $OUT (the device tool's folder that comes back), or ./device-out.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-device-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if [ -d .whl ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
"$python" - <<'EOF' | tee "$out/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")
EOF
case "${1:-bench}" in
    bench)
        device=${DEVICE:-cuda}
        mode=${MODE:-}  # MODE=--smoke: a dry run of this script on a CPU machine (DEVICE=cpu)
        "$python" -m benchmarks.run --device "$device" $mode --out "$out/results_$device.json" 2>&1 | tee "$out/bench.log"
        "$python" -m benchmarks.amp --device "$device" $mode --out "$out/amp_$device.json" 2>&1 | tee -a "$out/bench.log"
        ;;
    tests)
        "$python" -m pytest -q -x ${PYTEST_ARGS:-} 2>&1 | tee "$out/tests.log"
        ;;
    *)
        echo "usage: check.sh bench|tests" >&2
        exit 2
        ;;
esac
