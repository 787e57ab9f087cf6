"""cocotb bench of ``hdsim_bcf``: a class-based testbench around hdsim's fixed-point model.

Run through :func:`hdsim.rtl.run_cosim` (which writes the plan named by
``$HDSIM_COSIM_PLAN``); never re-implements the model: the expected values are
what :class:`hdsim.fixed.FixedBCF` reports through its ``observe`` hook, with its
``perturb`` hook reading the same perturbation table the testbench feeds the DUT
and its sampler (:class:`hdsim.lfsr.LFSRSampler`) recording its register states.

Components (one class each, wired by :class:`Testbench`):
    GoldenModel      -- FixedBCF on all queries: every expected factor step and result
                        (or a deliberately wrong mutant, to prove the bench catches it).
    QueryDriver      -- B beats per query over valid/ready, random valid gaps; waits on
                        s_ready at most a bounded number of cycles; can stop mid-load.
    ResultMonitor    -- result handshake with short ready holds and real stalls: m_ready
                        stays low until the next decode has finished and waits in DONE.
    StateMonitor     -- on every dbg_step pulse, reads the whole factor-step state.
    Scoreboard       -- compares every step (u, a, w, S, R, x, amax, argmax, sampled,
                        pulled, converged, LFSR state, LFSR words) and every result.
    ResetController  -- synchronous resets aimed at DUT states (hdsim.rtl.RESET_TARGETS:
                        mid-load, init pass, idle, every decode phase, DONE with a result
                        pending); the queries in flight are re-sent.
    Coverage         -- counters (bins) with the run's required minimums
                        (hdsim.rtl.coverage_minimums), asserted at the end.
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
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, ReadOnly, RisingEdge, Timer

from hdsim import rtl as hr
from hdsim.fixed.bcf import FixedBCF
from hdsim.fixed.rounding import bit_length, saturate_unsigned, shift_floor
from hdsim.lfsr import LFSR, LFSRSampler, query_seed

STEP_SIGNALS = ("u", "a", "w", "S", "R", "x", "amax", "argmax", "sampled", "pulled")
ST_DONE = 10


# ---------------------------------------------------------------------------------- golden model
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


class UnbindFloorMutant(FixedBCF):
    """Deliberately wrong model: the unbinding requantizes with floor instead of round half up."""

    def unbind(self, q, x, f):
        w = self.widths
        t, w_in = q, w.query
        for g in range(self.codebooks.F):
            if g != f:
                acc = self.correlate_estimate(t, x[:, g], g)
                t = saturate_unsigned(shift_floor(acc, w_in + w.estimate - w.unbound), w.unbound)
                w_in = w.unbound
        return t


class RecipPlusOneMutant(FixedBCF):
    """Deliberately wrong model: the normalization's reciprocal is one LSB too large."""

    def normalize(self, s, S):
        G, Wx = self.widths.recip_guard, self.widths.estimate
        p = bit_length(S)
        R = torch.where(S > 0, torch.div(torch.ones_like(S) << (p + G), S.clamp_min(1), rounding_mode="floor") + 1,
                        torch.zeros_like(S))
        x = saturate_unsigned((s * R.view(-1, 1, 1)) >> (p + G - Wx).view(-1, 1, 1), Wx)
        return x, R


MUTANTS = {"unbind_floor": UnbindFloorMutant, "recip_plus_one": RecipPlusOneMutant}


