"""cocotb bench of ``hdsim_bcf``: driver, monitors and a scoreboard built on hdsim's fixed-point model.

Run through :func:`hdsim.rtl.run_cosim` (which writes the plan named by
``$HDSIM_COSIM_PLAN``); never re-implements the model: the expected values are
what :class:`hdsim.fixed.FixedBCF` reports through its ``observe`` hook, with its
``perturb`` hook reading the same perturbation table the testbench feeds the DUT
and its sampler (:class:`hdsim.lfsr.LFSRSampler`) recording its register states.

Components:
    QueryDriver    -- B beats per query over valid/ready, random valid gaps.
    ResultMonitor  -- result handshake with random ready back-pressure.
    StateMonitor   -- on every dbg_step pulse, reads the whole factor-step state.
    Scoreboard     -- compares every step (u, a, w, S, R, x, amax, argmax, sampled,
                      pulled, converged, LFSR state, LFSR words) and every result.
    reset control  -- synchronous resets in mid-decode (and mid-load); the queries in
                      flight are re-sent afterwards.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path

import cocotb
import numpy as np
import torch
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, First, ReadOnly, RisingEdge, Timer

from hdsim import rtl as hr
from hdsim.fixed.bcf import FixedBCF
from hdsim.lfsr import LFSR, LFSRSampler, query_seed

STEP_SIGNALS = ("u", "a", "w", "S", "R", "x", "amax", "argmax", "sampled", "pulled")


# ---------------------------------------------------------------------------------- expected
class RecordingSampler:
    """:class:`LFSRSampler` that records each query's register state before and after every draw."""

    def __init__(self, seed: int) -> None:
        self.inner = LFSRSampler(seed)
        self.calls: dict[int, list[tuple[int, int]]] = defaultdict(list)

    def __call__(self, query_ids, factor, M, A):
        ids = [int(q) for q in query_ids]
        before = {q: self.inner.state(q) for q in ids}
        out = self.inner(query_ids, factor, M, A)
        for q in ids:
            self.calls[q].append((before[q], self.inner.state(q)))
        return out


def lfsr_words(before: int, after: int, k: int, limit: int = 1 << 20) -> int:
    """Number of ``k``-bit words between two register states (steps the hdsim LFSR until ``after``)."""
    r = LFSR(before)
    steps = 0
    while r.state != after:
        r.step()
        steps += 1
        if steps > limit:
            raise RuntimeError("lfsr_words: state not reached")
    return steps // k if k else 0


def expected_run(cfg: hr.RtlConfig, q: torch.Tensor, pert: np.ndarray):
    """Run FixedBCF on all queries (query id = row) and collect every step, as the RTL reports them."""
    cb = cfg.codebooks()
    assert cb.sizes == (cfg.M,) * cfg.F
    sampler = RecordingSampler(cfg.lfsr_seed)
    model = FixedBCF(cb, cfg.bcf_config(), cfg.widths, sampler=sampler)
    steps: dict[int, list[dict]] = defaultdict(list)

    def perturb(it, f, ids, u, a):
        return torch.from_numpy(pert[ids.numpy(), it - 1, f, :])

    def observe(state):
        for r, qid in enumerate(state.query_ids):
            qid = int(qid)
            for f, st in enumerate(state.factors):
                rec = {"iter": state.iteration, "factor": f}
                for name in STEP_SIGNALS:
                    v = getattr(st, name)[r]
                    rec[name] = np.asarray(v).astype(np.int64)
                rec["converged"] = int(state.converged[r]) if f == cfg.F - 1 else None
                steps[qid].append(rec)

    res = model.factorize(q, observe=observe, perturb=perturb)
    k = (cfg.M - 1).bit_length()
    for qid, recs in steps.items():
        state = query_seed(cfg.lfsr_seed, qid)
        calls = iter(sampler.calls.get(qid, []))
        for rec in recs:
            words = 0
            if rec["sampled"] and cfg.A < cfg.M:
                before, after = next(calls)
                assert before == state
                words = lfsr_words(before, after, k)
                state = after
            rec["lfsr"] = state
            rec["draws"] = words
    results = {i: (res.indices[i].tolist(), int(res.iterations[i]), bool(res.converged[i])) for i in range(q.shape[0])}
    return steps, results


