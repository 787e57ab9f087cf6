"""Build and run the cocotb bench in its own process (``hdsim.rtl.run_cosim`` starts it).

    python rtl_models/run_sim.py spec.json

A separate process so the caller can bound the wall-clock time and kill the whole
process group (the simulator included): a design that spins in one time step never
returns to Python, so no in-simulator watchdog can stop it. Imports only
``cocotb_tools`` (no torch): the spec holds the runner's arguments.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(spec_path: str) -> int:
    from cocotb_tools.runner import get_runner

    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, spec["rtl_dir"])  # the runner exports sys.path as the simulator's PYTHONPATH
    runner = get_runner("icarus")
    runner.build(sources=spec["sources"], includes=spec["includes"], hdl_toplevel="tb_hdsim_bcf",
                 parameters=spec["parameters"], build_dir=spec["build_dir"], always=True, log_file=spec["build_log"])
    runner.test(test_module="cocotb_bcf", hdl_toplevel="tb_hdsim_bcf", build_dir=spec["build_dir"],
                test_dir=spec["test_dir"], extra_env=spec["env"], log_file=spec["sim_log"],
                results_xml=spec["results_xml"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
