"""``hdsim sweep dropout``: partition dropout against Bernoulli dropout at the matched rate, over seeds.

Seed 004's LeNet table in kind: for each ``P`` and each seed, the same network is trained twice on
the digit task, once with Bernoulli dropout at rate ``1 / P`` (``torch.nn.Dropout``) and once with
partition dropout with ``P`` partitions (:class:`export.partition_dropout.PartitionDropout`: every
unit dropped exactly once per ``P`` steps), both before the classifier; the table is the mean and
standard deviation over the seeds of the final test accuracy. Writes ``dropout_sweep.csv`` (one row
per training) and ``dropout_sweep.png`` (accuracy per seed and method), prints one JSON object.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from hdsim.errors import HdsimError
from hdsim.partition_dropout import check_partitions
from hdsim.validation import check_int, check_threads, output_dir

__all__ = ["DropoutSweepConfig", "run_dropout_sweep"]


@dataclass(frozen=True)
class DropoutSweepConfig:
    """Options of :func:`run_dropout_sweep` (validated by :meth:`validate`); training sizes default to CI size."""

    out: str = "out/dropout_sweep"
    partitions: tuple[int, ...] = (2,)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    dataset: str = "mnist2"
    head: str = "bcf"
    epochs: int = 8
    qat_epochs: int = 0
    train_size: int = 6400
    threads: int = 1

    def validate(self) -> "DropoutSweepConfig":
        for P in self.partitions:
            check_partitions(P)
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise HdsimError(f"seeds: need at least two distinct seeds (a standard deviation), got {list(self.seeds)}")
        for name in ("epochs", "train_size"):
            check_int(name, getattr(self, name))
        check_int("qat_epochs", self.qat_epochs, minimum=0)
        check_threads("threads", self.threads)
        return self


def run_dropout_sweep(cfg: DropoutSweepConfig, progress: bool = True) -> dict:
    """Train every (P, seed, method), write the CSV and PNG, return the summary (module docstring)."""
    from hdsim.sweep.output import new_figure, save_figure, write_csv
    from export.train import TrainConfig, train

    cfg = cfg.validate()
    out = output_dir("out", cfg.out)
    rows = []
    t0 = time.perf_counter()
    runs = [(P, s, m) for P in cfg.partitions for s in cfg.seeds for m in ("bernoulli", "partition")]
    for i, (P, seed, method) in enumerate(runs):
        tc = TrainConfig(dataset=cfg.dataset, head=cfg.head, epochs=cfg.epochs, qat_epochs=cfg.qat_epochs,
                         train_size=cfg.train_size, seed=seed)
        tc = replace(tc, dropout=1.0 / P) if method == "bernoulli" else replace(tc, partition_dropout=P)
        if progress:
            print(f"dropout sweep {i + 1}/{len(runs)}: P={P} seed={seed} {method}", file=sys.stderr)
        metrics = train(tc, out / f"P{P}_seed{seed}_{method}", progress=False, threads=cfg.threads,
                        log=lambda s: None)
        rows.append({"P": P, "rate": round(1.0 / P, 6), "seed": seed, "method": method,
                     "test_accuracy": float(metrics["test_accuracy"])})
    csv = write_csv(out / "dropout_sweep.csv", rows)
    summary = {}
    for P in cfg.partitions:
        for method in ("bernoulli", "partition"):
            acc = np.array([r["test_accuracy"] for r in rows if r["P"] == P and r["method"] == method])
            summary[f"P{P}_{method}"] = {"mean": round(float(acc.mean()), 4), "std": round(float(acc.std(ddof=1)), 4),
                                         "runs": int(acc.size)}
        summary[f"P{P}_std_ratio"] = round(summary[f"P{P}_partition"]["std"] / summary[f"P{P}_bernoulli"]["std"], 4) \
            if summary[f"P{P}_bernoulli"]["std"] > 0 else None
    fig, ax = new_figure(1, width=6.5)
    for j, method in enumerate(("bernoulli", "partition")):
        for P in cfg.partitions:
            sel = [r for r in rows if r["P"] == P and r["method"] == method]
            ax.plot([r["seed"] + 0.1 * j for r in sel], [r["test_accuracy"] for r in sel], "os"[j],
                    label=f"{method} (P={P}, rate {1 / P:.2f})")
    ax.set_xlabel("seed")
    ax.set_ylabel("test accuracy")
    ax.set_title("partition vs Bernoulli dropout (seed 004)")
    ax.legend(loc="lower right")
    save_figure(fig, out / "dropout_sweep.png")
    return {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
            "summary": summary, "csv": str(csv), "png": str(out / "dropout_sweep.png"),
            "seconds": round(time.perf_counter() - t0, 1)}