# ---------------------------------------------------------------------------------- scoreboard
class Scoreboard:
    def __init__(self, cfg: hr.RtlConfig, steps, results, kinds, pert) -> None:
        self.cfg = cfg
        self.steps = steps
        self.results = results
        self.kinds = kinds
        self.pert = pert
        self.cursor: dict[int, int] = {}
        self.bad: set[int] = set()
        self.done: dict[int, bool] = {}
        self.in_flight: set[int] = set()
        self.mismatches: list[dict] = []
        self.cov = defaultdict(int)
        self.iter_cycles: list[int] = []
        self.iter_bound: list[float] = []
        self.decode_cycles: list[int] = []
        self.result_stamps: list[int] = []
        self.last_stamp: dict[int, int] = {}
        self.iter_draws: dict[int, int] = defaultdict(int)
        self.step_hook = None
        self.T_int = cfg.datapath().T_int
        self.start: dict[int, int] = {}
        self.progress = Event()   # set on every result and reset (wakes the main loop)
        self.result_hook = None

    def mismatch(self, qid, signal, it, f, got, want) -> None:
        self.bad.add(qid)
        if len(self.mismatches) < 20:
            self.mismatches.append({"query": qid, "signal": signal, "iteration": it, "factor": f,
                                    "got": _short(got), "expected": _short(want)})

    def accepted(self, qid: int) -> None:
        self.in_flight.add(qid)
        self.cursor[qid] = 0
        self.iter_draws[qid] = 0

    def step(self, s: dict) -> None:
        qid = s["qid"]
        exp = self.steps.get(qid, [])
        c = self.cursor.get(qid, 0)
        if qid not in self.in_flight or c >= len(exp):
            self.mismatch(qid, "unexpected_step", s["iter"], s["factor"], None, None)
            return
        e = exp[c]
        self.cursor[qid] = c + 1
        if (s["iter"], s["factor"]) != (e["iter"], e["factor"]):
            self.mismatch(qid, "iteration/factor", s["iter"], s["factor"], (s["iter"], s["factor"]),
                          (e["iter"], e["factor"]))
            return
        for name in STEP_SIGNALS + ("lfsr", "draws"):
            if not np.array_equal(np.asarray(s[name]), np.asarray(e[name])):
                self.mismatch(qid, name, e["iter"], e["factor"], s[name], e[name])
                break
        if e["converged"] is not None and bool(s["conv"]) != bool(e["converged"]):
            self.mismatch(qid, "converged", e["iter"], e["factor"], s["conv"], e["converged"])
        self.cov["steps"] += 1
        self.cov["sampled_steps"] += int(e["sampled"])
        self.cov["pulled_steps"] += int(e["pulled"])
        self.cov["threshold_fallback_steps"] += int(not e["sampled"] and not e["pulled"] and e["amax"] < self.T_int)
        self.cov["lfsr_words"] += e["draws"]
        p = self.pert[qid, e["iter"] - 1, e["factor"]]
        self.cov["perturbed_steps"] += int(np.any(p != 0))
        a_max = (1 << (self.cfg.datapath().a_bits)) - 1
        self.cov["saturated_similarities"] += int(np.sum((e["a"] == 0) & (p < 0)) + np.sum((e["a"] == a_max) & (p > 0)))
        # cycles: one iteration ends at the last factor's step
        self.iter_draws[qid] += e["draws"]
        if e["factor"] == self.cfg.F - 1:
            prev = self.last_stamp.get(qid, s["start_cycle"])
            self.iter_cycles.append(s["cycle"] - prev)
            self.iter_bound.append(hr.lower_bound(self.cfg, self.iter_draws[qid])["total"])
            self.iter_draws[qid] = 0
            self.last_stamp[qid] = s["cycle"]
        if self.step_hook is not None:
            self.step_hook(qid, c)

    def result(self, qid: int, idx: list[int], iters: int, conv: bool, cycle: int) -> None:
        if qid not in self.in_flight:
            self.mismatch(qid, "unexpected_result", iters, None, (idx, iters, conv), None)
            return
        self.in_flight.discard(qid)
        want = self.results[qid]
        if self.cursor.get(qid, 0) != len(self.steps[qid]):
            self.mismatch(qid, "missing_steps", iters, None, self.cursor.get(qid, 0), len(self.steps[qid]))
        got = (idx, iters, conv)
        if got != want:
            name = "indices" if idx != want[0] else ("iterations" if iters != want[1] else "converged")
            self.mismatch(qid, name, iters, None, got, want)
        if qid in self.last_stamp:
            start = self.start.get(qid)
            if start is not None:
                self.decode_cycles.append(self.last_stamp[qid] - start + 1)
        self.result_stamps.append(cycle)
        self.done[qid] = qid not in self.bad
        if self.result_hook is not None:
            self.result_hook(qid)
        self.progress.set()
        self.cov[f"results_{self.kinds[qid]}"] += 1
        self.cov["results_converged"] += int(conv)
        self.cov["results_max_iter"] += int(not conv)

    def on_reset(self) -> list[int]:
        """Drop every query in flight; they are re-sent (their partial steps were already compared)."""
        lost = sorted(self.in_flight)
        for q in lost:
            self.cursor[q] = 0
            self.last_stamp.pop(q, None)
            self.iter_draws[q] = 0
        self.in_flight.clear()
        self.cov["resets"] += 1
        self.cov["aborted_queries"] += len(lost)
        self.progress.set()
        return lost