class GoldenModel:
    """FixedBCF (or a named mutant) on every query; per query the expected steps and result."""

    def __init__(self, cfg: hr.RtlConfig, q: torch.Tensor, pert: np.ndarray, mutant: str | None = None) -> None:
        self.cfg = cfg
        cb = cfg.codebooks()
        assert cb.sizes == (cfg.M,) * cfg.F
        self.sampler = RecordingSampler(cfg.lfsr_seed)
        cls = MUTANTS[mutant] if mutant else FixedBCF
        self.model = cls(cb, cfg.bcf_config(), cfg.widths, sampler=self.sampler)
        self.steps, self.results = self._run(q, pert)

    def _run(self, q: torch.Tensor, pert: np.ndarray):
        cfg = self.cfg
        steps: dict[int, list[dict]] = defaultdict(list)

        def perturb(it, f, ids, u, a):
            return torch.from_numpy(pert[ids.numpy(), it - 1, f, :])

        def observe(state):
            for r, qid in enumerate(state.query_ids):
                qid = int(qid)
                for f, st in enumerate(state.factors):
                    rec = {"iter": state.iteration, "factor": f}
                    for name in STEP_SIGNALS:
                        rec[name] = np.asarray(getattr(st, name)[r]).astype(np.int64)
                    rec["converged"] = int(state.converged[r]) if f == cfg.F - 1 else None
                    steps[qid].append(rec)

        res = self.model.factorize(q, observe=observe, perturb=perturb)
        k = (cfg.M - 1).bit_length()
        for qid, recs in steps.items():
            state = query_seed(cfg.lfsr_seed, qid)
            calls = iter(self.sampler.calls.get(qid, []))
            for rec in recs:
                words = 0
                if rec["sampled"] and cfg.A < cfg.M:
                    before, after = next(calls)
                    assert before == state
                    words = lfsr_words(before, after, k)
                    state = after
                rec["lfsr"] = state
                rec["draws"] = words
        results = {i: (res.indices[i].tolist(), int(res.iterations[i]), bool(res.converged[i]))
                   for i in range(q.shape[0])}
        return steps, results


# ---------------------------------------------------------------------------------- coverage
class Coverage:
    """Named counters (functional coverage bins) and the run's required minimums."""

    def __init__(self, minimums: dict[str, int]) -> None:
        self.bins: defaultdict[str, int] = defaultdict(int)
        self.minimums = dict(minimums)

    def hit(self, name: str, n: int = 1) -> None:
        self.bins[name] += int(n)

    def unmet(self) -> dict[str, tuple[int, int]]:
        """``{bin: (count, required)}`` for every bin below its minimum."""
        return {k: (self.bins.get(k, 0), v) for k, v in self.minimums.items() if self.bins.get(k, 0) < v}


