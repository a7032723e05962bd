"""A labelled dataset written as it is made: per-process shards, resumable, assembled at the end.

Layout, next to the output ``OUT.json``::

    OUT.json.parts/manifest.json     what the run is (settings, memory file, image list): a restart
                                     with anything else is refused unless it starts over
    OUT.json.parts/shard-*.jsonl     one line per finished image, appended and flushed per image,
                                     by each process (an image's annotations, or why it was skipped)

At the end the first process assembles ``OUT.json`` (a COCO *instances dataset*: ``images`` with
relative ``file_name``, ``width``, ``height``; ``categories``; ``annotations`` with
``segmentation`` (RLE, or polygons), ``bbox``, ``area``, ``iscrowd: 0`` and ``score``), and
optionally the COCO results json and the list of skipped files, each atomically, streaming the
shards (memory does not grow with the number of images). A run killed at any point and started
again with the same command processes only the images that have no line yet; an image is never
written twice (the first line of an image wins), so the result equals an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from no_time_to_train.errors import UserInputError
from no_time_to_train.io_utils import atomic_open

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ExportSettings:
    """What goes into the dataset: detections scoring at least ``score_thr``, at most
    ``max_per_image`` per image (best first), masks as ``segmentation`` ("rle" or "polygon")."""

    score_thr: float = 0.0
    max_per_image: int | None = None
    segmentation: str = "rle"

    def __post_init__(self) -> None:
        if self.segmentation not in ("rle", "polygon"):
            raise UserInputError(f"segmentation format {self.segmentation!r}: choose rle or polygon.")
        if self.max_per_image is not None and self.max_per_image < 1:
            raise UserInputError(f"the per-image cap must be >= 1, got {self.max_per_image}.")


def file_digest(path: str) -> str:
    """SHA-256 of a file (the memory file a run labels with)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_digest(names: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def image_record(file_name: str, width: int, height: int, masks: np.ndarray, boxes: np.ndarray,
                 scores: np.ndarray, labels: np.ndarray, cat_ids: list[int], settings: ExportSettings) -> dict:  # fmt: skip
    """One finished image: ``{"file_name", "width", "height", "annotations": [...]}`` with the
    detections of ``settings`` (sorted by score as given), annotations without ids."""
    from pycocotools import mask as mask_utils

    from no_time_to_train.data.polygons import mask_to_polygons

    keep = [i for i in range(len(scores)) if float(scores[i]) >= settings.score_thr]
    if settings.max_per_image is not None:
        keep = keep[: settings.max_per_image]
    anns = []
    for i in keep:
        m = np.asfortranarray(np.asarray(masks[i], dtype=np.uint8))
        rle = mask_utils.encode(m)
        area = float(mask_utils.area(rle))
        if area <= 0:
            continue
        if settings.segmentation == "rle":
            segm: Any = {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}
        else:
            segm = mask_to_polygons(masks[i])
            if not segm:
                continue
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        anns.append({"category_id": int(cat_ids[int(labels[i])]), "segmentation": segm, "area": area,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0, "score": round(float(scores[i]), 6)})  # fmt: skip
    return {"file_name": file_name, "width": int(width), "height": int(height), "annotations": anns}


def skipped_record(file_name: str, reason: str) -> dict:
    return {"file_name": file_name, "skipped": " ".join(str(reason).split())}


class ShardStore:
    """The parts folder of one output (see the module doc)."""

    def __init__(self, out_json: str | os.PathLike):
        self.out = Path(out_json)
        self.parts = Path(f"{self.out}.parts")

    # ------------------------------------------------------------------ the run's identity
    def prepare(self, manifest: dict, overwrite: bool = False) -> int:
        """Start or resume: with no parts folder (or ``overwrite``), a fresh one with ``manifest``;
        else the folder's manifest must equal ``manifest`` (UserInputError saying what changed).
        Returns the number of images already done. Call on one process only."""
        if overwrite and self.parts.exists():
            shutil.rmtree(self.parts)
        path = self.parts / MANIFEST
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except ValueError:
                old = {}
            before, now = _flatten(old), _flatten(manifest)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                detail = "; ".join(
                    f"{k}: {_short(before.get(k))} -> {_short(now.get(k))}" for k in changed[:6]
                )
                raise UserInputError(
                    f"{self.parts} holds a stopped run of {self.out} made with other settings ({detail}). Run "
                    "the same command to resume it, or pass --overwrite to start over (its finished images are "
                    "then deleted)."
                )
            return len(self.done())
        self.parts.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        return 0

    # ------------------------------------------------------------------ writing
    def open_shard(self, rank: int) -> ShardWriter:
        return ShardWriter(self.parts / f"shard-r{rank}-p{os.getpid()}-{time.time_ns()}.jsonl")

    # ------------------------------------------------------------------ reading
    def shards(self) -> list[Path]:
        return sorted(self.parts.glob("shard-*.jsonl")) if self.parts.is_dir() else []

    def _lines(self) -> Iterator[tuple[Path, int, dict]]:
        """(shard, byte offset, record) of every complete line (a line cut by a kill is ignored)."""
        for shard in self.shards():
            with open(shard, "rb") as f:
                offset = 0
                for raw in f:
                    if raw.endswith(b"\n"):
                        try:
                            yield shard, offset, json.loads(raw)
                        except ValueError:
                            pass
                    offset += len(raw)

    def done(self) -> dict[str, tuple[Path, int]]:
        """{file_name: (shard, offset)} of the first line of every finished image."""
        out: dict[str, tuple[Path, int]] = {}
        for shard, offset, rec in self._lines():
            if isinstance(rec, dict) and "file_name" in rec:
                out.setdefault(rec["file_name"], (shard, offset))
        return out

    def count_lines(self, seen: dict[Path, tuple[int, int]] | None = None) -> int:
        """Lines written so far by every process (progress). ``seen`` ({shard: (bytes read,
        lines)}, updated in place) makes repeated calls read only what was appended since."""
        seen = {} if seen is None else seen
        for shard in self.shards():
            offset, lines = seen.get(shard, (0, 0))
            with open(shard, "rb") as f:
                f.seek(offset)
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    lines += block.count(b"\n")
                    offset += len(block)
            seen[shard] = (offset, lines)
        return sum(lines for _, lines in seen.values())

    # ------------------------------------------------------------------ the result
    def assemble(self, files: list[str], categories: list[dict], results_json: str | None = None,
                 skipped_path: str | None = None, info: dict | None = None, ids: list[int] | None = None) -> dict:  # fmt: skip
        """Write ``OUT.json`` (and ``results_json``, ``skipped_path``) from the shards, images in the
        order of ``files`` with ids ``ids`` (default 1, 2, ...), annotations numbered in that order.
        Returns a summary: images, annotations per category id, skipped, missing (no line)."""
        index = self.done()
        ids = list(ids) if ids is not None else list(range(1, len(files) + 1))
        missing = [f for f in files if f not in index]
        per_cat: dict[int, int] = {}
        skipped: list[tuple[str, str]] = []
        handles: dict[Path, IO[bytes]] = {}

        def record(name: str) -> dict:
            shard, offset = index[name]
            f = handles.get(shard) or handles.setdefault(shard, open(shard, "rb"))  # noqa: SIM115
            f.seek(offset)
            return json.loads(f.readline())

        try:
            with atomic_open(self.out, "w") as out:
                out.write('{"info": ' + json.dumps(info or {}) + ', "licenses": [], "categories": ')
                out.write(json.dumps(categories) + ', "images": [')
                first = True
                for image_id, name in zip(ids, files, strict=True):
                    if name not in index:
                        continue
                    rec = record(name)
                    if "skipped" in rec:
                        skipped.append((name, rec["skipped"]))
                        continue
                    img = {"id": image_id, "file_name": name, "width": rec["width"], "height": rec["height"]}
                    out.write(("" if first else ", ") + json.dumps(img))
                    first = False
                out.write('], "annotations": [')
                ann_id, first = 0, True
                for image_id, name in zip(ids, files, strict=True):
                    if name not in index:
                        continue
                    rec = record(name)
                    for ann in rec.get("annotations", []):
                        ann_id += 1
                        per_cat[ann["category_id"]] = per_cat.get(ann["category_id"], 0) + 1
                        out.write(
                            ("" if first else ", ") + json.dumps({"id": ann_id, "image_id": image_id, **ann})
                        )
                        first = False
                out.write("]}\n")
            if results_json:
                self._write_results(files, ids, index, record, results_json)
            if skipped_path and skipped:
                with atomic_open(skipped_path, "w") as f:
                    f.writelines(f"{name}\t{reason}\n" for name, reason in skipped)
        finally:
            for f in handles.values():
                f.close()
        done = len(files) - len(missing) - len(skipped)
        return {
            "images": done,
            "annotations": ann_id,
            "per_category": per_cat,
            "skipped": skipped,
            "missing": missing,
        }

    @staticmethod
    def _write_results(files: list[str], ids: list[int], index: dict, record: Any, path: str) -> None:
        """The COCO results json (what ``--export_result`` writes for a dataset with ground truth)."""
        with atomic_open(path, "w") as out:
            out.write("[")
            first = True
            for image_id, name in zip(ids, files, strict=True):
                if name not in index:
                    continue
                for ann in record(name).get("annotations", []):
                    res = {"image_id": image_id, "category_id": ann["category_id"], "bbox": ann["bbox"],
                           "score": ann["score"], "segmentation": ann["segmentation"]}  # fmt: skip
                    out.write(("" if first else ", ") + json.dumps(res))
                    first = False
            out.write("]\n")


class ShardWriter:
    """Appends one json line per image to one shard, flushed (and synced) per image."""

    def __init__(self, path: Path):
        self.path = path
        self._f: IO[str] | None = None

    def write(self, record: dict) -> None:
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across images
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def categories_of(cat_ids: list[int], names: list[str]) -> list[dict]:
    return [{"id": int(c), "name": str(n), "supercategory": ""} for c, n in zip(cat_ids, names, strict=True)]


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: a changed setting is named by its own key."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


class Progress:
    """``labelled 120/500 images (3.1 images/s, 2 min left)`` lines, at most one every ``every``
    seconds, counted over every process's shard (the whole run, not one process)."""

    def __init__(self, store: ShardStore, total: int, already: int, every: float = 5.0):
        self.store, self.total, self.already, self.every = store, total, already, every
        self.start = self.last = time.monotonic()
        self._seen: dict[Path, tuple[int, int]] = {}  # shards are append-only: read each byte once

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        done = min(self.store.count_lines(self._seen), self.total)
        rate = max(done - self.already, 0) / max(now - self.start, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float("nan")
        eta = "" if left != left else f", {_duration(left)} left"
        print(f"labelled {done}/{self.total} images ({rate:.2f} images/s{eta})", flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summary_lines(
    summary: dict, names: dict[int, str], seconds: float, out: str, skipped_path: str | None
) -> str:
    counts = ", ".join(f"{names.get(c, c)} {n}" for c, n in sorted(summary["per_category"].items())) or "none"
    text = (f"Dataset written to {out}: {summary['images']} image(s), {summary['annotations']} annotation(s) "
            f"({counts}), {len(summary['skipped'])} skipped, {seconds:.1f} s.")  # fmt: skip
    if summary["skipped"] and skipped_path:
        text += f" Skipped files and why: {skipped_path}."
    return text


def labelling_manifest(
    memory: str, model_cfg: Any, root: str, files: list[str], settings: ExportSettings
) -> dict:
    """What a one-process labelling run is (the API's ``label_folder``, ``segment_image
    --coco-out``): a resumed run must have the same memory (``memory``: its digest), settings,
    root and images."""
    return {"format": 1, "memory": memory, "model_cfg": asdict(model_cfg), "root": os.path.abspath(root),
            "images": list_digest(files), "image_count": len(files), "export": asdict(settings)}  # fmt: skip


class FolderLabeller:
    """One process labelling a list of images into ``out_json`` (the Python API's
    ``label_folder`` and ``segment_image --coco-out``): resumable like the CLI's runs."""

    def __init__(self, out_json: str, files: list[str], cat_ids: list[int], names: list[str], manifest: dict,
                 settings: ExportSettings, overwrite: bool = False) -> None:  # fmt: skip
        self.store, self.files, self.settings = ShardStore(out_json), list(files), settings
        self.cat_ids, self.names = list(cat_ids), list(names)
        self.store.prepare(manifest, overwrite=overwrite)
        done = self.store.done()
        self.todo = [f for f in self.files if f not in done]
        if len(self.todo) < len(self.files):
            print(
                f"Resuming {out_json}: {len(self.files) - len(self.todo)} of {len(self.files)} images are done."
            )
        self.progress = Progress(self.store, len(self.files), len(self.files) - len(self.todo))
        self.writer = self.store.open_shard(0)
        self._started = time.perf_counter()

    def add(
        self, file_name: str, width: int, height: int, prediction: Any = None, error: str | None = None
    ) -> None:
        """One image: its prediction (``api.Prediction``), or the reason it was skipped."""
        if prediction is None:
            self.writer.write(skipped_record(file_name, error or "unreadable"))
        else:
            p = prediction
            self.writer.write(image_record(file_name, width, height, p.masks, p.boxes, p.scores, p.labels,
                                           self.cat_ids, self.settings))  # fmt: skip
        self.progress.tick()

    def finish(self, results_json: str | None = None) -> dict:
        self.writer.close()
        skipped = f"{self.store.out}.skipped.txt"
        summary = self.store.assemble(self.files, categories_of(self.cat_ids, self.names), results_json=results_json,
                                      skipped_path=skipped, info={"description": "labelled by no_time_to_train"})  # fmt: skip
        names = dict(zip(self.cat_ids, self.names, strict=True))
        print(
            summary_lines(summary, names, time.perf_counter() - self._started, str(self.store.out), skipped)
        )
        return summary
