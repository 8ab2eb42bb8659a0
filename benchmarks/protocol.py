"""The timing protocol of every benchmark whose numbers the README prints.

    from protocol import Protocol, machine_state, matmul_peak, pin_to_one_core, run_rounds, summary

1. **One thread on one core.** :func:`pin_to_one_core` sets ``torch.set_num_threads(1)`` and binds
   the process to one CPU with ``os.sched_setaffinity`` where the OS allows it (Linux); whether
   pinning worked, and why not, goes into the JSON.
2. **Warm-up**, then **rounds**: every variant runs once per round (``Protocol.rounds`` >= 7), in an
   order drawn per round from a seeded generator (``order="shuffled"``) or alternately forward and
   backward (``order="abba"``: A B C, C B A, ...), so no variant always follows the same one and a
   load that drifts hits all of them alike. Every sample is kept.
3. **Median and interquartile range** per variant (:func:`summary`); a ratio of two variants is
   the median [IQR] of the per-round ratios (:func:`paired_ratio`: both ran in the same round).
4. **Roofline**: :func:`matmul_peak` times a float32 GEMM on the same pinned thread; a variant's
   rate is its matmul FLOPs (``flops.FlopRecorder``) per median second, and its fraction of that
   measured peak.
5. **The machine**: :func:`machine_state` records the date, CPU model, core count, load average
   (before and after the run, and after every round), torch version and thread count.

On a shared machine no number means much: the load averages in the JSON say how busy it was.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import torch

ORDERS = ("shuffled", "abba")


@dataclass(frozen=True)
class Protocol:
    """How the variants are timed (see the module docstring)."""

    rounds: int = 7  # timed rounds; every variant runs once per round
    warmup: int = 1  # untimed runs of every variant before the first round
    order: str = "shuffled"  # "shuffled": a seeded random order per round; "abba": forward, backward, ...
    seed: int = 0  # the order generator's seed
    pin: bool = True  # one torch thread, bound to one core

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.rounds < 1 or self.warmup < 0:
            raise ValueError(f"rounds must be >= 1 and warmup >= 0, got {self.rounds} and {self.warmup}")

    def to_dict(self) -> dict:
        return asdict(self)


def add_protocol_arguments(parser: argparse.ArgumentParser, rounds: int = 7, warmup: int = 1) -> None:
    """``--rounds``, ``--warmup``, ``--order``, ``--seed``, ``--no-pin``."""
    group = parser.add_argument_group("timing protocol (benchmarks/protocol.py)")
    group.add_argument("--rounds", type=int, default=rounds, help="timed rounds, every variant once per round "
                       "(>= 7 for a number the README prints; default %(default)s)")
    group.add_argument("--warmup", type=int, default=warmup, help="untimed runs of each variant first "
                       "(default %(default)s)")
    group.add_argument("--order", choices=ORDERS, default="shuffled", help="order within a round (default "
                       "%(default)s)")
    group.add_argument("--seed", type=int, default=0, help="seed of the shuffled orders (default %(default)s)")
    group.add_argument("--no-pin", dest="pin", action="store_false",
                       help="use torch's thread count and no core binding (not for README numbers)")


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    return Protocol(rounds=args.rounds, warmup=args.warmup, order=args.order, seed=args.seed, pin=args.pin)


# ---- the machine ----------------------------------------------------------------------------------
def pin_to_one_core(core: int | None = None) -> dict:
    """One torch thread, and this process bound to one CPU (default: the last one it may use).

    Returns what happened: ``{"pinned", "core", "allowed_cores", "torch_threads", "error"}``.
    """
    torch.set_num_threads(1)
    state = {"pinned": False, "core": None, "allowed_cores": None, "torch_threads": 1, "error": None}
    if not hasattr(os, "sched_setaffinity"):
        state["error"] = f"os.sched_setaffinity is not available on {platform.system()}"
        return state
    try:
        allowed = sorted(os.sched_getaffinity(0))
        state["allowed_cores"] = allowed
        chosen = allowed[-1] if core is None else core
        os.sched_setaffinity(0, {chosen})
        state.update(pinned=sorted(os.sched_getaffinity(0)) == [chosen], core=chosen)
    except OSError as error:  # containers may forbid it
        state["error"] = f"{type(error).__name__}: {error}"
    return state


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_state() -> dict:
    """Date, CPU model, cores, load, torch version and threads, GPU if any: goes into every JSON."""
    state = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "load_average": load_average(),
             "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
             "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version()}
    if torch.cuda.is_available():
        state["gpu"] = torch.cuda.get_device_name()
    return state


def matmul_peak(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32,
                device: str = "cpu") -> dict:
    """The measured matmul rate: ``repeats`` timed (size x size) @ (size x size) products after one untimed.

    Run after :func:`pin_to_one_core` it is the peak of the thread the benchmark uses. Returns the
    GFLOP/s of every repeat, their best ("peak") and median.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        sync()
        began = time.perf_counter()
        torch.mm(a, b)
        sync()
        rates.append(2 * size ** 3 / (time.perf_counter() - began) / 1e9)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "device": device,
            "gflops_samples": [round(rate, 2) for rate in rates], "peak_gflops": round(max(rates), 2),
            "median_gflops": round(statistics.median(rates), 2)}


