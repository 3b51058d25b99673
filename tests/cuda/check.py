"""Run tests/cuda/test_cuda.py without pytest: ``python -m tests.cuda.check OUT.json``.

Each test function runs once (the parametrised one per variant) in a fresh temporary folder;
``OUT.json`` gets ``{name: {"ok": bool, "s": seconds, "error": str}}``. Exit 1 when any fails.
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from tests.cases import STEPS
from tests.cuda import test_cuda


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if test_cuda.CUDA and not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 1
    results = {}
    for name, fn in inspect.getmembers(test_cuda, inspect.isfunction):
        if not name.startswith("test_") or fn.__module__ != test_cuda.__name__:
            continue
        params = inspect.signature(fn).parameters
        cases = [{"variant": v} for v in STEPS] if "variant" in params else [{}]
        for case in cases:
            key = name + (f"[{case['variant']}]" if case else "")
            t0 = time.perf_counter()
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    fn(**case, **({"tmp_path": Path(tmp)} if "tmp_path" in params else {}))
                results[key] = {"ok": True}
            except Exception as exc:
                results[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                                "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
            results[key]["s"] = round(time.perf_counter() - t0, 2)
            print(key, "ok" if results[key]["ok"] else "FAILED", results[key]["s"], flush=True)
    if out:
        out.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
