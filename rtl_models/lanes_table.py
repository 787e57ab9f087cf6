"""Cycles per iteration (co-simulated) and yosys cell / flip-flop counts vs the number of lanes.

    python rtl_models/lanes_table.py --config f2-l16-m16-p4 --lanes 2,4,8,16 --queries 200 \
        --out out/lanes_table.json

Prints a Markdown table (docs/rtl.md) and writes the raw reports as JSON. Each lane count
runs one bit-exact co-simulation (no valid gaps, no back-pressure, no resets, so the
interval between results is the streaming cost per query) and one yosys synthesis
(DEBUG=0: the debug port's logic is not counted).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from hdsim.rtl import CI_CONFIGS, run_cosim, run_synth


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="f2-l16-m16-p4", choices=sorted(CI_CONFIGS))
    ap.add_argument("--lanes", default="2,4,8")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-synth", action="store_true")
    ap.add_argument("--workdir", default="out/lanes_table")
    ap.add_argument("--out", default="out/lanes_table.json")
    args = ap.parse_args(argv)
    base = CI_CONFIGS[args.config]
    rows = []
    for p in (int(v) for v in args.lanes.split(",")):
        cfg = replace(base, lanes=p, name=f"{base.name.rsplit('-p', 1)[0]}-p{p}")
        t0 = time.time()
        rep = run_cosim(cfg, args.queries, seed=0, workdir=args.workdir, gaps=False, backpressure=False, resets=0)
        row = {"lanes": p, "passed": rep["passed"], "mismatches": len(rep["mismatches"]),
               "cycles_per_iteration": rep["cycles_per_iteration"],
               "lower_bound_per_iteration": rep["lower_bound_per_iteration_mean"],
               "ratio": rep["ratio_to_lower_bound"], "cycles_per_query": rep["cycles_per_query"],
               "cycles_per_query_streaming": rep["cycles_per_query_streaming"],
               "cosim_s": round(time.time() - t0, 1)}
        if not args.no_synth:
            t0 = time.time()
            syn = run_synth(cfg, Path(args.workdir) / f"synth-{cfg.name}")
            row.update(cells=syn["cells"], flip_flops=syn["flip_flops"], synth_s=round(time.time() - t0, 1))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": base.as_dict(), "rows": rows}, indent=1))
    print("| lanes P | cycles / iteration | lower bound | ratio | cycles / query (streaming) | cells | flip-flops |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lanes']} | {r['cycles_per_iteration']:.1f} | {r['lower_bound_per_iteration']:.1f} | "
              f"{r['ratio']:.3f} | {r['cycles_per_query_streaming']:.0f} | {r.get('cells', '-')} | "
              f"{r.get('flip_flops', '-')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