# ---- rounds ---------------------------------------------------------------------------------------
def round_orders(names: list[str], rounds: int, order: str = "shuffled", seed: int = 0) -> list[list[str]]:
    """The order of the variants in each round: seeded shuffles, or forward / backward alternately (ABBA)."""
    if order == "abba":
        return [list(names) if index % 2 == 0 else list(reversed(names)) for index in range(rounds)]
    if order != "shuffled":
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    generator = random.Random(seed)
    return [generator.sample(list(names), len(names)) for _ in range(rounds)]


def run_rounds(steps: Mapping[str, Callable[[], None]], protocol: Protocol, sync: Callable[[], None] | None = None,
               report: Callable[[int, dict], None] | None = None) -> dict:
    """Warm-up, then ``protocol.rounds`` timed rounds of every step in the protocol's orders.

    Args:
        steps: variant name -> a callable running one step.
        sync: called before and after each timed step (``torch.cuda.synchronize`` on a GPU).
        report: called after each round with (round index, {name: seconds of this round}).

    Returns:
        {"samples_s": {name: [seconds per round]}, "orders": [[names] per round], "load_after_round": [...]}
    """
    names = list(steps)
    sync = sync or (lambda: None)
    for _ in range(protocol.warmup):
        for name in names:
            steps[name]()
    sync()
    orders = round_orders(names, protocol.rounds, protocol.order, protocol.seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    loads = []
    for index, order in enumerate(orders):
        for name in order:
            sync()
            began = time.perf_counter()
            steps[name]()
            sync()
            samples[name].append(time.perf_counter() - began)
        loads.append(load_average())
        if report is not None:
            report(index, {name: samples[name][-1] for name in names})
    return {"samples_s": samples, "orders": orders, "load_after_round": loads}


def summary(samples: list[float]) -> dict:
    """Median, quartiles (inclusive method) and interquartile range of some samples, and the samples."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        q1 = median = q3 = samples[0]
    else:
        q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "iqr": q3 - q1, "min": min(samples), "max": max(samples),
            "n": len(samples), "samples": list(samples)}


def paired_ratio(top: list[float], bottom: list[float]) -> dict:
    """Median [IQR] of the per-round ratios top / bottom (both measured in the same rounds)."""
    if len(top) != len(bottom):
        raise ValueError(f"{len(top)} and {len(bottom)} samples: not the same rounds")
    stats = summary([a / b for a, b in zip(top, bottom)])
    stats["ratio_of_medians"] = statistics.median(top) / statistics.median(bottom)
    return stats
