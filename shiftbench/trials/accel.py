"""The fast path of the training loop: bf16 autocast, channels-last, ``torch.compile`` and,
on the CPU, flushing denormal floats to zero and keeping freed memory for reuse.

A study's ``accel:`` key sets it (``precision``, ``channels_last``, ``compile``,
``flush_denormal``, ``retain_memory``). These are run settings, like the device, not part of
a trial's identity: a trial keeps its id, and each ledger row records what it ran with
(``accel.precision``, ``accel.channels_last``, ``accel.compile``, ``accel.flush_denormal``,
``accel.retain_memory``).
``auto`` (the default) means bf16 and channels-last on a GPU that supports them and the
fp32 path on the CPU. On the CPU, ``auto`` also flushes denormals (``torch.set_flush_denormal``:
the FTZ and DAZ flags of x86 SSE3, the FZ flag of arm64), since their microcode path makes
some trials several times slower (an RMSProp trial with a tiny ``eps``: 31 s against 9 s);
the numbers then differ from ``benchopt run``'s plain loop only where a value fell below
``torch.finfo(torch.float32).tiny`` (see perf/README.md for how much). ``auto`` also keeps
the memory of freed tensors in a CPU worker instead of handing it back to the kernel after
each evaluation (``allocator``: no number changes; the quickstart CNN's checkpoints
evaluate several times faster). The loop itself has no host synchronisation between
checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from shiftbench.store import schema
from shiftbench.trials import allocator

if TYPE_CHECKING:  # torch is imported where it is used: validating a study needs no torch
    import torch
    from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")
ACCEL_KEYS = ("precision", "channels_last", "compile", "flush_denormal", "retain_memory")
# ``compile``: False, True (inductor) or the name of a torch.compile backend
COMPILE_DEFAULT_BACKEND = "inductor"


@dataclass(frozen=True)
class Accel:
    """How the training loop runs: ``precision`` (auto, fp32, bf16), ``channels_last``
    (auto, true, false), ``compile`` (false, true, or a ``torch.compile`` backend name) and
    ``flush_denormal`` (auto, true, false) and ``retain_memory`` (auto, true, false).
    ``resolve`` turns ``auto`` into what a device supports."""

    precision: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool | str = False
    flush_denormal: bool | str = "auto"
    retain_memory: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        for key in ("channels_last", "flush_denormal", "retain_memory"):
            if not (getattr(self, key) == "auto" or isinstance(getattr(self, key), bool)):
                raise ValueError(f"{key} must be auto, true or false")
        if not isinstance(self.compile, bool | str) or self.compile == "":
            raise ValueError("compile must be true, false or a torch.compile backend name")
        if isinstance(self.compile, str):
            import torch

            backends = torch.compiler.list_backends(exclude_tags=())
            if self.compile not in backends:
                known = ", ".join(backends)
                raise ValueError(f"unknown torch.compile backend {self.compile!r}; known: {known}")

    def resolve(self, device: torch.device) -> Accel:
        """Concrete settings for ``device``: ``auto`` is bf16 and channels-last on a GPU with
        bf16 support, fp32 and the default memory format elsewhere, and on a CPU flushing
        denormals and keeping freed memory where the CPU and C library can."""
        import torch

        cuda = device.type == "cuda"
        bf16 = cuda and torch.cuda.is_bf16_supported()
        precision = ("bf16" if bf16 else "fp32") if self.precision == "auto" else self.precision
        channels_last = cuda if self.channels_last == "auto" else self.channels_last
        flush = self.flush_denormal
        if flush == "auto":
            flush = device.type == "cpu" and can_flush_denormal()
        retain = self.retain_memory
        if retain == "auto":
            retain = device.type == "cpu" and allocator.can_retain()
        return Accel(precision, bool(channels_last), self.compile, flush, retain)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put ``model`` in channels-last memory (in place, when it has 2-d convolutions and
        the setting is on) and return the module to train with: compiled, or ``model``."""
        import torch

        if self.channels_last is True and has_conv2d(model):
            model.to(memory_format=torch.channels_last)
        if self.compile is False:
            return model
        backend = COMPILE_DEFAULT_BACKEND if self.compile is True else self.compile
        return torch.compile(model, backend=backend)

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """bf16 autocast on ``device`` when the precision is bf16, else nothing."""
        if self.precision != "bf16":
            return nullcontext()
        import torch

        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    @contextmanager
    def cpu_modes(self) -> Iterator[None]:
        """Run a trial inside: the process keeps freed memory as ``retain_memory`` says (the
        allocator is the process's, so this stays set after) and the calling thread flushes
        denormals as ``flush_denormal`` says (restored on the way out)."""
        allocator.retain(self.retain_memory is True)
        with self.denormals():
            yield

    @contextmanager
    def denormals(self) -> Iterator[None]:
        """Flush denormals (or not, as set) in the calling thread while inside; the thread's
        previous mode is restored on the way out. Torch sets the flags per thread, so a trial
        enters this in the thread that trains it."""
        import torch

        before = denormals_flushed()
        if not torch.set_flush_denormal(self.flush_denormal is True) and self.flush_denormal:
            raise RuntimeError("flush_denormal: this CPU cannot flush denormals")
        try:
            yield
        finally:
            torch.set_flush_denormal(before)

    def columns(self) -> dict[str, Any]:
        """The ledger columns recording these settings."""
        values = {**asdict(self), "compile": str(self.compile).lower()}
        return schema.prefixed(schema.ACCEL, values)


AUTO = Accel()
PLAIN = Accel("fp32", False, False, False, False)


def denormals_flushed() -> bool:
    """Whether the calling thread flushes denormals now: 2**-130 (a float32 denormal) reads
    back as zero."""
    import torch

    return bool(torch.tensor(2.0**-130, dtype=torch.float32).mul(1.0).item() == 0.0)


@cache
def can_flush_denormal() -> bool:
    """Whether this CPU can flush denormals (``torch.set_flush_denormal`` returns False where
    it cannot); asked by setting the current mode again, which changes nothing."""
    import torch

    return torch.set_flush_denormal(denormals_flushed())


def has_conv2d(model: nn.Module) -> bool:
    """Whether channels-last can matter: the model has a 2-d convolution."""
    from torch import nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())