def _short(v):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    s = json.dumps(v, default=str)
    return s if len(s) <= 300 else s[:300] + "..."


# ---------------------------------------------------------------------------------- DUT access
def _int(sig) -> int:
    return int(sig.value)


def _unpack(value: int, n: int, bits: int) -> np.ndarray:
    mask = (1 << bits) - 1
    return np.array([(value >> (i * bits)) & mask for i in range(n)], dtype=np.int64)


class StateMonitor:
    def __init__(self, dut, cfg: hr.RtlConfig, sb: Scoreboard) -> None:
        self.dut, self.cfg, self.sb = dut, cfg, sb
        dp = cfg.datapath()
        self.ab = dp.a_bits

    async def run(self) -> None:
        dut, cfg = self.dut, self.cfg
        D, M = cfg.D, cfg.M
        w = cfg.widths
        while True:
            await RisingEdge(dut.dbg_step)
            await ReadOnly()
            s = {
                "qid": _int(dut.dbg_qid), "iter": _int(dut.dbg_iter), "factor": _int(dut.dbg_factor),
                "sampled": np.int64(_int(dut.dbg_sampled)), "pulled": np.int64(_int(dut.dbg_pulled)),
                "conv": _int(dut.dbg_conv), "amax": np.int64(_int(dut.dbg_amax)),
                "argmax": np.int64(_int(dut.dbg_argmax)), "S": np.int64(_int(dut.dbg_S)),
                "R": np.int64(_int(dut.dbg_R)), "lfsr": _int(dut.dbg_lfsr), "draws": _int(dut.dbg_draws),
                "u": _unpack(_int(dut.dbg_u), D, w.unbound).reshape(cfg.B, cfg.L),
                "a": _unpack(_int(dut.dbg_a), M, self.ab), "w": _unpack(_int(dut.dbg_w), M, self.ab),
                "x": _unpack(_int(dut.dbg_x), D, w.estimate).reshape(cfg.B, cfg.L),
                "cycle": _int(dut.dbg_cycle), "start_cycle": _int(dut.dbg_start_cycle),
            }
            self.sb.start[s["qid"]] = s["start_cycle"]
            self.sb.step(s)


class ResultMonitor:
    def __init__(self, dut, cfg: hr.RtlConfig, sb: Scoreboard, rng: random.Random, backpressure: bool) -> None:
        self.dut, self.cfg, self.sb, self.rng, self.bp = dut, cfg, sb, rng, backpressure
        self.iw = max(1, (cfg.M - 1).bit_length()) if cfg.M > 1 else 1

    async def run(self) -> None:
        dut = self.dut
        while True:
            if not _int(dut.m_valid):
                await RisingEdge(dut.m_valid)
            if self.bp and self.rng.random() < 0.6:
                await ClockCycles(dut.clk, self.rng.randint(1, 12))   # hold ready low: back-pressure
            dut.m_ready.value = 1
            await RisingEdge(dut.clk)
            if _int(dut.m_valid):                                  # pre-edge value: handshake now
                idx = _unpack(_int(dut.m_idx), self.cfg.F, self.iw).tolist()
                self.sb.result(_int(dut.m_qid), idx, _int(dut.m_iters), bool(_int(dut.m_conv)),
                               _int(dut.dbg_cycle))
            dut.m_ready.value = 0


