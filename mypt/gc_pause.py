"""Start-up of a training run: the cyclic garbage collector waits until the run is built.

Importing torch, and torch._dynamo (which torch's optimizers import when they are built),
creates a few million objects that live as long as the process. While they are created,
each full collection walks all of them: on 2 cores, about 0.15 s of `import torch` and
about 0.5 s of building the first AdamW (bench/startup.py), to find a few hundred objects
of garbage. The training commands run their start-up inside `gc_paused()`; `resume_gc()`,
called once the run is built (before the first step), moves everything built so far into
the permanent generation (`gc.freeze`: it lives as long as the process anyway) and turns the
collector back on, so that the training loop's collections walk only what the loop
allocates. Reference counting frees memory as usual throughout: only cyclic garbage waits.
This is the pattern of the gc module's documentation (disable early, freeze, enable).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

_paused = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Stop the cyclic garbage collector for the block, or until `resume_gc()` inside it. A
    block left early (an error before training starts) turns it back on, without freezing.
    Where the collector is off already, the program manages it: nothing changes."""
    global _paused
    if not gc.isenabled():
        yield
        return
    gc.disable()
    _paused = True
    try:
        yield
    finally:
        if _paused:
            _paused = False
            gc.enable()


def resume_gc() -> None:
    """Inside `gc_paused()`: freeze what start-up built and turn the collector back on.
    Elsewhere: nothing (a library caller keeps its own collector settings)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
