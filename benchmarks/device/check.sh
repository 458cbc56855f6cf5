#!/usr/bin/env bash
# The GPU checks of the benchmark and the test suite, for a machine with a CUDA GPU (see CONTRIBUTING.md):
#
#   bash benchmarks/device/check.sh bench   # torch build and GPU name, benchmarks.run and benchmarks.amp on cuda (~9 min)
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
        # Sized for one 600 s call: the GPU target's row (MAML, meta-batch 32, 28 px) at its full budget, then
        # every row and the bf16 comparison at --quick budgets. Each step has its own time limit and runs even if
        # an earlier one failed; the script exits with the first failure's status.
        device=${DEVICE:-cuda}
        mode=${MODE:-}  # MODE=--smoke: a dry run of this script on a CPU machine (DEVICE=cpu)
        status=0
        step() {  # step SECONDS COMMAND...: output appended to bench.log
            local limit=$1 rc=0
            shift
            if timeout "$limit" "$@" 2>&1 | tee -a "$out/bench.log"; then rc=0; else rc=$?; fi
            if [ "$status" -eq 0 ]; then status=$rc; fi
        }
        : >"$out/bench.log"
        step 220 "$python" -m benchmarks.run --device "$device" $mode --rows tasks- --out "$out/results_${device}_meta_batch.json"
        step 180 "$python" -m benchmarks.run --device "$device" ${mode:---quick} --out "$out/results_$device.json"
        step 110 "$python" -m benchmarks.amp --device "$device" ${mode:---quick} --out "$out/amp_$device.json"
        exit "$status"
        ;;
    tests)
        # The suite with CUDA visible (device=auto picks it); PYTEST_ARGS= (empty) for all of it. The default is
        # the files with CUDA-specific paths: resume (random states), MAML/vmap, bf16 islands, the CLI, training.
        "$python" -m pytest -q ${PYTEST_ARGS-tests/test_resume.py tests/test_checkpoint.py tests/test_maml.py \
            tests/test_precision.py tests/test_cli.py tests/test_algorithm_contract.py} 2>&1 | tee "$out/tests.log"
        ;;
    *)
        echo "usage: check.sh bench|tests" >&2
        exit 2
        ;;
esac