class QueryDriver:
    def __init__(self, dut, cfg: hr.RtlConfig, q: torch.Tensor, sb: Scoreboard, rng: random.Random,
                 gaps: bool) -> None:
        self.dut, self.cfg, self.q, self.sb, self.rng, self.gaps = dut, cfg, q, sb, rng, gaps
        self.epoch = 0

    def beat(self, qid: int, b: int) -> int:
        word = 0
        for l, v in enumerate(self.q[qid, b].tolist()):
            word |= int(v) << (l * self.cfg.widths.query)
        return word

    async def send(self, qid: int) -> bool:
        """Send one query (B beats); False if a reset interrupted it."""
        dut, epoch = self.dut, self.epoch
        for b in range(self.cfg.B):
            if self.gaps and self.rng.random() < 0.5:
                await ClockCycles(dut.clk, self.rng.randint(1, 6))
                if self.epoch != epoch:
                    return False
            dut.s_valid.value = 1
            dut.s_data.value = self.beat(qid, b)
            dut.s_qid.value = qid
            while True:
                if not _int(dut.s_ready):
                    await RisingEdge(dut.s_ready)
                await RisingEdge(dut.clk)
                if self.epoch != epoch:
                    dut.s_valid.value = 0
                    return False
                if _int(dut.s_ready):                              # pre-edge value: accepted now
                    break
            if b == 0:
                self.sb.accepted(qid)
            dut.s_valid.value = 0
        return True


