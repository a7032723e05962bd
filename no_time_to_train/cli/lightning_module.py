"""The LightningModule: the method's steps for the chosen ``test_mode``, driven by the mode table.

What a mode builds, reads, requires, does per item and writes is its entry in ``cli.modes.MODES``;
the data are the ``cli.datamodule.ReferenceDataModule``'s; the outputs are the mode's sinks
(``output.sinks``). This module builds the networks and banks, runs the entry's step on each item,
hands the outputs to the sinks, and stores only the banks in memory files.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from no_time_to_train import signals
from no_time_to_train.cli.modes import MODE_NAMES, Mode, mode_of
from no_time_to_train.config import DataLoadCfgs, DatasetCfgs, ModelCfg, TestMode
from no_time_to_train.data.coco_checks import has_mask
from no_time_to_train.errors import ConfigError, DatasetError
from no_time_to_train.evaluation.coco_eval import evaluate_coco
from no_time_to_train.evaluation.coco_results import gather_indexed
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.output.sinks import RunOutputs, Sink
from no_time_to_train.pipeline import memory_io, references
from no_time_to_train.pipeline.builders import build_encoder, encoder_feat_dim
from no_time_to_train.pipeline.segmenter import ReferenceSegmenter
from no_time_to_train.proposers import build_proposer
from no_time_to_train.validation import validate

CHOOSE_MODE = f"--model.test_mode {'|'.join(MODE_NAMES[:4])}"


class Sam2MatcherLightningModel(pl.LightningModule):
    """Training-free reference-based instance segmentation (SAM2 proposals + DINOv2 memory bank)."""

    def __init__(
        self,
        model_cfg: ModelCfg,
        dataset_cfgs: DatasetCfgs,
        data_load_cfgs: DataLoadCfgs = DataLoadCfgs(),  # noqa: B008 - immutable in practice
        test_mode: TestMode = "none",
    ):
        super().__init__()
        self.model_cfg, self.dataset_cfgs, self.data_load_cfgs = model_cfg, dataset_cfgs, data_load_cfgs
        self.test_mode = test_mode
        self.mode: Mode | None = mode_of(test_mode)
        for warning in validate(model_cfg, dataset_cfgs, self.mode):
            if os.environ.get("LOCAL_RANK", "0") == "0":
                print(f"Warning: {warning}")
        self.memory = self._new_bank(model_cfg.memory_bank_cfg.length)
        # Negative references (false positives of the support set), in the same memory file.
        self.memory_neg: MemoryBank | None = None
        if model_cfg.sam2_infer_cfgs.with_negative_refs or (
            self.mode and self.mode.negatives in ("fresh", "filled")
        ):
            self.memory_neg = self._new_bank(model_cfg.memory_bank_cfg.length_negative)
        self.outputs = RunOutputs()
        """The run's output paths (set by the CLI from its flags)."""
        self.segmenter: ReferenceSegmenter | None = None
        self.sinks: list[Sink] = []
        self._outputs: list[tuple[int, Any]] = []
        self.results: list[dict] | None = None
        self.loaded_meta: dict | None = None
        self.memory_path: str | None = None
        """The memory file being restored (``--ckpt_path``), named in its error messages."""
        self.last_evals: dict = {}
        self.last_stats: dict = {}

    # ------------------------------------------------------------------ components
    def _new_bank(self, length: int) -> MemoryBank:
        bank, infer = self.model_cfg.memory_bank_cfg, self.model_cfg.sam2_infer_cfgs
        return MemoryBank(
            bank.category_num, length, self.feature_dim(), infer.kmeans_k, infer.n_pca_components
        )

    def _scores_with_negatives(self) -> bool:
        return (
            self.mode is not None
            and self.mode.negatives == "scoring"
            and self.model_cfg.sam2_infer_cfgs.with_negative_refs
        )

    def feature_dim(self) -> int:
        return encoder_feat_dim(self.model_cfg.encoder_cfg.name)

    def build_encoder(self) -> nn.Module:
        """The patch-feature encoder of ``encoder_cfg``. Override to inject another one."""
        return build_encoder(self.model_cfg)

    def _check_checkpoints(self) -> None:
        """Every problem of the checkpoints this mode loads, in one message (before building)."""
        from no_time_to_train.checkpoints.preflight import check_checkpoints

        # A subclass that injects its own encoder does not load that checkpoint.
        own_encoder = type(self).build_encoder is Sam2MatcherLightningModel.build_encoder
        check_checkpoints(self.model_cfg, style="cli", proposer=self.mode.proposer,
                          encoder=self.mode.encoder and own_encoder)  # fmt: skip

    # ------------------------------------------------------------------ data
    @property
    def datamodule(self) -> Any:
        return self.trainer.datamodule

    @property
    def dataset(self) -> Any:
        return self.datamodule.dataset

    def bank_cat_ids(self) -> list[int]:
        return [int(i) for i in self.memory.mem_cat_ids.tolist()]

    def check_class_count(self, n: int, where: str) -> None:
        want = self.model_cfg.memory_bank_cfg.category_num
        if n != want:
            raise ConfigError(
                f"{where} selects {n} classes but memory_bank_cfg.category_num is {want}. Pass "
                f"--model.init_args.model_cfg.memory_bank_cfg.category_num {n} (or select {want} classes)."
            )

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            # After Lightning has installed its own SIGTERM handler, which would let the run go on.
            signals.install(self.trainer)
        if stage != "test":
            raise ConfigError(f"Only the `test` subcommand is supported (got {stage!r}); choose a mode with "
                              f"{CHOOSE_MODE}.")  # fmt: skip
        if self.mode is None:
            raise ConfigError(f"Choose a mode: {CHOOSE_MODE}.")
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = self.model_cfg.allow_tf32
            torch.backends.cudnn.allow_tf32 = self.model_cfg.allow_tf32
        if self.segmenter is None:
            self._check_checkpoints()
            self.segmenter = ReferenceSegmenter(
                self.memory,
                encoder=self.build_encoder() if self.mode.encoder else None,
                proposer=build_proposer(self.model_cfg) if self.mode.proposer else None,
                infer_cfg=self.model_cfg.sam2_infer_cfgs,
                compute_cfg=self.model_cfg.compute_cfgs,
                precision=self.model_cfg.encoder_precision,
                negatives=self.memory_neg if self._scores_with_negatives() else None,
            )
        self._outputs = []
        self.results = None

    def on_test_start(self) -> None:
        mode, what = self.mode, f"--model.test_mode {self.mode.name}"
        if mode.bank == "empty" and self.memory.is_filled:
            raise ConfigError(f"{mode.name} starts from an empty bank; do not pass --ckpt_path in this mode.")
        if mode.bank == "filled" and not self.memory.is_filled:
            raise ConfigError(f"{mode.name} needs --ckpt_path of a memory file written by fill_memory.")
        if mode.bank == "postprocessed":
            memory_io.require_postprocessed(self.memory, what)
        if mode.negatives == "fresh" and self.memory_neg.is_filled:
            self.memory_neg = self._new_bank(self.model_cfg.memory_bank_cfg.length_negative).to(self.device)
        if mode.negatives == "filled" and not self.memory_neg.is_filled:
            raise ConfigError(f"{mode.name} needs --ckpt_path of a memory file written by fill_memory_neg.")
        if self._scores_with_negatives():
            memory_io.require_negatives(self.memory_neg, what)
        if mode.reads_images:
            self._check_test_classes()
        self.sinks = mode.sinks(self, self.outputs)
        for sink in self.sinks:
            sink.reset(self)
        self._started_items = True

    def _check_test_classes(self) -> None:
        bank_ids, ds = self.bank_cat_ids(), self.dataset
        if -1 not in bank_ids and bank_ids != ds.cat_ids:
            c, where = self.datamodule.target_cfg()
            raise ConfigError(
                f"The memory bank holds category ids {bank_ids} but dataset_cfgs.{where} selects {ds.cat_ids} "
                f"(class_split={c.class_split!r}, cat_names={c.cat_names!r}). Select the same classes for "
                f"fill_memory and dataset_cfgs.{where}."
            )

    # ------------------------------------------------------------------ steps
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # The progress bar says what runs ("fill_memory 3/6"), not Lightning's "Testing DataLoader 0".
        if batch_idx == 0 and self._trainer is not None:
            bar = getattr(self.trainer.progress_bar_callback, "test_progress_bar", None)
            if bar is not None:
                bar.set_description(self.mode.name)

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        item = batch[0]
        output = self.mode.step(self, item)
        if self.mode.finish is not None:
            self._outputs.append((item["index"], output))
        for sink in self.sinks:
            sink.process(self, item, output)

    def on_test_epoch_end(self) -> None:
        if self.mode.finish is not None:
            self.mode.finish(self, gather_indexed(self._outputs))
        self._outputs = []
        for sink in self.sinks:
            sink.finish(self)

    def finish_without_items(self) -> None:
        """Lightning runs no test hook when no process has an item (a resumed labelling run whose
        images are all done): the sinks still write the run's outputs from what is on disk."""
        if getattr(self, "_started_items", False) or self.mode is None or not self.mode.reads_images:
            return
        self.on_test_start()
        self.on_test_epoch_end()

    def fill_positive(self, items: list) -> None:
        """fill_memory's end: the gathered (reference entry, slot) pairs into the bank."""
        ds = self.dataset
        if len(items) != len(ds):
            raise RuntimeError(f"fill_memory gathered {len(items)} references, expected {len(ds)}")
        entries = [entry for entry, _ in items]
        references.fill_bank(self.memory, entries, [slot for _, slot in items])
        self.memory.mem_cat_ids.copy_(torch.tensor(ds.cat_ids, dtype=torch.long))
        self._check_reference_masks(entries)

    def fill_negative(self, items: list) -> None:
        """fill_memory_neg's end: the gathered negatives into the negative bank."""
        if len(items) != len(self.dataset):
            raise RuntimeError(
                f"fill_memory_neg gathered {len(items)} negatives, expected {len(self.dataset)}"
            )
        if not items:
            raise DatasetError(
                f"{self.datamodule.negative_paths[0]} holds no negative reference: test_support found no false "
                "positive scoring at least sam2_infer_cfgs.negative_score_thr. There is nothing to penalise; run "
                "test without with_negative_refs (or lower negative_score_thr and run test_support again)."
            )
        references.fill_bank(self.memory_neg, [e for e, _ in items], [slot for _, slot in items])
        self.memory_neg.mem_cat_ids.copy_(self.memory.mem_cat_ids)

    def _check_reference_masks(self, items: list[references.ReferenceEntry]) -> None:
        """A reference whose mask has no pixel on the patch grid after cropping adds nothing; a
        class made only of such references would get an undefined (NaN) prototype."""
        ds, c = self.dataset, self.dataset_cfgs.fill_memory
        empty = [i for i, x in enumerate(items) if x.is_empty]
        if not empty:
            return
        ann_ids = [ds.items[i]["ann_id"] for i in empty]
        dead = [ds.cat_names[k] for k in range(len(ds.cat_ids)) if self.memory.class_weight(k) <= 0]
        if dead:
            raise ConfigError(
                f"No reference of class(es) {dead} has any mask pixel after cropping and resizing (empty "
                f"reference annotations {ann_ids} of {c.json_file}, listed in {c.memory_pkl}); their "
                "prototypes would be undefined. Choose other references for them (e.g. sample the "
                "reference pickle again with another --seed)."
            )
        if self.global_rank == 0:
            print(
                f"Warning: reference annotations {ann_ids} ({c.json_file}) have no mask pixel after cropping "
                "and resizing; they add nothing to their class prototypes."
            )

    # ------------------------------------------------------------------ evaluation
    def report_dir(self) -> str:
        """Next to the logs; without a logger, next to the pictures of this dataset."""
        if self.trainer.loggers:
            return self.trainer.log_dir
        return os.path.join("results_analysis", self.model_cfg.dataset_name, "evaluation")

    def evaluate(self, results: list[dict], verbose: bool = True) -> dict:
        ds = self.dataset
        c, where = self.datamodule.target_cfg()
        if verbose and not ds.coco.getAnnIds(catIds=ds.cat_ids):
            print(
                f"Note: {c.json_file} (dataset_cfgs.{where}.json_file) has no ground-truth annotations of the "
                "selected classes, so AP and AR are undefined (COCO reports them as -1). The predictions are "
                "still written (--export_result, model_cfg.test.export_dir)."
            )
        iou_types: tuple[str, ...] = ("bbox", "segm")
        gt = ds.coco.loadAnns(ds.coco.getAnnIds(catIds=ds.cat_ids))
        if gt and not any(has_mask(a) for a in gt):
            iou_types = ("bbox",)
            if verbose:
                print(
                    f"Note: {c.json_file} (dataset_cfgs.{where}.json_file) has boxes but no masks (box-only ground "
                    "truth): only bbox AP is reported; segm AP needs mask ground truth (polygons or RLE). "
                    "no_time_to_train/dataset/sam_bbox_to_segm_batch.py can make masks from boxes."
                )
        stats, self.last_evals = evaluate_coco(
            ds.coco, results, cat_ids=ds.cat_ids, img_ids=ds.img_ids, iou_types=iou_types, verbose=verbose
        )
        self.last_stats = stats
        return stats

    # ------------------------------------------------------------------ memory files
    def class_names(self) -> list[str] | None:
        """The bank's class names: the reference set's after fill_memory, else the restored file's."""
        if self.mode is not None and self.mode.data == "references" and self.mode.writes_memory:
            return getattr(self.dataset, "cat_names", None)
        return (self.loaded_meta or {}).get("class_names")

    def dataset_manifest(self, files: list[str]) -> dict:
        """What a labelling run is, for resuming it (``output.coco_dataset``): the memory file's
        contents, every setting that changes a detection, the images and the export settings."""
        import dataclasses

        from no_time_to_train.output.coco_dataset import file_digest, list_digest

        cfg = dataclasses.asdict(self.model_cfg)
        for key in ("num_threads", "decoder_chunk", "merge_chunk"):  # the same numbers either way
            cfg["compute_cfgs"].pop(key, None)
        for key in ("testing_point_bs",):
            cfg["sam2_infer_cfgs"].pop(key, None)
        cfg.pop("test", None)  # pictures and plain exports
        test = self.dataset_cfgs.test
        return {
            "format": 1,
            "memory_file": file_digest(self.memory_path) if self.memory_path else None,
            "model_cfg": cfg,
            "root": os.path.abspath(test.root),
            "images": list_digest(files),
            "image_count": len(files),
            "image_size": test.image_size,
            "export": dataclasses.asdict(self.outputs.export_settings)
            if self.outputs.export_settings
            else None,
        }

    def memory_meta(self) -> dict:
        enc = self.model_cfg.encoder_cfg
        names = self.class_names() if self._trainer is not None else None
        return memory_io.make_meta(self.memory, enc.name, enc.img_size, names, patch_size=enc.patch_size)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # ``state_dict`` holds only the bank (see below), never the frozen backbones.
        checkpoint[memory_io.META_KEY] = self.memory_meta()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        path = self.memory_path or "the memory file"
        self.loaded_meta = memory_io.check_meta(checkpoint, self.memory_meta(), path)
        if self.global_rank == 0:
            state = (
                "postprocessed" if self.loaded_meta.get("postprocessed") else "filled, not yet postprocessed"
            )
            print(f"Memory bank restored from {path} ({state}; no network weights are in that file).")

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):  # noqa: ANN201
        # Only the banks are stored; backbones come from their own checkpoints.
        path = self.memory_path or "the memory file"
        out = memory_io.load_bank_state(self.memory, state_dict, path)
        if self.memory_neg is not None and memory_io.has_negatives(state_dict):
            memory_io.load_negative_state(self.memory_neg, state_dict, path)
        return out

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:
        """Only the memory bank: this is what ``--out_path`` files contain."""
        return {k: v for k, v in super().state_dict(*args, **kwargs).items() if k.startswith("memory.")}
