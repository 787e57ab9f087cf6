"""The edge runner: an export folder -> onnxruntime -> (fixed-point) BCF decode -> classes.

:class:`Runner` checks the export once (manifest format, model sha256,
codebooks), builds one onnxruntime session (CPU, or CUDA first when
onnxruntime has it) and one decoder, then classifies batches:

* ``predict(images)``: PIL images, pixel arrays or paths -> :class:`Prediction` per image;
* ``predict_batch(x)``: network inputs ``(N, C, H, W)`` float32 (already normalized);
* ``run(specs)``: files / folders / globs / ``.npy`` -> a stream of predictions in
  input order (what ``hdsim run`` prints), bad inputs as error predictions.

Nothing here imports torch or training code: the export is read through
:class:`hdsim.export_folder.ExportFolder`, images through :mod:`deploy.inputs` (Pillow), the
network runs in onnxruntime and the heads decode in NumPy / numba (:mod:`deploy.decoders`:
``fixed`` — the compiled twin of :class:`hdsim.fixed.FixedBCF`, the bit-accurate integer model of
the RTL, with the manifest's widths, ``(T, A, Tc)`` and LFSR seed; ``float`` — the float BCF;
``bruteforce`` — the best product by exhaustive search; ``imc`` — the fixed decode on a PCM
crossbar). An FC-head export is classified by argmax (confidence: softmax probability). A
sparse-resonator export is decoded by its sparse resonator (``fixed``, the default) or by brute force.

A decode that does not converge within the manifest's ``max_iter`` is reported
with ``status="not-converged"`` and no class (its last estimate is kept apart),
one that lands on a null product (a product >= the class count) with
``status="null-product"``: never as a confident class.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from hdsim.errors import HdsimError
from hdsim.export_folder import ExportFolder, ort_session
from hdsim.extras import require
from hdsim.validation import check_int, check_threads
from deploy.decoders import DECODES, build_decoder
from deploy.inputs import Loaded, load_inputs, pixels_from_array, pixels_from_image

DEFAULT_BATCH = 32  # images per onnxruntime call and per decode call (runner and bench defaults)

__all__ = ["RunnerConfig", "Prediction", "Runner", "DECODERS", "summarize"]

DECODERS = DECODES


@dataclass(frozen=True)
class RunnerConfig:
    """How the runner decodes and runs (validated by :meth:`validate`).

    Attributes:
        decode: ``fixed`` (integer BCF, the RTL's model), ``float`` or ``bruteforce``.
        imc: a PCM preset name (``hdsim.imc.preset_names()``) to decode on a noisy
            crossbar (``fixed`` decode only), or ``None``.
        imc_t: seconds since the crossbar was programmed (drift).
        imc_tc: convergence threshold of the crossbar decode, a fraction of ``B`` (its ``dot``
            similarity is in ``[0, B]``). Lower than the digital 0.9: a crossbar reads a
            match about 15% low (programming noise, drift, ADC; measured 3.40 of 4 with
            ``pcm-chip`` at 20 s on the two-digit export), and at 0.9 half of the decodes
            would never stop; at 0.75 96% converge (digital: 97%), docs/deploy.md.
        threads: onnxruntime intra-op threads (0: onnxruntime's default). The decoders
            run on the calling thread.
        batch: images per onnxruntime call and per decode call.
        optimize: onnxruntime graph optimizations (``ORT_ENABLE_ALL``); ``False`` is
            ``ORT_DISABLE_ALL`` (bit-parity with the PyTorch model, slower).
        device: ``auto`` (CUDA when onnxruntime has it), ``cpu`` or ``cuda``.
        compiled: decode ``fixed`` with :class:`hdsim.fixed.compiled.CompiledFixedBCF` (numba;
            the same integers as :class:`hdsim.fixed.FixedBCF`, checked bit for bit in the
            tests); ``False`` runs the torch model itself (needs torch: the ``core`` extra).
    """

    decode: str = "fixed"
    imc: str | None = None
    imc_t: float = 20.0
    imc_tc: float = 0.75
    threads: int = 2
    batch: int = DEFAULT_BATCH
    optimize: bool = True
    device: str = "auto"
    compiled: bool = True

    def validate(self) -> "RunnerConfig":
        if self.decode not in DECODERS:
            raise HdsimError(f"decode: expected one of {list(DECODERS)}, got {self.decode!r}")
        if self.imc is not None:
            from hdsim.imc.config import preset_names

            if self.imc not in preset_names():
                raise HdsimError(f"imc: unknown preset {self.imc!r}; expected one of {preset_names()}")
            if self.decode != "fixed":
                raise HdsimError(f"imc: crossbar decoding needs --decode fixed (got {self.decode!r}; the float "
                                 "BCF's analog bundling does not converge on a noisy crossbar, docs/imc.md)")
        if not self.imc_t > 0:
            raise HdsimError(f"imc_t: seconds since programming must be > 0, got {self.imc_t}")
        if not 0 < self.imc_tc <= 1:
            raise HdsimError(f"imc_tc: must be in (0, 1] (a fraction of B), got {self.imc_tc}")
        check_threads("threads", self.threads, minimum=0)
        check_int("batch", self.batch)
        if self.device not in ("auto", "cpu", "cuda"):
            raise HdsimError(f"device: expected auto, cpu or cuda, got {self.device!r}")
        return self


@dataclass
class Prediction:
    """One input's result. Latencies in milliseconds; batch stages are split evenly over the batch."""

    input: str
    status: str  # ok | not-converged | null-product | error
    cls: int | None = None
    label: str | None = None
    factors: list[int] | None = None
    iterations: int | None = None
    converged: bool | None = None
    confidence: float | None = None
    last_estimate: list[int] | None = None
    error: str | None = None
    latency_ms: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("cls")
        return d


def _providers(device: str) -> list[str]:
    ort = require("onnxruntime", purpose="the edge runner")

    have = ort.get_available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in have:
            raise HdsimError(f"device: cuda requested but onnxruntime has no CUDA provider (has {have})")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Runner:
    """An export folder ready to classify images (see the module docstring).

    Args:
        folder: an ``hdsim export`` folder (``model.onnx``, ``manifest.json``, ``codebooks.npz``).
        config: :class:`RunnerConfig` (validated here).

    Raises:
        HdsimError: a missing folder or file, a manifest of another format, a model whose
            sha256 differs from the manifest's, unreadable codebooks — before any inference.

    Example:
        >>> runner = Runner("exports/bcf")                       # doctest: +SKIP
        >>> [p.label for p in runner.predict(["57.png"])]        # doctest: +SKIP
        ['57']
    """

    def __init__(self, folder: str | Path, config: RunnerConfig = RunnerConfig()) -> None:
        self.config = config.validate()
        self.folder = Path(folder)
        # format, fields, hashes, codebooks against the manifest: before anything runs
        self.export = ExportFolder(self.folder)
        ex = self.export
        self.manifest, self.preprocessing, self.head, self.classes = ex.manifest, ex.preprocessing, ex.head, ex.classes
        self.names, self.output = ex.names, ex.output_name
        self.codebooks = ex.codebooks
        self.providers = _providers(config.device)
        self.session = ort_session(ex.model_path, optimize=config.optimize, threads=config.threads,
                                    providers=self.providers)
        pp = self.preprocessing
        shape = list(self.session.get_inputs()[0].shape)[1:]  # [C, H, W]; the batch axis is symbolic
        if shape != [pp.channels, pp.height, pp.width]:
            raise HdsimError(f"{ex.where}: preprocessing {pp.channels}x{pp.height}x{pp.width} does not match the "
                             f"model's input {shape}")
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and ex.output_width is not None and width != ex.output_width:
            raise HdsimError(f"{ex.where}: the model's output has width {width}, the manifest says {ex.output_width}")
        if self.codebooks is not None and isinstance(width, int) and width != self.codebooks.D:
            raise HdsimError(f"codebooks {self.folder}: D={self.codebooks.D} differs from the model's output width "
                             f"{width}")
        if self.head == "fc" and isinstance(width, int) and width != self.classes.num_classes:
            raise HdsimError(f"{ex.where}: the model's output has width {width}, not one logit per class "
                             f"({self.classes.num_classes})")
        self.decoder = build_decoder(ex, config.decode, imc=config.imc, imc_t=config.imc_t, imc_tc=config.imc_tc,
                                     compiled=config.compiled)

    @property
    def decoder_name(self) -> str:
        """Which implementation decodes: ``CompiledFixedBCF``, ``FixedBCF``, ``FixedBCF+crossbar``, ``bcf_numpy``,
        ``SparseResonator``, ``bruteforce`` or ``argmax`` (FC head)."""
        return "argmax" if self.decoder is None else self.decoder.name

    def decode(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Factorizer-head queries ``(N, D)`` -> numpy ``indices (N, F)`` int64, ``iterations (N,)`` int64,
        ``converged (N,)`` bool, ``confidence (N,)`` (see :mod:`deploy.decoders`)."""
        if self.decoder is None:
            raise HdsimError("decode: an FC-head export has no factorizer to decode with (its logits are argmaxed)")
        return self.decoder.decode(np.asarray(queries))

    # ---- inference -----------------------------------------------------------------------------
    def cnn(self, x: np.ndarray) -> np.ndarray:
        """Network inputs ``(N, C, H, W)`` float32 -> the ONNX output (query or logits), in ``config.batch`` chunks."""
        b = self.config.batch
        xs = np.asarray(x, dtype=np.float32)
        return np.concatenate([self.session.run(None, {"image": xs[i:i + b]})[0] for i in range(0, xs.shape[0], b)])

    def _label(self, c: int) -> str:
        return self.export.label(c)

    def predict_batch(self, x: np.ndarray, names: Sequence[str] | None = None,
                      preprocess_s: Sequence[float] | None = None) -> list[Prediction]:
        """Classify network inputs ``(N, C, H, W)`` float32 (normalized per the manifest)."""
        n = int(x.shape[0])
        names = list(names) if names is not None else [f"[{i}]" for i in range(n)]
        pre = list(preprocess_s) if preprocess_s is not None else [0.0] * n
        t0 = time.perf_counter()
        out = self.cnn(x)
        t_cnn = (time.perf_counter() - t0) / max(n, 1)
        # a non-finite network output has no decision: that image is an error, the rest is decoded
        finite = np.isfinite(out).all(axis=1)
        rows = np.flatnonzero(finite)
        t1 = time.perf_counter()
        done = self._decide(out[rows]) if rows.size else []
        t_dec = (time.perf_counter() - t1) / max(rows.size, 1)
        decided = dict(zip(rows.tolist(), done))
        preds: list[Prediction] = []
        for i in range(n):
            if i not in decided:
                preds.append(Prediction(names[i], "error", error=f"{names[i]}: the network's output holds NaN or "
                                        "infinite values (no decision)"))
                continue
            p = decided[i]
            p.input, p.latency_ms = names[i], _latency(pre[i], t_cnn, t_dec)
            preds.append(p)
        return preds

    def _decide(self, out: np.ndarray) -> list[Prediction]:
        """Finite network outputs ``(n, D)`` -> predictions (names and latencies filled in by the caller)."""
        n = out.shape[0]
        if self.head == "fc":
            z = out.astype(np.float64)
            cls = z.argmax(axis=1)  # first maximum, as torch's
            # softmax probability of the winner: 1 / sum_j exp(z_j - z_max)
            conf = 1.0 / np.exp(z - z[np.arange(n), cls][:, None]).sum(axis=1)
            return [Prediction("", "ok", int(c), self._label(int(c)), None, None, None, float(p))
                    for c, p in zip(cls, conf)]
        idx, iters, conv, conf = self.decode(out)
        cls = self.classes.classes(idx)
        preds = []
        for i in range(n):
            c, f = int(cls[i]), [int(v) for v in idx[i]]
            common = dict(iterations=int(iters[i]), converged=bool(conv[i]), confidence=round(float(conf[i]), 6))
            if not bool(conv[i]):
                preds.append(Prediction("", "not-converged", last_estimate=f, **common))
            elif c < 0:
                preds.append(Prediction("", "null-product", last_estimate=f, **common))
            else:
                preds.append(Prediction("", "ok", c, self._label(c), f, **common))
        return preds

    def predict(self, images: Sequence) -> list[Prediction]:
        """Classify PIL images, pixel arrays (``.npy`` rules) or paths; one :class:`Prediction` each.

        A bad image gives an ``error`` prediction; the others are still classified.
        """
        Image = require("PIL.Image", "deploy", "reading images")

        loaded: list[Loaded] = []
        for i, im in enumerate(images):
            name = str(im) if isinstance(im, (str, Path)) else f"[{i}]"
            t0 = time.perf_counter()
            try:
                if isinstance(im, (str, Path)):
                    loaded.extend(load_inputs([str(im)], self.preprocessing))
                    continue
                if isinstance(im, Image.Image):
                    px = pixels_from_image(im, self.preprocessing, name)
                else:
                    px = pixels_from_array(np.asarray(im), self.preprocessing, name)
                loaded.append(Loaded(name, px, seconds=time.perf_counter() - t0))
            except HdsimError as e:
                loaded.append(Loaded(name, error=str(e)))
        return self._classify(loaded)

    def _classify(self, items: list[Loaded]) -> list[Prediction]:
        good = [it for it in items if it.error is None]
        done: dict[int, Prediction] = {}
        if good:
            x = self.preprocessing.normalize(np.stack([it.pixels for it in good]))
            for it, p in zip(good, self.predict_batch(x, [it.name for it in good], [it.seconds for it in good])):
                done[id(it)] = p
        return [done[id(it)] if it.error is None else Prediction(it.name, "error", error=it.error) for it in items]

    def run(self, specs: Sequence[str]) -> Iterator[Prediction]:
        """Files, folders, globs and ``.npy`` arrays -> predictions in input order, ``config.batch`` at a time."""
        window: list[Loaded] = []
        for item in load_inputs(list(specs), self.preprocessing):
            window.append(item)
            if sum(it.error is None for it in window) >= self.config.batch:
                yield from self._classify(window)
                window = []
        if window:
            yield from self._classify(window)


def _latency(pre_s: float, cnn_s: float, dec_s: float) -> dict:
    ms = {"preprocess": pre_s * 1e3, "cnn": cnn_s * 1e3, "decode": dec_s * 1e3}
    ms["total"] = sum(ms.values())
    return {k: round(v, 4) for k, v in ms.items()}


def summarize(preds: Sequence[Prediction], seconds: float) -> dict:
    """Counts per status, mean / p50 / p95 latency per stage (ms) and throughput of a run."""
    out: dict = {"inputs": len(preds)}
    for s in ("ok", "not-converged", "null-product", "error"):
        out[s.replace("-", "_")] = sum(p.status == s for p in preds)
    lat = [p.latency_ms for p in preds if p.latency_ms]
    for stage in ("preprocess", "cnn", "decode", "total"):
        v = np.array([d[stage] for d in lat]) if lat else np.zeros(0)
        out[f"{stage}_ms"] = ({"mean": round(float(v.mean()), 4), "p50": round(float(np.percentile(v, 50)), 4),
                               "p95": round(float(np.percentile(v, 95)), 4)} if v.size else None)
    out["seconds"] = round(seconds, 3)
    out["images_per_s"] = round(len(lat) / seconds, 2) if seconds > 0 else None
    return out
