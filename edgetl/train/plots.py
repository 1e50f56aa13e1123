"""Figures a person would rather look at than read: learning curves and confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl import atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics: list[dict], path: Path, title: str) -> None:
    plt = _pyplot()
    epochs = [m["epoch"] for m in metrics]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    ax_loss.plot(epochs, [m["val_loss"] for m in metrics], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [m["train_accuracy"] for m in metrics], "o-", label="train")
    ax_acc.plot(epochs, [m["val_accuracy"] for m in metrics], "o-", label="val")
    best = max(metrics, key=lambda m: m["val_accuracy"])
    ax_acc.axvline(best["epoch"], color="grey", linestyle=":", label=f"best (epoch {best['epoch']})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros_like(confusion, dtype=float), where=totals > 0)
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 8 else 0)
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center",
                            color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
