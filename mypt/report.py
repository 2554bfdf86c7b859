"""What a training run leaves for people and for DVC: a metrics JSON, the loss history as
CSV plots (`dvc plots show`), and a PNG of the curves (DVC's HTML plots need a CDN)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mypt.io import atomic_write_bytes, atomic_write_text, write_json


def training_metrics(history: list[dict]) -> dict:
    """Final and best losses of a fit history."""
    train = [h["train_loss"] for h in history if "train_loss" in h]
    evals = [h for h in history if "train_loss" not in h]
    out = {"steps": max((h["step"] for h in history), default=0)}
    if train:
        tail = train[-10:]  # one step is noisy: the mean of the last ten
        out["train_loss"] = sum(tail) / len(tail)
    if evals:
        out.update({k: v for k, v in evals[-1].items() if k != "step"})
        vals = [h["val"] for h in evals if "val" in h]
        if vals:
            out["best_val"] = min(vals)
    return out


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


def write_training_report(history: list[dict], metrics_path: Path, plots_dir: Path, title: str) -> None:
    write_json(metrics_path, training_metrics(history))
    train = [h for h in history if "train_loss" in h]
    evals = [h for h in history if "train_loss" not in h]
    eval_cols = ["step"] + sorted({k for h in evals for k in h if k != "step"}, key=lambda k: (k != "val", k))
    atomic_write_text(plots_dir / "train_loss.csv", _csv(train, ["step", "train_loss"]))
    atomic_write_text(plots_dir / "eval_loss.csv", _csv(evals, eval_cols))
    atomic_write_bytes(plots_dir / "loss.png", _png(train, evals, eval_cols[1:], title))


def _png(train: list[dict], evals: list[dict], eval_keys: list[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot([h["step"] for h in train], [h["train_loss"] for h in train], lw=0.8, alpha=0.6, label="train")
    for key in eval_keys:
        pts = [(h["step"], h[key]) for h in evals if key in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