# ---------------------------------------------------------------------------------- scoreboard
class Scoreboard:
    def __init__(self, cfg: hr.RtlConfig, model: GoldenModel, kinds, pert, cov: Coverage) -> None:
        self.cfg = cfg
        self.steps = model.steps
        self.results = model.results
        self.kinds = kinds
        self.pert = pert
        self.cov = cov
        self.cursor: dict[int, int] = {}
        self.bad: set[int] = set()
        self.done: dict[int, bool] = {}
        self.in_flight: set[int] = set()
        self.mismatches: list[dict] = []
        self.iter_cycles: list[int] = []
        self.iter_bound: list[float] = []
        self.decode_cycles: list[int] = []
        self.result_stamps: list[int] = []
        self.last_stamp: dict[int, int] = {}
        self.iter_draws: dict[int, int] = defaultdict(int)
        self.iter_macs: dict[int, int] = defaultdict(int)
        self.iter_macs_all: list[int] = []
        self.iter_sched: dict[int, int] = defaultdict(int)   # factor_step_cycles summed per iteration
        self.iter_schedule: list[int] = []
        # the estimates the unbinding sees: per query, each factor's latest x (x0 at the start)
        self.x0 = model.model.initial_estimates(1)[0].numpy()
        self.xcur: dict[int, np.ndarray] = {}
        self.start: dict[int, int] = {}
        self.n_results = 0
        self.progress = Event()   # set on every result and reset (wakes the waiting coroutines)
        self.reset_seen = Event()  # set on every reset (ends a stall wait)
        dp = cfg.datapath()
        self.T_int = dp.T_int
        self.a_max = (1 << dp.a_bits) - 1
        self.x_max = (1 << cfg.widths.estimate) - 1
        self.X = [X.numpy() for X in model.model.codebooks.indices]

    def _normalize_saturates(self, e: dict) -> bool:
        """Whether the step's normalization clipped an entry: ``(s R) >> (p + G - Wx) > 2^Wx - 1``,
        with ``s`` re-bundled here from the expected weights (the bin does not trust the DUT)."""
        S, R = int(e["S"]), int(e["R"])
        if S == 0:
            return False
        X = self.X[e["factor"]]
        s = np.zeros((self.cfg.B, self.cfg.L), dtype=np.int64)
        for b in range(self.cfg.B):
            np.add.at(s[b], X[:, b], e["w"])
        w = self.cfg.widths
        return bool(((s * R) >> (S.bit_length() + w.recip_guard - w.estimate)).max() > self.x_max)

    def mismatch(self, qid, signal, it, f, got, want) -> None:
        self.bad.add(qid)
        if len(self.mismatches) < 20:
            self.mismatches.append({"query": qid, "signal": signal, "iteration": it, "factor": f,
                                    "got": _short(got), "expected": _short(want)})

    def accepted(self, qid: int) -> None:
        self.in_flight.add(qid)
        self.cursor[qid] = 0
        self.iter_draws[qid] = 0
        self.iter_macs[qid] = 0
        self.iter_sched[qid] = 0
        self.xcur[qid] = self.x0.copy()

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
        cov = self.cov
        cov.hit("steps")
        cov.hit("sampled_steps", int(e["sampled"]))
        cov.hit("pulled_steps", int(e["pulled"]))
        cov.hit("threshold_fallback_steps", int(not e["sampled"] and not e["pulled"] and e["amax"] < self.T_int))
        cov.hit("lfsr_words", e["draws"])
        p = self.pert[qid, e["iter"] - 1, e["factor"]]
        cov.hit("perturbed_steps", int(np.any(p != 0)))
        sat = int(np.sum((e["a"] == 0) & (p < 0)) + np.sum((e["a"] == self.a_max) & (p > 0)))
        cov.hit("saturated_similarities", sat)
        cov.hit("saturated_a_steps", int(sat > 0))
        cov.hit("saturated_x_steps", int(self._normalize_saturates(e)))
        # cycles: one iteration ends at the last factor's step; the unbinding's work is the
        # multiply-adds with a non-zero estimate entry (the model's estimates, not the DUT's)
        xs, f = self.xcur[qid], e["factor"]
        others = [xs[g] for g in range(self.cfg.F) if g != f]
        self.iter_macs[qid] += self.cfg.L * int(sum(np.count_nonzero(x) for x in others))
        self.iter_sched[qid] += hr.factor_step_cycles(self.cfg, others, int(e["draws"]))
        xs[f] = e["x"]
        self.iter_draws[qid] += e["draws"]
        if e["factor"] == self.cfg.F - 1:
            prev = self.last_stamp.get(qid, s["start_cycle"])
            self.iter_cycles.append(s["cycle"] - prev)
            self.iter_bound.append(hr.lower_bound(self.cfg, self.iter_draws[qid], self.iter_macs[qid])["total"])
            self.iter_macs_all.append(self.iter_macs[qid])
            self.iter_schedule.append(self.iter_sched[qid])
            self.iter_sched[qid] = 0
            self.iter_draws[qid] = 0
            self.iter_macs[qid] = 0
            self.last_stamp[qid] = s["cycle"]

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
        self.n_results += 1
        self.progress.set()
        self.cov.hit(f"results_{self.kinds[qid]}")
        self.cov.hit("results_converged", int(conv))
        self.cov.hit("results_max_iter", int(not conv))

    def on_reset(self) -> list[int]:
        """Drop every query in flight; they are re-sent (their partial steps were already compared)."""
        lost = sorted(self.in_flight)
        for q in lost:
            self.cursor[q] = 0
            self.last_stamp.pop(q, None)
            self.iter_draws[q] = 0
            self.iter_sched[q] = 0
        self.in_flight.clear()
        self.cov.hit("resets")
        self.cov.hit("aborted_queries", len(lost))
        self.progress.set()
        self.reset_seen.set()
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
        self.ab = cfg.datapath().a_bits

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
    """Takes results; back-pressure of two kinds.

    * short holds: ``m_ready`` low 1-12 cycles (the next decode is still running: no stall);
    * stalls: ``m_ready`` low until the testbench's ``done_blocked`` rises (the next query's
      decode has finished and waits in DONE because the output register is full), then 1-16
      cycles more. Only a stall that really happened (``done_blocked`` seen) is counted.
    """

    STALL_P = 0.35
    HOLD_P = 0.4

    def __init__(self, dut, cfg: hr.RtlConfig, sb: Scoreboard, rng: random.Random, backpressure: bool,
                 stall_limit: int, more_traffic) -> None:
        self.dut, self.cfg, self.sb, self.rng, self.bp = dut, cfg, sb, rng, backpressure
        self.iw = max(1, (cfg.M - 1).bit_length())
        self.stall_limit = stall_limit
        self.more_traffic = more_traffic   # () -> bool: another query will follow this result
        self.stall_next = False            # set by the reset controller (a reset in DONE)

    async def run(self) -> None:
        dut, rng, cov = self.dut, self.rng, self.sb.cov
        while True:
            if not _int(dut.m_valid):
                await RisingEdge(dut.m_valid)
            if self.stall_next or (self.bp and self.more_traffic() and rng.random() < self.STALL_P):
                blocked = RisingEdge(dut.done_blocked)
                self.sb.reset_seen.clear()
                fired = await First(blocked, self.sb.reset_seen.wait(), ClockCycles(dut.clk, self.stall_limit))
                if fired is blocked:
                    self.stall_next = False      # a forced stall stays requested until one happens
                    cov.hit("stalls")
                    await ClockCycles(dut.clk, rng.randint(2, 16))
                # a reset or the limit woke us: take whatever is there
            elif self.bp and rng.random() < self.HOLD_P:
                await ClockCycles(dut.clk, rng.randint(1, 12))
                cov.hit("short_holds")
            dut.m_ready.value = 1
            await RisingEdge(dut.clk)
            if _int(dut.m_valid):                                  # pre-edge value: handshake now
                idx = _unpack(_int(dut.m_idx), self.cfg.F, self.iw).tolist()
                self.sb.result(_int(dut.m_qid), idx, _int(dut.m_iters), bool(_int(dut.m_conv)),
                               _int(dut.dbg_cycle))
            dut.m_ready.value = 0


