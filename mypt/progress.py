"""A progress bar on stderr: a leaf (tqdm only), so a module that shows one, verify's check among
them, pulls in no worker machinery (mypt.parallel, Ray) with it."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int | None, desc: str, unit: str = "block") -> tqdm:
    """A bar of `total` `unit`s: shown on a terminal, silent in logs and tests (tqdm's disable=None)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, leave=False)
