"""The evaluation's HTML report: one self-contained page (figures inlined as base64 PNG) that the Vertex AI
console shows as an HTML artifact.

It holds the metrics table of every score for the trained model and its untrained baseline, ROC curves
(linear and logarithmic FAR), histograms of matched against mismatched scores, the training curves when
the model directory has ``history.json``, and what was evaluated: model, images, pairs, parameters and
counts. The same inputs give the same bytes (no dates; PNGs without version metadata).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepface.plots import figure_base64, training_curves_base64

VARIANT_STYLE = {"trained": "-", "baseline": "--"}
VARIANT_LABEL = {"trained": "trained", "baseline": "untrained baseline"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; } code { background: #f3f3f3; padding: 0 0.2em; }
.note { color: #555; }
"""


def _new_figure(columns: int, rows: int = 1, width: float = 4.6, height: float = 3.6) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False)


def roc_figure(roc: Mapping[str, Mapping[str, Mapping[str, list]]]) -> Figure:
    """ROC curves of every score and variant: TAR against FAR, linear and logarithmic FAR.

    Args:
        roc: ``{variant: {score: {"far": [...], "tar": [...]}}}`` (the content of roc.json).
    """
    figure, axes = _new_figure(2)
    for ax, log_far in zip(axes[0], (False, True)):
        for variant, curves in roc.items():
            for colour, (score, curve) in enumerate(curves.items()):
                far, tar = np.asarray(curve["far"]), np.asarray(curve["tar"])
                if log_far:  # the first point has FAR 0, off a log axis
                    far, tar = far[far > 0], tar[far > 0]
                ax.plot(far, tar, VARIANT_STYLE[variant], color=f"C{colour}",
                        label=f"{score} ({VARIANT_LABEL[variant]})")
        ax.set_xlabel("false accept rate (FAR)")
        ax.set_ylabel("true accept rate (TAR)")
        ax.grid(True, alpha=0.3)
        if log_far:
            ax.set_xscale("log")
            ax.set_title("ROC, logarithmic FAR")
        else:
            ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
            ax.set_title("ROC")
            ax.legend(fontsize="small", loc="lower right")
    return figure


def histogram_figure(scores: Mapping[str, Mapping[str, np.ndarray]], same: np.ndarray) -> Figure:
    """Histograms of matched against mismatched pair scores: a row per variant, a column per score.

    Args:
        scores: ``{variant: {score: [N] values}}``.
        same: [N] bool, True for matched pairs.
    """
    names = list(next(iter(scores.values())))
    figure, axes = _new_figure(len(names), len(scores), width=3.8, height=2.8)
    for row, (variant, variant_scores) in enumerate(scores.items()):
        for ax, name in zip(axes[row], names):
            values = np.asarray(variant_scores[name])
            bins = np.histogram_bin_edges(values, bins=40)
            ax.hist(values[same], bins=bins, alpha=0.6, label="matched", color="C2")
            ax.hist(values[~same], bins=bins, alpha=0.6, label="mismatched", color="C3")
            ax.set_title(f"{name}, {VARIANT_LABEL[variant]}", fontsize="medium")
            ax.set_xlabel("score")
        axes[row][0].legend(fontsize="small")
    return figure