class SReadyTimeout(Exception):
    """s_ready stayed low longer than the driver's limit: the DUT is stuck."""


class QueryDriver:
    def __init__(self, dut, cfg: hr.RtlConfig, q: torch.Tensor, sb: Scoreboard, rng: random.Random,
                 gaps: bool, ready_limit: int) -> None:
        self.dut, self.cfg, self.q, self.sb, self.rng, self.gaps = dut, cfg, q, sb, rng, gaps
        self.ready_limit = ready_limit
        self.epoch = 0
        self.stop_after: int | None = None   # set by the reset controller: hold after this many beats
        self.stopped = Event()

    def beat(self, qid: int, b: int) -> int:
        word = 0
        for l, v in enumerate(self.q[qid, b].tolist()):
            word |= int(v) << (l * self.cfg.widths.query)
        return word

    async def _wait_ready(self) -> None:
        dut = self.dut
        if not _int(dut.s_ready):
            rise = RisingEdge(dut.s_ready)
            fired = await First(rise, ClockCycles(dut.clk, self.ready_limit))
            if fired is not rise and not _int(dut.s_ready):
                raise SReadyTimeout(f"s_ready low for {self.ready_limit} cycles")

    async def send(self, qid: int) -> bool:
        """Send one query (B beats); False if a reset interrupted it."""
        dut, epoch = self.dut, self.epoch
        for b in range(self.cfg.B):
            if b > 0 and self.stop_after == b:
                # a reset between beats: hold the remaining beats until it comes
                self.stop_after = None
                self.stopped.set()
                while self.epoch == epoch:
                    await RisingEdge(dut.clk)
                return False
            if self.gaps and self.rng.random() < 0.5:
                await ClockCycles(dut.clk, self.rng.randint(1, 6))
                if self.epoch != epoch:
                    return False
            while _int(dut.rst):                                   # a master drives nothing in reset
                await FallingEdge(dut.clk)
            dut.s_valid.value = 1
            dut.s_data.value = self.beat(qid, b)
            dut.s_qid.value = qid
            while True:
                await self._wait_ready()
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


