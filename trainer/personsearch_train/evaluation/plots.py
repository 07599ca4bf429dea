"""Plots of search results (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen before pyplot loads
import numpy as np  # noqa: E402

from personsearch_train.atomic_files import atomic_replace  # noqa: E402

__all__ = ["plot_cmc", "plot_gallery_size_curve"]


def _save_atomically(figure: plt.Figure, path: Path) -> Path:
    try:
        with atomic_replace(path) as tmp, open(tmp, "wb") as handle:
            figure.savefig(handle, format=(path.suffix.lstrip(".") or "png"), dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def plot_cmc(curves: Mapping[str, np.ndarray], path: str | os.PathLike[str], *, title: str = "CMC") -> Path:
    """Plot one or more CMC curves (top-k accuracy against k).

    Args:
        curves: Label -> ``[K]`` float top-k accuracies in [0, 1] (``curve[k-1]`` = top-k).
        path: Output image path (``.png``, ``.pdf`` or ``.svg``).
        title: Figure title.

    Returns:
        The path written.
    """
    figure, axes = plt.subplots(figsize=(5, 4))
    for label, curve in curves.items():
        curve = np.asarray(curve, dtype=np.float64)
        axes.plot(np.arange(1, len(curve) + 1), 100 * curve, marker=".", label=label)
    axes.set_xlabel("rank k")
    axes.set_ylabel("top-k accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="lower right")
    return _save_atomically(figure, Path(path))


def plot_gallery_size_curve(
    sizes: list[int],
    mean_aps: list[float],
    top1s: list[float],
    path: str | os.PathLike[str],
    *,
    title: str = "CUHK-SYSU: accuracy against gallery size",
) -> Path:
    """Plot mAP and top-1 against the CUHK-SYSU gallery size (log x axis).

    Args:
        sizes: Gallery sizes (e.g. 50, 100, ..., 4000).
        mean_aps: mAP per size, fractions in [0, 1].
        top1s: Top-1 per size, fractions in [0, 1].
        path: Output image path.
        title: Figure title.

    Returns:
        The path written.
    """
    if not (len(sizes) == len(mean_aps) == len(top1s)) or not sizes:
        raise ValueError("sizes, mean_aps and top1s must be non-empty and of equal length")
    figure, axes = plt.subplots(figsize=(5, 4))
    axes.plot(sizes, 100 * np.asarray(mean_aps), marker="o", label="mAP")
    axes.plot(sizes, 100 * np.asarray(top1s), marker="s", label="top-1")
    axes.set_xscale("log")
    axes.set_xticks(sizes)
    axes.set_xticklabels([str(s) for s in sizes])
    axes.set_xlabel("gallery size")
    axes.set_ylabel("%")
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="lower left")
    return _save_atomically(figure, Path(path))
