#!/usr/bin/env bash
# The one prepared check for a bare CUDA machine: torch present; Ray, MLflow, DVC and
# webdataset absent; no network; no pip install. Runs from the repo root (or anywhere):
#
#   bash benchmarks/device_check.sh OUT_DIR
#
# 1. the CUDA tests (pytest -m cuda on tests/cuda; without pytest, tests/cuda/check.py):
#    a bf16 step of every task is finite; channels_last and compiled forwards equal eager
#    within tests/cuda/test_cuda.py's TOL; exact resume with deterministic algorithms;
#    NCCL DDP at world size 1 (the shards they need are written from the embedded digits);
# 2. benchmarks/throughput.py: images/s and MFU per family x resolution x mode, and the
#    training loop's images/s around the same DCGAN step.
# Everything lands in OUT_DIR as JSON (+ logs). Time limits keep the whole under 8 minutes:
# 4 min for the tests, 3.5 min for the table (rows after 170 s are listed as skipped);
# whatever a killed part wrote stays. DEVICE=cpu runs the same script where there is no GPU
# (the CUDA tests skip, the table is the CPU's): a rehearsal of the script itself.
set -u
OUT="${1:?usage: device_check.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
start=$(date +%s)

"$PY" - > "$OUT/environment.json" <<'PYEOF'
import importlib.util, json, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "python": platform.python_version(), "torch": torch.__version__,
    "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda else None,
    "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
    "bf16": cuda and torch.cuda.is_bf16_supported(),
    "nccl": torch.distributed.is_nccl_available(),
    "present": {m: importlib.util.find_spec(m) is not None
                for m in ("pytest", "triton", "ray", "mlflow", "dvc", "webdataset")},
}, indent=1))
PYEOF
cat "$OUT/environment.json"

if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 240 "$PY" -m pytest tests/cuda -m cuda -q -p no:cacheprovider \
        --junitxml="$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1
else
    timeout 240 "$PY" -m tests.cuda.check "$OUT/cuda_tests.json" > "$OUT/cuda_tests.log" 2>&1
fi
tests_rc=$?
tail -n 15 "$OUT/cuda_tests.log"

timeout 210 "$PY" benchmarks/throughput.py --device "${DEVICE:-cuda}" --train-steps 200 --budget-s 170 \
    --out "$OUT/throughput.json" > "$OUT/throughput.log" 2> "$OUT/throughput_rows.log"
bench_rc=$?
tail -n 40 "$OUT/throughput_rows.log"

"$PY" - "$OUT" "$tests_rc" "$bench_rc" "$(( $(date +%s) - start ))" <<'PYEOF'
import json, sys
out, tests_rc, bench_rc, wall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
summary = {"cuda_tests_rc": tests_rc, "throughput_rc": bench_rc, "wall_s": wall,
           "timed_out": [p for p, rc in (("cuda_tests", tests_rc), ("throughput", bench_rc))
                         if rc == 124]}
open(f"{out}/summary.json", "w").write(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary))
PYEOF
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