def state_bin(state: int, init_mode: int) -> str:
    """The reset-target name of a DUT state (``hdsim.rtl.RESET_TARGETS``)."""
    if state in (7, 8) and init_mode:
        return "init"
    return {0: "init", 1: "wait", 2: "unbind", 3: "unbind", 4: "similarity", 5: "decide", 6: "draw",
            7: "bundle", 8: "normalize", 9: "step", 10: "done"}.get(state, "other")


class ResetController:
    """Synchronous resets aimed at DUT states, one target at a time, after at least one result each.

    Each reset is counted by what the DUT was doing at the reset edge (read from the DUT,
    not assumed): ``resets_in_<state>``, ``resets_mid_load`` (a query partly loaded),
    ``resets_result_pending`` (an untaken result in the output register).
    """

    def __init__(self, tb: Testbench, schedule: list[str]) -> None:
        self.tb = tb
        self.schedule = list(schedule)
        self.done = False

    async def reset(self) -> None:
        """Assert ``rst`` from a writable phase before the next rising edge, for two edges."""
        tb = self.tb
        dut, cov = tb.dut, tb.cov
        st, im = _int(dut.dbg_state), _int(dut.u_dut.init_mode)
        cov.hit(f"resets_in_{state_bin(st, im)}")
        cov.hit("resets_mid_load", int(_int(dut.u_dut.ld_blk) != 0))
        cov.hit("resets_result_pending", _int(dut.m_valid))
        dut.rst.value = 1
        tb.driver.epoch += 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        for q in tb.sb.on_reset():
            if q not in tb.pending:
                tb.pending.append(q)

    async def hit(self, target: str) -> None:
        tb = self.tb
        dut = tb.dut
        if target == "load":
            tb.driver.stopped.clear()
            tb.driver.stop_after = tb.rng.randint(1, tb.cfg.B - 1)
            await tb.driver.stopped.wait()
            await FallingEdge(dut.clk)
        elif target == "done":
            tb.monitor.stall_next = True
            await RisingEdge(dut.done_blocked)
            await FallingEdge(dut.clk)
        else:
            while True:
                await dut.dbg_state.value_change
                await ReadOnly()
                if state_bin(_int(dut.dbg_state), _int(dut.u_dut.init_mode)) == target:
                    break
            await FallingEdge(dut.clk)   # state entered at the last edge: rst is sampled at the next
        await self.reset()

    async def run(self) -> None:
        sb = self.tb.sb
        for target in self.schedule:
            mark = sb.n_results
            while sb.n_results <= mark:          # traffic moves between resets
                sb.progress.clear()
                await sb.progress.wait()
            await self.hit(target)
        self.done = True