# ---------------------------------------------------------------------------------- test
@cocotb.test()
async def bcf_cosim(dut):
    plan = json.loads(Path(os.environ["HDSIM_COSIM_PLAN"]).read_text())
    cfg = hr.RtlConfig.from_dict(plan["config"])
    n, seed = plan["queries"], plan["seed"]
    if plan.get("query_file"):  # given queries (e.g. a CNN's outputs, Q0.Wq integers)
        q = torch.from_numpy(np.load(plan["query_file"])).long()
        kinds = ["given"] * n
    else:
        stim = hr.make_cosim_queries(cfg, n, seed, noise_sigma=plan["noise_sigma"], mix=tuple(plan["mix"]))
        q, kinds = stim["queries"], stim["kinds"]
    pert = hr.read_perturbation_hex(plan["pert_file"], cfg.perturb_bits, (n, cfg.iterations_cap(), cfg.F, cfg.M))
    if not plan.get("external_perturbations"):
        assert np.array_equal(pert, hr.make_perturbations(cfg, n, seed + 7, fraction=plan["perturb_fraction"]))
    # the model's configuration; a plan may perturb it (only to test that the bench catches it)
    model_cfg = hr.RtlConfig.from_dict({**plan["config"], **plan.get("model_override", {})})
    steps, results = expected_run(model_cfg, q, pert)

    # the RTL's derived widths are the model's (Datapath)
    dp = cfg.datapath()
    assert len(dut.dbg_S.value) == dp.s_bits and len(dut.dbg_R.value) == dp.recip_bits
    assert len(dut.dbg_amax.value) == dp.a_bits and len(dut.dbg_argmax.value) == dp.idx_bits

    rng = random.Random(seed)
    sb = Scoreboard(cfg, steps, results, kinds, pert)
    driver = QueryDriver(dut, cfg, q, sb, rng, plan["gaps"])

    dut.rst.value = 1
    dut.s_valid.value = 0
    dut.m_ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    cocotb.start_soon(StateMonitor(dut, cfg, sb).run())
    cocotb.start_soon(ResultMonitor(dut, cfg, sb, rng, plan["backpressure"]).run())

    # resets: after a chosen step of chosen queries (mid-decode), and one while a query loads
    reset_now = Event()
    n_resets = plan["resets"]
    victims = {}
    if n_resets:
        multi = [i for i in range(n) if len(steps[i]) >= 2]
        for i in rng.sample(multi, min(len(multi), max(0, n_resets - 1))):
            victims[i] = rng.randrange(0, len(steps[i]) - 1)

    def hook(qid, c):
        if victims.get(qid) == c:
            del victims[qid]
            reset_now.set()

    sb.step_hook = hook
    sb.result_hook = lambda qid: victims.pop(qid, None)   # a victim that ended early is no victim

    async def do_reset():
        await RisingEdge(dut.clk)
        st = _int(dut.dbg_state)
        loading = st in (0, 1) or _int(dut.u_dut.init_mode)     # INIT / WAIT / the init pass
        if loading:
            sb.cov["resets_mid_load" if _int(dut.u_dut.ld_blk) != 0 else "resets_idle"] += 1
        elif st != 10:
            sb.cov["resets_mid_decode"] += 1
        sb.cov["resets_result_pending"] += _int(dut.m_valid)
        dut.rst.value = 1
        driver.epoch += 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        return sb.on_reset()

    async def reset_controller():
        while True:
            await reset_now.wait()
            reset_now.clear()
            lost = await do_reset()
            pending.extend(lost)

    pending: list[int] = list(range(n))
    cocotb.start_soon(reset_controller())
    load_reset_at = rng.randrange(n) if n_resets else -1
    timeout = plan.get("timeout_cycles") or 0
    sent = 0
    # watchdog: no result for this long means the DUT is stuck (a fail, not a hang)
    longest = cfg.iterations_cap() * (hr.lower_bound(cfg, 4 * cfg.A * cfg.M)["total"] + 200) * 4 + 10_000
    timed_out = False
    while pending or sb.in_flight or victims:
        if timeout and get_sim_time("ns") // 10 > timeout:
            break
        if not pending:
            sb.progress.clear()
            fired = await First(sb.progress.wait(), Timer(int(longest) * 10, unit="ns"))
            if not sb.progress.is_set():
                timed_out = True
                sb.mismatch(min(sb.in_flight) if sb.in_flight else -1, "timeout", None, None,
                            f"no result for {int(longest)} cycles", sorted(sb.in_flight)[:10])
                break
            del fired
            continue
        qid = pending.pop(0)
        if sent == load_reset_at:
            # a reset while this query loads (right after its first beat is accepted)
            load_reset_at = -1
            task = cocotb.start_soon(driver.send(qid))
            while qid not in sb.in_flight and not task.done():
                await RisingEdge(dut.clk)
            lost = await do_reset()
            pending.extend(lost)
            if not await task and qid not in pending:
                pending.append(qid)
        elif not await driver.send(qid) and qid not in pending:
            pending.append(qid)
        sent += 1

    passed = sum(1 for q_, ok in sb.done.items() if ok)
    failed = sorted(set(sb.bad))
    ic = np.array(sb.iter_cycles, dtype=float)
    ib = np.array(sb.iter_bound, dtype=float)
    draws_per_iter = (sb.cov["lfsr_words"] / max(1, len(ic)))
    bound = hr.lower_bound(cfg, draws_per_iter)
    streaming = None
    if not plan["gaps"] and not plan["backpressure"] and not n_resets and len(sb.result_stamps) > 2:
        streaming = float(np.mean(np.diff(sb.result_stamps)))
    report = {
        "config": cfg.name,
        "queries": n,
        "passed": passed,
        "failed": len(failed),
        "failed_queries": failed[:50],
        "missing": sorted(set(range(n)) - set(sb.done))[:50],
        "mismatches": sb.mismatches,
        "coverage": dict(sb.cov),
        "cycles_per_query": float(np.mean(sb.decode_cycles)) if sb.decode_cycles else None,
        "cycles_per_query_streaming": streaming,
        "cycles_per_iteration": float(ic.mean()) if ic.size else None,
        "lower_bound": bound,
        "lower_bound_per_iteration_mean": float(ib.mean()) if ib.size else None,
        "ratio_to_lower_bound": float(ic.sum() / ib.sum()) if ib.size else None,
        "iterations_measured": int(ic.size),
        "sim_cycles": int(get_sim_time("ns") // 10),
        "timed_out": timed_out,
    }
    Path(plan["result_path"]).write_text(json.dumps(report, indent=1, default=float))
    assert not sb.mismatches, f"{len(sb.mismatches)} mismatches, first: {sb.mismatches[0]}"
    assert passed == n, f"only {passed} of {n} queries passed"
