"""Per-class AP tables and precision-recall curves from accumulated ``COCOeval`` objects.

Written after ``test`` evaluation into the run's log folder:

- ``per_class_ap.csv`` / ``per_class_ap.json``: AP, AP50, AP75 per class and IoU type (area "all",
  100 detections), plus the mean over classes that have ground truth (equal to COCOeval's summary
  AP) and how many classes that mean is taken over. A class without ground truth in the evaluated
  images has no AP: ``–`` in the printed table and an empty cell in the CSV (each with a footnote),
  ``null`` in the JSON. No file or table ever shows ``nan``.
- ``pr_curves/<iou_type>_pr_curves.png``: one small plot per class (precision against recall at
  IoU 0.50, 0.75 and averaged over 0.50:0.95), at most ``PLOTS_PER_PAGE`` classes per image
  (``..._pr_curves_<i>of<n>.png`` when there are more).
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval

from no_time_to_train.io_utils import atomic_open, atomic_save_json

METRICS = ("AP", "AP50", "AP75")
PLOTS_PER_PAGE = 48
PLOT_COLS = 8


def _index_of(values: Any, target: float) -> int | None:
    hits = np.flatnonzero(np.isclose(np.asarray(values, np.float64), target))
    return int(hits[0]) if len(hits) else None


def _mean_valid(x: np.ndarray) -> float:
    valid = x[x > -1]
    return float(valid.mean()) if valid.size else math.nan


def class_precision(ev: COCOeval) -> np.ndarray:
    """``(T, R, K)`` precision at area "all" and 100 detections (-1 where undefined)."""
    p = ev.params
    a = list(p.areaRngLbl).index("all")
    m = list(p.maxDets).index(100) if 100 in p.maxDets else len(p.maxDets) - 1
    return np.asarray(ev.eval["precision"])[:, :, :, a, m]


def per_class_ap(ev: COCOeval) -> dict[int, dict[str, float]]:
    """``{category_id: {"AP", "AP50", "AP75"}}`` (NaN without ground truth) for the K axis of an
    accumulated ``COCOeval`` (``params.catIds`` order)."""
    prec = class_precision(ev)
    t50, t75 = _index_of(ev.params.iouThrs, 0.5), _index_of(ev.params.iouThrs, 0.75)
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        pk = prec[:, :, k]
        out[int(cat_id)] = {
            "AP": _mean_valid(pk),
            "AP50": _mean_valid(pk[t50]) if t50 is not None else math.nan,
            "AP75": _mean_valid(pk[t75]) if t75 is not None else math.nan,
        }
    return out


def _category_names(dataset: Any, ev: COCOeval) -> dict[int, str]:
    names = {int(i): c.get("name", str(i)) for i, c in getattr(ev.cocoGt, "cats", {}).items()}
    ids, cat_names = getattr(dataset, "cat_ids", None), getattr(dataset, "cat_names", None)
    if ids is not None and cat_names is not None:
        names.update({int(i): str(n) for i, n in zip(ids, cat_names, strict=True)})
    return names


UNDEFINED = "–"  # printed for a value that is undefined (a class without ground truth)
FOOTNOTE = "– no ground truth of this class in the evaluated images: AP is undefined and not in the mean."


def _fmt(v: float | None, digits: int = 3, undefined: str = UNDEFINED) -> str:
    return undefined if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else v


def per_class_table(evals: dict[str, COCOeval], dataset: Any) -> dict:
    """``{"iou_types", "metrics", "classes": [row, ...], "mean": {...}}``; a row is
    ``{"category_id", "name", "<iou>_<metric>": float}``, NaN without ground truth."""
    iou_types = list(evals)
    first = evals[iou_types[0]]
    names = _category_names(dataset, first)
    aps = {t: per_class_ap(ev) for t, ev in evals.items()}
    rows = []
    for cat_id in (int(c) for c in first.params.catIds):
        row: dict[str, Any] = {"category_id": cat_id, "name": names.get(cat_id, str(cat_id))}
        for t in iou_types:
            for metric in METRICS:
                row[f"{t}_{metric}"] = aps[t].get(cat_id, {}).get(metric, math.nan)
        rows.append(row)
    mean, counted = {}, {}
    for t in iou_types:
        for metric in METRICS:
            vals = [r[f"{t}_{metric}"] for r in rows if not math.isnan(r[f"{t}_{metric}"])]
            mean[f"{t}_{metric}"] = float(np.mean(vals)) if vals else math.nan
            counted[f"{t}_{metric}"] = len(vals)
    return {"iou_types": iou_types, "metrics": list(METRICS), "classes": rows, "mean": mean,
            "mean_over_classes": counted}  # fmt: skip


def _mean_label(table: dict, cols: list[str]) -> str:
    n = {table["mean_over_classes"][c] for c in cols}
    total = len(table["classes"])
    return f"mean ({n.pop()}/{total} classes)" if len(n) == 1 else "mean"


def format_table(table: dict, metrics: tuple[str, ...] = ("AP", "AP50")) -> str:
    """A compact text table: class name, category id, then ``metrics`` per IoU type."""
    cols = [f"{t}_{m}" for t in table["iou_types"] for m in metrics]
    heads = [f"{t} {m}" for t in table["iou_types"] for m in metrics]
    mean_label = _mean_label(table, cols)
    width = max([len("class"), len(mean_label)] + [len(r["name"]) for r in table["classes"]])
    width = min(width, 28)
    head = f"{'class':<{width}} {'id':>5} " + " ".join(f"{h:>9}" for h in heads)
    lines = [head, "-" * len(head)]
    for r in table["classes"]:
        vals = " ".join(f"{_fmt(r[c]):>9}" for c in cols)
        lines.append(f"{r['name'][:width]:<{width}} {r['category_id']:>5} {vals}")
    lines.append("-" * len(head))
    lines.append(f"{mean_label:<{width}} {'':>5} " + " ".join(f"{_fmt(table['mean'][c]):>9}" for c in cols))
    if any(math.isnan(r[c]) for r in table["classes"] for c in cols):
        lines.append(FOOTNOTE)
    return "\n".join(lines)


def _write_csv(table: dict, path: str) -> None:
    cols = [f"{t}_{m}" for t in table["iou_types"] for m in table["metrics"]]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["category_id", "name", *cols])
    for r in table["classes"]:
        w.writerow([r["category_id"], r["name"], *(_fmt(r[c], 4, "") for c in cols)])
    w.writerow(["", _mean_label(table, cols), *(_fmt(table["mean"][c], 4, "") for c in cols)])
    if any(math.isnan(r[c]) for r in table["classes"] for c in cols):
        w.writerow([f"# empty cell: {FOOTNOTE[2:]}"])
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())


def _json_ready(table: dict) -> dict:
    def clean(d: dict) -> dict:
        return {k: _nan_to_none(v) if isinstance(v, float) else v for k, v in d.items()}

    return {**table, "classes": [clean(r) for r in table["classes"]], "mean": clean(table["mean"])}


def save_pr_curves(ev: COCOeval, iou_type: str, names: dict[int, str], out_dir: str) -> list[str]:
    """Small-multiple precision-recall plots, one per class; returns the written PNG paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    prec = class_precision(ev)
    rec = np.asarray(ev.params.recThrs)
    t50, t75 = _index_of(ev.params.iouThrs, 0.5), _index_of(ev.params.iouThrs, 0.75)
    cat_ids = [int(c) for c in ev.params.catIds]
    pages = [cat_ids[i : i + PLOTS_PER_PAGE] for i in range(0, len(cat_ids), PLOTS_PER_PAGE)]
    paths = []
    for page_no, page in enumerate(pages, 1):
        cols = min(PLOT_COLS, len(page))
        rows = math.ceil(len(page) / cols)
        fig = Figure(figsize=(2.3 * cols, 2.1 * rows + 0.5), dpi=90)
        FigureCanvasAgg(fig)
        for j, cat_id in enumerate(page):
            ax = fig.add_subplot(rows, cols, j + 1)
            k = cat_ids.index(cat_id)
            pk = prec[:, :, k]
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.tick_params(labelsize=6)
            ap = _mean_valid(pk)
            ax.set_title(
                f"{names.get(cat_id, cat_id)} ({cat_id})\nAP {_fmt(ap, undefined='undefined')}", fontsize=7
            )
            if (pk <= -1).all():
                ax.text(0.5, 0.5, "no GT", ha="center", va="center", fontsize=8, color="gray")
                continue
            ax.plot(rec, np.clip(pk.mean(axis=0), 0, None), color="black", lw=1.2, label="IoU .50:.95")
            for t, style, lab in ((t50, "tab:blue", "IoU .50"), (t75, "tab:orange", "IoU .75")):
                if t is not None:
                    ax.plot(rec, np.clip(pk[t], 0, None), color=style, lw=0.9, label=lab)
            if j == 0:
                ax.legend(fontsize=5, loc="lower left")
        suffix = "" if len(pages) == 1 else f"_{page_no}of{len(pages)}"
        fig.suptitle(f"{iou_type} precision-recall (area all, 100 dets)", fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{iou_type}_pr_curves{suffix}.png")
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png")
        paths.append(path)
    return paths


def save_per_class_report(
    evals: dict[str, COCOeval], dataset: Any, out_dir: str, verbose: bool = True
) -> dict:
    """Print the per-class table and write ``per_class_ap.csv``, ``per_class_ap.json`` and
    ``pr_curves/*.png`` under ``out_dir``.

    Args:
        evals: accumulated ``COCOeval`` per IoU type (``evaluate_coco``'s second output).
        dataset: the test set (``cat_ids`` / ``cat_names`` name the classes; the GT's categories
            are used otherwise).
    Returns:
        The table (``per_class_table``), NaN for classes without ground truth.
    """
    if not evals:
        return {}
    table = per_class_table(evals, dataset)
    if verbose:
        print("PER-CLASS RESULTS (area all, maxDets 100):")
        print(format_table(table))
    os.makedirs(out_dir, exist_ok=True)
    _write_csv(table, os.path.join(out_dir, "per_class_ap.csv"))
    atomic_save_json(_json_ready(table), os.path.join(out_dir, "per_class_ap.json"), indent=1)
    names = {r["category_id"]: r["name"] for r in table["classes"]}
    curves = os.path.join(out_dir, "pr_curves")
    for t, ev in evals.items():
        save_pr_curves(ev, t, names, curves)
    if verbose:
        print(f"Per-class AP and PR curves written to {out_dir}")
    return table
