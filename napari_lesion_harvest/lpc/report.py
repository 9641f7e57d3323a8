"""The LPC comparison plot: precision-recall of s_g, s_c and s_gc per variant (paper Fig. 5b)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from napari_lesion_harvest.lpc.metrics import precision_recall, roc_auc


def plot_score_pr(
    scores: Mapping[str, np.ndarray], labels, path, *, title: str = "LPC variants"
) -> Path:
    """Save precision-recall curves of several proposal scores to an image.

    Parameters
    ----------
    scores : mapping label -> ndarray, shape (N,)
        E.g. ``{"s_g": ..., "s_c,multiview": ..., "s_gc,multiview": ...}``. Names
        ``score,variant`` share a colour per variant; ``s_gc`` is drawn solid,
        ``s_c`` dashed, others (``s_g``) dotted black.
    labels : array_like of {0, 1}, shape (N,)
        1 for a true lesion.
    path : str or Path
        Output image (format from the suffix).

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    variants = list(dict.fromkeys(name.partition(",")[2] for name in scores if "," in name))
    for name, values in scores.items():
        precision, recall, _ = precision_recall(values, labels)
        kind, _, variant = name.partition(",")
        style = {"s_gc": "-", "s_c": "--"}.get(kind, ":")
        colour = f"C{variants.index(variant)}" if variant else "black"
        auc = roc_auc(values, labels)
        ax.plot(
            recall,
            precision,
            style,
            color=colour,
            drawstyle="steps-post",
            label=f"{name} (AUC {auc:.2f})",
        )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