# ---------------------------------------------------------------------------------- testbench
class Testbench:
    def __init__(self, dut, plan: dict) -> None:
        self.dut = dut
        self.plan = plan
        cfg = self.cfg = hr.RtlConfig.from_dict(plan["config"])
        n, seed = plan["queries"], plan["seed"]
        if plan.get("query_file"):  # given queries (e.g. a CNN's outputs, Q0.Wq integers)
            self.q = torch.from_numpy(np.load(plan["query_file"])).long()
            self.kinds = ["given"] * n
        else:
            stim = hr.make_cosim_queries(cfg, n, seed, noise_sigma=plan["noise_sigma"], mix=tuple(plan["mix"]))
            self.q, self.kinds = stim["queries"], stim["kinds"]
        shape = (n, cfg.iterations_cap(), cfg.F, cfg.M)
        self.pert = hr.read_perturbation_hex(plan["pert_file"], cfg.perturb_bits, shape)
        if not plan.get("external_perturbations"):
            assert np.array_equal(self.pert, hr.make_perturbations(cfg, n, seed + 7, fraction=plan["perturb_fraction"]))
        # the model's configuration; a plan may perturb it or swap in a mutant (only to test the bench)
        model_cfg = hr.RtlConfig.from_dict({**plan["config"], **plan.get("model_override", {})})
        self.model = GoldenModel(model_cfg, self.q, self.pert, plan.get("mutant"))
        self.rng = random.Random(seed)
        self.cov = Coverage(plan.get("coverage_min", {}))
        self.sb = Scoreboard(cfg, self.model, self.kinds, self.pert, self.cov)
        # watchdog: no result for this long means the DUT is stuck (a fail, not a hang)
        self.longest = int(cfg.iterations_cap() * (hr.lower_bound(cfg, 4 * cfg.A * cfg.M)["total"] + 200) * 4
                           + 10_000)
        self.pending: list[int] = list(range(n))
        self.driver = QueryDriver(dut, cfg, self.q, self.sb, self.rng, plan["gaps"], ready_limit=3 * self.longest)
        self.monitor = ResultMonitor(dut, cfg, self.sb, self.rng, plan["backpressure"], stall_limit=self.longest,
                                     more_traffic=lambda: bool(self.pending) or len(self.sb.in_flight) > 1)
        self.schedule = hr.reset_schedule(cfg, plan["resets"], self.rng)
        self.resets = ResetController(self, self.schedule)
        self.max_reruns = 20 + 4 * len(self.resets.schedule)

    def check_widths(self) -> None:
        """The RTL's derived widths are the model's (Datapath)."""
        dp, dut = self.cfg.datapath(), self.dut
        assert len(dut.dbg_S.value) == dp.s_bits and len(dut.dbg_R.value) == dp.recip_bits
        assert len(dut.dbg_amax.value) == dp.a_bits and len(dut.dbg_argmax.value) == dp.idx_bits

    async def run(self) -> dict:
        dut, sb = self.dut, self.sb
        self.check_widths()
        dut.rst.value = 1
        dut.s_valid.value = 0
        dut.m_ready.value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        cocotb.start_soon(StateMonitor(dut, self.cfg, sb).run())
        cocotb.start_soon(self.monitor.run())
        if self.resets.schedule and self.resets.schedule[0] == "wait":
            self.resets.schedule.pop(0)          # idle (initial estimates ready, no query): only now
            await self.resets.hit("wait")
        cocotb.start_soon(self.resets.run())
        timeout = self.plan.get("timeout_cycles") or 0
        timed_out = False
        reruns = 0
        while self.pending or sb.in_flight or (not self.resets.done and reruns < self.max_reruns):
            if timeout and get_sim_time("ns") // 10 > timeout:
                break
            if not self.pending:
                if len(sb.in_flight) <= 1 and not self.resets.done and reruns < self.max_reruns:
                    # resets still scheduled but the traffic is ending: re-run a finished query to carry them
                    free = sorted(set(range(self.plan["queries"])) - sb.in_flight)
                    self.pending.append(self.rng.choice(free))
                    reruns += 1
                    sb.cov.hit("rerun_queries")
                    continue
                sb.progress.clear()
                fired = await First(sb.progress.wait(), Timer(self.longest * 10, unit="ns"))
                if not sb.progress.is_set():
                    timed_out = True
                    sb.mismatch(min(sb.in_flight) if sb.in_flight else -1, "timeout", None, None,
                                f"no result for {self.longest} cycles", sorted(sb.in_flight)[:10])
                    break
                del fired
                continue
            qid = self.pending.pop(0)
            try:
                ok = await self.driver.send(qid)
            except SReadyTimeout as e:
                timed_out = True
                sb.mismatch(qid, "timeout", None, None, str(e), None)
                break
            if not ok and qid not in self.pending:
                self.pending.append(qid)
        await ClockCycles(dut.clk, 2)
        self.cov.hit("stall_cycles", _int(dut.stall_cycles))
        return self.report(timed_out)

    def report(self, timed_out: bool) -> dict:
        sb, cfg, n = self.sb, self.cfg, self.plan["queries"]
        passed = sum(1 for ok in sb.done.values() if ok)
        ic = np.array(sb.iter_cycles, dtype=float)
        ib = np.array(sb.iter_bound, dtype=float)
        macs = float(np.mean(sb.iter_macs_all)) if sb.iter_macs_all else None
        bound = hr.lower_bound(cfg, self.cov.bins["lfsr_words"] / max(1, len(ic)), macs)
        streaming = None
        if not self.plan["gaps"] and not self.plan["backpressure"] and not self.plan["resets"] \
                and len(sb.result_stamps) > 2:
            streaming = float(np.mean(np.diff(sb.result_stamps)))
        return {
            "config": cfg.name,
            "queries": n,
            "passed": passed,
            "failed": len(sb.bad),
            "failed_queries": sorted(sb.bad)[:50],
            "missing": sorted(set(range(n)) - set(sb.done))[:50],
            "mismatches": sb.mismatches,
            "coverage": dict(sorted(self.cov.bins.items())),
            "coverage_required": self.cov.minimums,
            "coverage_unmet": {k: list(v) for k, v in self.cov.unmet().items()},
            "reset_schedule": self.schedule,
            "cycles_per_query": float(np.mean(sb.decode_cycles)) if sb.decode_cycles else None,
            "cycles_per_query_streaming": streaming,
            "cycles_per_iteration": float(ic.mean()) if ic.size else None,
            "lower_bound": bound,
            "lower_bound_per_iteration_mean": float(ib.mean()) if ib.size else None,
            "unbinding_macs_per_iteration": macs,
            "dense_unbinding_macs_per_iteration": cfg.F * (cfg.F - 1) * cfg.D * cfg.L,
            "ratio_to_lower_bound": float(ic.sum() / ib.sum()) if ib.size else None,
            # iterations whose measured cycles differ from the schedule model
            # (hdsim.rtl.factor_step_cycles on the model's estimates): (measured, model) pairs
            "schedule_mismatches": [(int(a), int(b)) for a, b in zip(sb.iter_cycles, sb.iter_schedule) if a != b][:20],
            "iterations_measured": int(ic.size),
            "sim_cycles": int(get_sim_time("ns") // 10),
            "timed_out": timed_out,
        }


def _plan() -> dict | None:
    path = os.environ.get("HDSIM_COSIM_PLAN")
    return json.loads(Path(path).read_text()) if path else None


_PLAN = _plan()


# ---------------------------------------------------------------------------------- test
@cocotb.test(timeout_time=(_PLAN or {}).get("sim_timeout_ns"), timeout_unit="ns")
async def bcf_cosim(dut):
    tb = Testbench(dut, _PLAN)
    report = await tb.run()
    Path(_PLAN["result_path"]).write_text(json.dumps(report, indent=1, default=float))
    assert not tb.sb.mismatches, f"{len(tb.sb.mismatches)} mismatches, first: {tb.sb.mismatches[0]}"
    assert report["passed"] == report["queries"], f"only {report['passed']} of {report['queries']} queries passed"
    assert not report["coverage_unmet"], f"coverage minimums not met: {report['coverage_unmet']}"
