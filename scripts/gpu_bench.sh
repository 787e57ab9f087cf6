#!/usr/bin/env bash
# The GPU check of the decode engines, for a machine with a CUDA GPU (one command, one JSON object on stdout).
#
#   bash scripts/gpu_bench.sh [QUERIES]        # default 1024 queries; progress and logs on stderr
#
# 1. tests/test_engine.py's CUDA test: the continuous-batching torch engine on the GPU takes the CPU
#    engines' decisions (skipped, and reported as such, without a GPU);
# 2. hdsim bench factorizer, D512 B4 F2 M1155 (tuned T/A), QUERIES exact queries, float64 and float32:
#    the torch engine (continuous batching, 1024 slots) and the reference (batches of 1024) on CUDA,
#    and the numba engine on the CPU, all in this one run (compare ratios, not absolute figures).
# Needs hdsim installed (pip install -e '.[test]'); about 2-5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
Q="${1:-1024}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

python3 -m pytest -q -rs tests/test_engine.py -m cuda >"$TMP/tests.log" 2>&1
echo $? >"$TMP/tests.rc"
cat "$TMP/tests.log" >&2

run() {  # name, then hdsim bench factorizer options
  local name="$1"; shift
  if hdsim bench factorizer --queries "$Q" "$@" >"$TMP/$name.json" 2>"$TMP/$name.err"; then :; else
    tail -5 "$TMP/$name.err" >&2
    echo '{"error": "failed, see stderr"}' >"$TMP/$name.json"
  fi
}
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  run torch_cuda_f64 --device cuda --engine torch --batch 1024 --dtype float64
  run torch_cuda_f32 --device cuda --engine torch --batch 1024 --dtype float32
  run reference_cuda_f32 --device cuda --engine reference --batch 1024 --dtype float32
fi
run numba_cpu --engine numba

python3 - "$TMP" <<'EOF'
import json, pathlib, sys
import torch
tmp = pathlib.Path(sys.argv[1])
log = (tmp / "tests.log").read_text().strip().splitlines()
out = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device",
       "tests": {"rc": int((tmp / "tests.rc").read_text()), "summary": log[-1] if log else ""}}
keys = ("engine", "accuracy", "accuracy_noncolliding", "collision_rate", "mean_iterations", "p95_iterations",
        "queries_per_s", "seconds", "work", "error")
for f in sorted(tmp.glob("*.json")):
    d = json.loads(f.read_text())
    out[f.stem] = {k: d[k] for k in keys if k in d}
    if "config" in d:
        out[f.stem]["dtype"] = d["config"].get("dtype")
ref = out.get("numba_cpu", {}).get("queries_per_s")
for k, v in out.items():
    if isinstance(v, dict) and v.get("queries_per_s") and ref:
        v["over_numba_cpu"] = v["queries_per_s"] / ref
print(json.dumps(out, indent=1))
EOF