def _number(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def metrics_table(metrics: Mapping[str, Mapping[str, Mapping]]) -> str:
    """An HTML table with a row per (variant, score)."""
    fars = list(next(iter(next(iter(metrics.values())).values()))["tar_at_far"])
    head = ["model", "score", "accuracy (10-fold)", "AUC", "EER", *[f"TAR @ FAR {far}" for far in fars],
            "best threshold", "same if"]
    rows = []
    for variant, by_score in metrics.items():
        for name, values in by_score.items():
            accuracy = f"{_number(values['accuracy'])} &plusmn; {_number(values['accuracy_sem'])}"
            cells = [accuracy, _number(values["auc"]), _number(values["eer"]),
                     *[_number(values["tar_at_far"][far]["tar"]) for far in fars],
                     _number(values["best_threshold"], 6), "&ge;" if values["higher_is_same"] else "&le;"]
            rows.append(f'<tr><td class="text">{VARIANT_LABEL[variant]}</td><td class="text">{name}</td>'
                        + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    header = "".join(f'<th class="text">{html.escape(h)}</th>' if i < 2 else f"<th>{html.escape(h)}</th>"
                     for i, h in enumerate(head))
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _key_values(items: Mapping) -> str:
    """A two-column HTML table of a mapping (values as compact JSON)."""
    rows = "".join(
        f'<tr><td class="text">{html.escape(str(key))}</td><td class="text"><code>'
        f"{html.escape(value if isinstance(value, str) else json.dumps(value, sort_keys=True))}</code></td></tr>"
        for key, value in items.items()
    )
    return f"<table>{rows}</table>"


def _image(figure: Figure | None = None, encoded: str | None = None, alt: str = "") -> str:
    encoded = encoded if encoded is not None else figure_base64(figure)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def render_report(
    result: Mapping,
    context: Mapping,
    scores: Mapping[str, Mapping[str, np.ndarray]],
    same: np.ndarray,
    roc: Mapping,
    history: Mapping | None = None,
) -> str:
    """The HTML page of an evaluation.

    Args:
        result: the content of metrics.json.
        context: what was evaluated: ``model_dir``, ``model_sha256``, ``metadata``, ``images``, ``pairs``,
            ``parameters``.
        scores: ``{variant: {score: [N] values}}`` of the scored pairs.
        same: [N] bool labels of the scored pairs.
        roc: the content of roc.json.
        history: the model directory's history.json, if any.
    """
    summary = result["summary"]
    primary = result["primary_score"]
    headline = (f"{primary} accuracy <b>{_number(summary['accuracy'])} &plusmn; "
                f"{_number(summary['accuracy_sem'])}</b> (LFW protocol, {result['counts']['folds']} folds, "
                f"{result['counts']['pairs_scored']} pairs)")
    if "baseline_accuracy" in summary:
        headline += f"; the untrained baseline reaches {_number(summary['baseline_accuracy'])}"
    sections = [
        f"<h1>Face verification report</h1><p>{headline}.</p>",
        "<h2>Metrics</h2>", metrics_table(result["metrics"]),
        '<p class="note">Accuracy: mean and standard error over folds, each fold\'s threshold chosen on the '
        "other folds. TAR @ FAR: the threshold for the FAR chosen on the other folds. AUC and EER: over all "
        "pairs. Best threshold: highest accuracy on all pairs (used by <code>deepface verify</code>).</p>",
        "<h2>ROC curves</h2>", _image(roc_figure(roc), alt="ROC curves"),
        "<h2>Score distributions</h2>", _image(histogram_figure(scores, same), alt="score histograms"),
    ]
    if history:
        try:
            curves = training_curves_base64(history)
        except ValueError:  # a history without loss/accuracy/learning rate
            curves = None
        if curves:
            sections += ["<h2>Training</h2>", _image(encoded=curves, alt="training curves")]
    problems = result.get("problems") or []
    sections += [
        "<h2>Data</h2>",
        _key_values({"image source": context["images"], "pairs file": context["pairs"],
                     "folds from": result["folds_from"],
                     **result["counts"], "flip test-time augmentation": result["flip"]}),
    ]
    if problems:
        sections.append("<p>Skipped pairs (first ones; all are in scores.csv):</p><ul>"
                        + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    sections += [
        "<h2>Model</h2>",
        _key_values({"model directory": context["model_dir"], "embedding.keras sha256": context["model_sha256"],
                     "image size": result["image_size"], **context["metadata"]}),
        "<h2>Parameters</h2>", _key_values(context["parameters"]),
    ]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>DeepFace verification report</title><style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
