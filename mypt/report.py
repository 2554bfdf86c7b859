"""The loss curves of a training run as a PNG: DVC's HTML plots need a CDN, a PNG opens
anywhere (mypt.tracking writes it next to the run's dvclive metrics)."""

from __future__ import annotations

import io
from pathlib import Path

from mypt.io import atomic_write_bytes


def write_loss_png(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    """`curves`: name -> (step, loss) points; train_loss is drawn as a thin line, the
    evaluations (val, eval_general) with markers."""
    atomic_write_bytes(path, _png(curves, title))


def _png(curves: dict[str, list[tuple[int, float]]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, pts in curves.items():
        style = {"lw": 0.8, "alpha": 0.6} if name == "train_loss" else {"marker": "o"}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name.removesuffix("_loss"), **style)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
