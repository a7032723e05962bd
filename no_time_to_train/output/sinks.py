"""Outputs of a run as sinks: one small interface, one class per output format.

A sink sees a run in three calls, on every process of the run (as detectron2's evaluators do):

* ``reset(run)`` before the first image;
* ``process(run, item, output)`` after each item this process handled (``item`` is the dataset
  item, ``output`` what the mode's step returned for it: ``Detections`` for the segmenting modes);
* ``finish(run)`` after the last item, in the order the mode lists its sinks. Collectives are
  allowed here (every process calls it); files are written by the first process only.

``run`` is the LightningModule (its ``trainer``, ``dataset``, ``memory``, ``model_cfg`` and
``outputs``, the run's output paths). Sinks share what they gather through ``run.results`` (the
gathered COCO results of a segmenting mode, set by :class:`CocoResultsSink`, which comes first).
The run loop knows nothing about formats: a new output format is one new sink listed in the mode
table (``cli.modes``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from no_time_to_train.evaluation.coco_results import encode_detections, gather_indexed
from no_time_to_train.io_utils import atomic_save_json
from no_time_to_train.pipeline import memory_io


@dataclass
class RunOutputs:
    """The output paths of one run (the CLI's flags; all optional)."""

    out_path: str | None = None
    """--out_path: the memory file of the memory modes."""
    export_result: str | None = None
    """--export_result: the COCO results json of test."""
    results_name: str | None = None
    """The reference's inst_to_segm/coco_inst_<name>_results.json (from --seed, --n_shot, ...)."""
    out_support_res: str | None = None
    out_neg_pkl: str | None = None
    out_neg_json: str | None = None
    export_dataset: str | None = None
    """--export_dataset: the COCO instances dataset of the labelled images."""
    export_settings: Any = None
    """``output.coco_dataset.ExportSettings`` of --export_dataset."""
    overwrite: bool = False
    """--overwrite: start a stopped labelling run over instead of resuming it."""


class Sink:
    """Base class: every call does nothing."""

    def reset(self, run: Any) -> None:
        pass

    def process(self, run: Any, item: dict, output: Any) -> None:
        pass

    def finish(self, run: Any) -> None:
        pass


class CocoResultsSink(Sink):
    """COCO results (RLE masks) per image; gathered from every process into ``run.results`` in
    dataset order, then written to each of ``paths`` (first process, atomically)."""

    def __init__(self, *paths: tuple[str, str | None]):
        """``paths``: (what, path) pairs, e.g. ("Results", "--export_result's path"); None skipped."""
        self.paths = [(what, p) for what, p in paths if p]
        self._local: list[tuple[int, list[dict]]] = []

    def reset(self, run: Any) -> None:
        self._local = []
        run.results = None

    def process(self, run: Any, item: dict, output: Any) -> None:
        if output is None:
            return  # a target that could not be read (skipped)
        records = encode_detections(output.masks, output.boxes, output.scores, output.labels, item["img_id"],
                                    run.dataset.cat_inds_to_ids)  # fmt: skip
        self._local.append((item["index"], records))

    def finish(self, run: Any) -> None:
        run.results = [r for records in gather_indexed(self._local) for r in records]
        self._local = []
        if not run.trainer.is_global_zero:
            return
        for what, path in self.paths:
            atomic_save_json(run.results, path)
            print(f"{what} ({len(run.results)} detections) written to {path}")


class CocoEvaluationSink(Sink):
    """COCO AP of ``run.results`` against the dataset's ground truth, the per-class report and
    PR curves, and ``summary.json`` (the run's figures), next to the logs."""

    def reset(self, run: Any) -> None:
        self._started = time.perf_counter()

    def finish(self, run: Any) -> None:
        # On every rank: Lightning's ``log_dir`` is a broadcast, so a rank-0-only call would wait
        # for ranks that have already left.
        report_dir = run.report_dir()
        if not run.trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._started
        run.evaluate(run.results or [])
        if run.last_evals:
            from no_time_to_train.evaluation.reports import save_per_class_report

            save_per_class_report(run.last_evals, run.dataset, report_dir)
        n, cfg = len(run.dataset), run.model_cfg
        summary = {"stats": run.last_stats, "images": n, "test_seconds": round(seconds, 3),
                   "seconds_per_image": round(seconds / max(n, 1), 4), "devices": run.trainer.world_size,
                   "encoder": cfg.encoder_cfg.name, "proposer": cfg.proposer,
                   "sam2_cfg_file": cfg.sam2_cfg_file}  # fmt: skip
        atomic_save_json(summary, os.path.join(report_dir, "summary.json"), indent=1)


class ExportSink(Sink):
    """Plain per-image outputs (``model_cfg.test.export_dir``): instance masks with labels and
    scores, as PNGs plus a json index or one RLE json per image."""

    def __init__(self, folder: str, fmt: str):
        self.folder, self.fmt = folder, fmt

    def process(self, run: Any, item: dict, output: Any) -> None:
        from no_time_to_train.output.exports import export_prediction

        if output is None:
            return
        ds = run.dataset
        export_prediction(
            output.masks.cpu().numpy(), output.boxes.cpu().numpy(), output.scores.tolist(), output.labels.tolist(),
            item["file_name"], ds.cat_names, ds.cat_ids, self.folder, self.fmt,
        )  # fmt: skip


class PredictionPictureSink(Sink):
    """[ground truth | prediction] pictures (``model_cfg.test.online_vis``) under
    ``results_analysis/<dataset_name>/``."""

    def process(self, run: Any, item: dict, output: Any) -> None:
        from no_time_to_train.output.visualization import (
            gt_instances,
            load_original_image,
            prediction_path,
            visualize_prediction,
        )  # fmt: skip

        if output is None:
            return
        opts, ds = run.model_cfg.test, run.dataset
        image = load_original_image(opts.imgs_path or ds.root, item["file_name"], item["ori_size"])
        names = list(run.model_cfg.class_names or ds.cat_names)
        out = prediction_path(run.model_cfg.dataset_name, item["file_name"])
        gt = gt_instances(ds, item["img_id"], image.shape[:2])
        visualize_prediction(image, output, names, gt, opts.vis_thr, out)


class ReferencePictureSink(Sink):
    """vis_memory: each reference crop with its patches coloured by the bank's k-means centres and
    PCA components; ``output`` is the step's (features, weights) of the crop."""

    def process(self, run: Any, item: dict, output: Any) -> None:
        from no_time_to_train.output.visualization import visualize_memory_item

        feats, weights = output
        visualize_memory_item(item, feats[0], weights[0], run.memory, run.model_cfg.dataset_name)


class MemoryFileSink(Sink):
    """The memory file (``--out_path``): both banks, written by the first process atomically (an
    interrupted run leaves any previous file intact). The bank is identical on every process."""

    def __init__(self, path: str):
        self.path = path

    def finish(self, run: Any) -> None:
        trainer = run.trainer
        if trainer.is_global_zero:
            memory_io.write(self.path, run.memory, run.memory_meta(), negatives=run.memory_neg)
            print(f"Memory bank ({run.mode.name}) saved to {self.path}")
        trainer.strategy.barrier("save_memory")


class NegativeSamplingSink(Sink):
    """test_support: the sampled negative references (false positives of the support set) as a
    reference set (``--out_neg_pkl``) plus the COCO json of their masks (``--out_neg_json``)."""

    def __init__(self, pkl: str | None, json_file: str | None):
        self.pkl, self.json_file = pkl, json_file

    def finish(self, run: Any) -> None:
        if not run.trainer.is_global_zero or not (self.pkl and self.json_file):
            return
        from no_time_to_train.data.reference_sets import save_reference_pkl
        from no_time_to_train.pipeline.negatives import sample_negatives

        ds, cfg = run.dataset, run.model_cfg
        length = cfg.memory_bank_cfg.length_negative
        refs, coco = sample_negatives(ds.coco, run.results or [], ds.cat_ids, length,
                                      cfg.sam2_infer_cfgs.negative_score_thr)  # fmt: skip
        atomic_save_json(coco, self.json_file)
        save_reference_pkl(refs, self.pkl)
        counts = ", ".join(f"{ds.coco.cats[c]['name']} {len(v)}" for c, v in refs.items())
        print(f"Negative references (false positives, at most {length} per class): {counts}; written to "
              f"{self.pkl} and {self.json_file}")  # fmt: skip


class CocoDatasetSink(Sink):
    """The labelled images as a COCO instances dataset (``--export_dataset``), written per image to
    this process's shard and assembled at the end (``output.coco_dataset``); images that could not
    be read are listed in ``<out>.skipped.txt``. ``results_json``: also the COCO results json."""

    def __init__(self, out_json: str, settings: Any, results_json: str | None = None):
        from no_time_to_train.output.coco_dataset import ShardStore

        self.store, self.settings, self.results_json = ShardStore(out_json), settings, results_json
        self.writer: Any = None
        self.progress: Any = None

    def reset(self, run: Any) -> None:
        from no_time_to_train.output.coco_dataset import Progress

        self._started = time.perf_counter()
        self.writer = self.store.open_shard(run.global_rank)
        dm = run.datamodule
        if run.trainer.is_global_zero:
            self.progress = Progress(self.store, len(dm.all_files), dm.already_done)

    def process(self, run: Any, item: dict, output: Any) -> None:
        from no_time_to_train.output.coco_dataset import image_record, skipped_record

        if output is None:
            self.writer.write(skipped_record(item["file_name"], item.get("error", "unreadable")))
        else:
            h, w = (int(v) for v in item["ori_size"])
            self.writer.write(image_record(
                item["file_name"], w, h, output.masks.cpu().numpy(), output.boxes.float().cpu().numpy(),
                output.scores.float().cpu().numpy(), output.labels.cpu().numpy(), run.dataset.cat_ids, self.settings,
            ))  # fmt: skip
        if self.progress is not None:
            self.progress.tick()

    def finish(self, run: Any) -> None:
        from no_time_to_train.output.coco_dataset import categories_of, summary_lines

        self.writer.close()
        run.trainer.strategy.barrier("export_dataset")
        if not run.trainer.is_global_zero:
            return
        dm, ds = run.datamodule, run.dataset
        skipped = f"{self.store.out}.skipped.txt"
        summary = self.store.assemble(
            dm.all_files, categories_of(ds.cat_ids, ds.cat_names), results_json=self.results_json,
            skipped_path=skipped, ids=dm.all_ids, info={"description": "labelled by no_time_to_train"},
        )  # fmt: skip
        run.export_summary = summary
        names = dict(zip(ds.cat_ids, ds.cat_names, strict=True))
        print(
            summary_lines(summary, names, time.perf_counter() - self._started, str(self.store.out), skipped)
        )
        if self.results_json:
            print(f"Results written to {self.results_json}")
