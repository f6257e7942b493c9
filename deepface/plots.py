"""Training-curve plots, for the model directory (``training_curves.png``) and for HTML reports.

The figures are drawn with Matplotlib's object API on the Agg canvas (no pyplot global state, no
display needed), and saved without the Matplotlib version in the PNG metadata, so the same history
gives the same bytes.

Typical use:

```python
history = deepface.files.read_json("model/history.json")
html = f'<img src="data:image/png;base64,{training_curves_base64(history)}">'
```
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Panels drawn when the history holds them: (title, metric, log scale).
PANELS = (
    ("Loss", "loss", False),
    ("Accuracy", "accuracy", False),
    ("Learning rate", "learning_rate", True),
)


def history_metrics(history: Mapping) -> dict[str, list[float]]:
    """The per-epoch metric lists of a history.

    Args:
        history: either the content of ``history.json`` written by `deepface train` (its ``metrics``
            entry is used) or a Keras-style mapping ``{"loss": [...], "val_loss": [...], ...}``.

    Returns:
        ``{metric: [value per epoch]}`` with float values (None for missing values becomes NaN).
    """
    metrics = history.get("metrics", history)
    return {
        name: [math.nan if value is None else float(value) for value in values]
        for name, values in metrics.items()
        if isinstance(values, Sequence) and not isinstance(values, str)
    }


def plot_training_curves(history: Mapping, title: str | None = None) -> Figure:
    """One figure with a panel per quantity (loss, accuracy, learning rate) against the epoch.

    Training values are solid lines, validation values (``val_<metric>``) dashed. Panels whose metric is
    absent from the history are left out.

    Args:
        history: see `history_metrics`.
        title: optional figure title.

    Returns:
        A ``matplotlib.figure.Figure`` (attached to an Agg canvas).

    Raises:
        ValueError: if the history holds none of the plotted metrics.
    """
    metrics = history_metrics(history)
    panels = [panel for panel in PANELS if panel[1] in metrics or f"val_{panel[1]}" in metrics]
    if not panels:
        raise ValueError(f"history has none of the metrics {[name for _, name, _ in PANELS]}: got {sorted(metrics)}")
    figure = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, name, log_scale) in zip(axes, panels):
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            values = metrics.get(key)
            if values:
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if log_scale:
            ax.set_yscale("log")
        if name != "learning_rate":
            ax.legend()
    if title:
        figure.suptitle(title)
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure, without version metadata (same figure, same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def figure_base64(figure: Figure, dpi: int = 100) -> str:
    """A figure as a base64 PNG string, for ``<img src="data:image/png;base64,...">`` in HTML reports."""
    return base64.b64encode(figure_png(figure, dpi)).decode("ascii")


def training_curves_png(history: Mapping, title: str | None = None) -> bytes:
    """PNG bytes of `plot_training_curves`."""
    return figure_png(plot_training_curves(history, title))


def training_curves_base64(history: Mapping, title: str | None = None) -> str:
    """Base64 PNG of `plot_training_curves`, for self-contained HTML reports."""
    return figure_base64(plot_training_curves(history, title))
