"""Timing on a machine: where and how timings run (:class:`LatencyTarget`), calls timed in
turn on one clock, and two models timed against each other (:func:`compare_speed`).

MACs say how much arithmetic a layer does; latency says what it costs on the machine: a
rank of 19 may run no faster than 32, and every extra thin layer pays a fixed per-call
cost. Timings are medians of several rounds, each long enough for the clock; they are in
microseconds per batch of ``batch`` samples. The latency budget built on this lives in
:mod:`lowrank.resources.latency`.
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .util.fold import batchnorms, fold_batchnorm
from .util.inputs import map_inputs, model_device, take, to_device
from .util.modes import evaluating
from .util.runtimes import check_runtime, runner


MEMORY_FORMATS = ("channels_last", "contiguous")


@dataclass(frozen=True)
class LatencyTarget:
    """Where and how latency is measured.

    ``device``: ``"cpu"``, ``"cuda"`` (or ``"cuda:1"``), or None for the device the model is
    on. ``threads``: CPU threads while timing (``torch.set_num_threads``). ``batch``: samples
    per call (the example input's first sample, repeated). ``dtype``: the layers' dtype while
    timing. ``repeats``: timed rounds, the median is kept; each round lasts ``min_seconds``.
    ``cache_dir``: where a latency budget keeps its layer timings, keyed by the layer's
    geometry, the target and the library versions (None: ``$LOWRANK_LATENCY_CACHE`` or
    ``~/.cache/lowrank/latency``; ``""``: no disk cache; see lowrank.resources.latency).
    ``fold_batchnorm``: time models with each BatchNorm folded into the layer before it, as
    deployed models run (lowrank.util.fold; on by default). Layers are timed as they run
    folded, with a bias, so the latency model predicts folded models as well as unfolded
    ones (resnet20-fmnist: predicted 0.87 and 0.77 of the original, measured 0.88 and 0.80;
    reports/speed/fold_prediction.md). ``runtime``: ``"eager"`` PyTorch
    (default) or ``"onnxruntime"`` (CPU, float32; each timed module exported to ONNX first; see
    lowrank.util.runtimes); layer timings are cached per runtime. ``memory_format``: how eager
    PyTorch lays out 4-d tensors, ``"channels_last"`` (default: PyTorch's advice for CNN
    inference on the CPU, and the layout in which thin factorised convs pay off: vgg-fmnist at
    30% of the MACs ran 1.37x contiguous, 1.90x channels-last, each against the original in
    the same layout; reports/speed/memory_format.md) or ``"contiguous"``. Both models, every timed
    layer and its inputs are put in that layout; ONNX Runtime chooses its own.
    """

    device: str | None = None
    threads: int = 1
    batch: int = 64
    dtype: str = "float32"
    repeats: int = 7
    min_seconds: float = 0.004
    fold_batchnorm: bool = True
    runtime: str = "eager"
    memory_format: str = "channels_last"
    cache_dir: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.threads < 1 or self.batch < 1 or self.repeats < 1:
            raise ValueError(f"LatencyTarget: threads, batch and repeats must be >= 1, got {self}")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"LatencyTarget: unknown dtype {self.dtype!r} (e.g. 'float32', 'float16', 'bfloat16')")
        check_runtime(self.runtime)
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"LatencyTarget: unknown memory_format {self.memory_format!r}; choose {' or '.join(MEMORY_FORMATS)}")
        if self.runtime == "onnxruntime" and (self.dtype != "float32" or (self.device or "cpu").startswith("cuda")):
            raise ValueError("LatencyTarget: runtime 'onnxruntime' times float32 models on the CPU here")

    def __str__(self) -> str:
        return (f"{'ONNX Runtime' if self.runtime == 'onnxruntime' else 'eager PyTorch'}, {self.device or 'model device'}, "
                f"{self.threads} thread(s), batch {self.batch}, {self.dtype}, "
                f"BatchNorm {'folded' if self.fold_batchnorm else 'not folded'}"
                + (f", {self.memory_format.replace('_', '-')}" if self.runtime == "eager" else ""))

    @property
    def channels_last(self) -> bool:
        """Whether 4-d tensors are timed channels-last (eager PyTorch only: ONNX Runtime lays
        out its own)."""
        return self.memory_format == "channels_last" and self.runtime == "eager"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def resolve(self, module: nn.Module) -> torch.device:
        """The device timings run on: the target's, or the module's own."""
        return torch.device(self.device) if self.device is not None else model_device(module)

    def key(self, device: torch.device) -> dict:
        """What a timing depends on besides the layer: for the disk cache."""
        machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
        return {**{k: v for k, v in asdict(self).items() if k != "cache_dir"}, "device": str(device), "machine": machine,
                "torch": torch.__version__, "cpus": os.cpu_count()}


@contextmanager
def timing(target: LatencyTarget, device: torch.device):
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(target.threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(threads)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _calls_per_round(fn: Callable[[], Any], device: torch.device, target: LatencyTarget) -> int:
    """Warm ``fn`` up, then find how many calls make a round of at least ``min_seconds``."""
    for _ in range(2):
        fn()
    _sync(device)
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        dt = time.perf_counter() - t0
        if dt >= target.min_seconds or n >= 1 << 16:
            return n
        n = max(n * 2, int(n * target.min_seconds / max(dt, 1e-9)) + 1)


def interleaved_times(fns: list[Callable[[], Any]], device: torch.device, target: LatencyTarget,
                      rounds: int) -> list[list[float]]:
    """Seconds per call of each of ``fns`` in each of ``rounds`` rounds, taking turns within
    every round (call it inside :func:`timing`). A shared machine's speed drifts by a third within
    seconds; timed in turn, all of them see the same drift, so their ratios and differences
    hold where separate timings would not."""
    counts = [_calls_per_round(fn, device, target) for fn in fns]
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, n, times in zip(fns, counts, out):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            times.append((time.perf_counter() - t0) / n)
    return out


def time_in_turn(fns: list[Callable[[], Any]], device: torch.device, target: LatencyTarget) -> list[float]:
    """Microseconds per call of each of ``fns``, timed in turn within each of ``target.repeats``
    rounds (medians): one clock for all of them."""
    with timing(target, device):
        return [1e6 * statistics.median(t) for t in interleaved_times(fns, device, target, target.repeats)]


def time_call(fn: Callable[[], Any], device: torch.device, target: LatencyTarget) -> float:
    """Microseconds per call of ``fn``: the median of ``target.repeats`` rounds."""
    return time_in_turn([fn], device, target)[0]


def batch_of(example: Any, target: LatencyTarget, device: torch.device) -> Any:
    """The example input's first sample repeated ``target.batch`` times, on ``device``."""
    x = to_device(take(example, [0] * target.batch), device)
    return laid_out(_cast(x, target.torch_dtype), target)


def laid_out(x: Any, target: LatencyTarget) -> Any:
    """Inputs in the target's memory format: its 4-d tensors channels-last where it says so."""
    if not target.channels_last:
        return x
    return map_inputs(lambda t: t.contiguous(memory_format=torch.channels_last)
                      if isinstance(t, torch.Tensor) and t.dim() == 4 else t, x)


def _cast(x: Any, dtype: torch.dtype) -> Any:
    return map_inputs(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, x)


def model_latency(model: nn.Module, example: Any, target: LatencyTarget | None = None) -> float:
    """Microseconds per batch of the whole model (not cached: models change, layers repeat)."""
    target = target or LatencyTarget()
    device = target.resolve(model)
    timed = prepared(model, device, target)
    x = batch_of(example, target, device)
    with evaluating(timed):
        return time_call(runner(timed, [x], target.runtime, target.threads), device, target)


def prepared(module: nn.Module, device: torch.device, target: LatencyTarget) -> nn.Module:
    """The module on the target's device and dtype, its 4-d weights in the target's memory
    format: itself when it is so already, else a copy (the caller's model is never changed)."""
    params = list(module.parameters())
    moved = any(p.device != device or p.dtype != target.torch_dtype for p in params)
    relaid = target.channels_last and any(p.dim() == 4 and not _strided_channels_last(p) for p in params)
    if moved or relaid:
        module = copy.deepcopy(module).to(device, target.torch_dtype)
        if relaid:
            module = module.to(memory_format=torch.channels_last)
    return module


def _strided_channels_last(w: torch.Tensor) -> bool:
    """Whether a 4-d weight has channels-last strides. One of a single channel counts as
    contiguous in both layouts, but ``Module.to(memory_format=torch.channels_last)`` restrides
    it all the same (a channel stride of 1), and a factorised conv reads its layout from there."""
    return w.is_contiguous(memory_format=torch.channels_last) and (w.stride(1) == 1 or w.shape[-2] * w.shape[-1] == 1)


def deployed(model: nn.Module, device: torch.device, target: LatencyTarget) -> nn.Module:
    """The model as the target runs it: BatchNorm folded (a copy) where the target says so,
    on the target's device and dtype."""
    return prepared(fold_batchnorm(model) if target.fold_batchnorm and batchnorms(model) else model, device, target)


# --- the speed check of a rebuilt model ---------------------------------------------------------
@dataclass
class SpeedCheck:
    """Original and rebuilt model timed alternately in one process (microseconds per batch)."""

    original_us: float
    rebuilt_us: float
    noise_us: float  # robust SD of the rebuilt model's per-round times
    rounds: int
    target: LatencyTarget

    @property
    def speedup(self) -> float:
        return self.original_us / self.rebuilt_us

    def __str__(self) -> str:
        return (f"measured ({self.target}, {self.rounds} alternating rounds): original {self.original_us:,.0f} us, "
                f"rebuilt {self.rebuilt_us:,.0f} us +- {self.noise_us:,.0f} us, speedup {self.speedup:.2f}x")


def compare_speed(original: nn.Module, rebuilt: nn.Module, example: Any, target: LatencyTarget | None = None,
                  rounds: int = 11) -> SpeedCheck:
    """Time both models alternately, round by round, so drifts in the machine hit both alike."""
    target = target or LatencyTarget()
    ta, tb = alternating_rounds(original, rebuilt, example, target, rounds)
    return SpeedCheck(*paired_estimate(ta, tb), rounds, target)


def alternating_rounds(original: nn.Module, rebuilt: nn.Module, example: Any, target: LatencyTarget,
                       rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per batch of each model in each round, the two timed in turn (eval mode, on the
    target's device and dtype; the callers' models are left as they were)."""
    device = target.resolve(original)
    a, b = deployed(original, device, target), deployed(rebuilt, device, target)
    x = batch_of(example, target, device)
    with timing(target, device), evaluating(a), evaluating(b):
        fns = [runner(m, [x], target.runtime, target.threads) for m in (a, b)]
        ta, tb = interleaved_times(fns, device, target, rounds)
    return ta, tb


def paired_estimate(original: list[float], rebuilt: list[float]) -> tuple[float, float, float]:
    """(original, rebuilt, noise) in microseconds from per-round seconds timed in turn. The
    rebuilt time is the original's median times the median per-round ratio: a shared machine
    switches between fast and slow phases (vgg-fmnist: 62-93 ms), and a round's two timings
    share a phase where the two medians need not (reports/speed/paired_speed.md: eight checks of one
    pair read 1.62-1.74x unpaired, 1.69-1.76x paired). The noise is the robust SD of the
    ratios, in the same units."""
    base = statistics.median(original)
    ratios = [b / a for a, b in zip(original, rebuilt)]
    ratio = statistics.median(ratios)
    mad = statistics.median(abs(r - ratio) for r in ratios)
    return 1e6 * base, 1e6 * base * ratio, 1e6 * base * 1.4826 * mad


__all__ = ["LatencyTarget", "SpeedCheck", "alternating_rounds", "batch_of", "compare_speed", "interleaved_times", "laid_out", "model_latency",
           "paired_estimate", "prepared", "time_call", "time_in_turn", "timing"]
