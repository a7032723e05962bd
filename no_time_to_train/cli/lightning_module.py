"""The LightningModule: builds what a mode needs, feeds it data, collects outputs.

Modes (``test_mode``): ``fill_memory`` encodes reference crops into the bank; ``postprocess_memory``
turns them into class statistics; ``vis_memory`` paints them; ``test`` segments target images and
evaluates. Saving the bank (``--out_path``) and final evaluation are driven by ``cli.py``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from no_time_to_train import signals
from no_time_to_train.config import DataLoadCfgs, DatasetCfgs, ModelCfg, TestMode
from no_time_to_train.config import validate as validate_config
from no_time_to_train.data.coco_checks import has_mask
from no_time_to_train.data.datasets import COCOMemoryFillCropDataset, COCORefTestDataset
from no_time_to_train.errors import ConfigError, DatasetError
from no_time_to_train.evaluation.coco_eval import evaluate_coco
from no_time_to_train.evaluation.coco_results import encode_detections, gather_indexed
from no_time_to_train.io_utils import atomic_save_json
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.pipeline import memory_io, references
from no_time_to_train.pipeline.builders import build_encoder, build_proposer, encoder_feat_dim
from no_time_to_train.pipeline.segmenter import ReferenceSegmenter
from no_time_to_train.runtime import adapt_cpu_threads, configure_cpu_threads, one_thread_worker, usable_cpus

SUPPORTED_MODELS = ("matching_baseline_noamg",)
NEGATIVE_MODES = ("fill_memory_neg", "postprocess_memory_neg")


class _Single(Dataset):
    """One dummy item: postprocess_memory runs exactly once."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        return {"index": index}


def _identity_collate(batch: list) -> list:
    return batch


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
        if model_cfg.name.lower() not in SUPPORTED_MODELS:
            raise ConfigError(
                f"model_cfg.name={model_cfg.name!r} is not supported; use 'matching_baseline_noAMG' "
                "(the paper's method)."
            )
        if model_cfg.sam2_infer_cfgs.cls_num_per_mask != 1:
            raise ConfigError("sam2_infer_cfgs.cls_num_per_mask: only 1 (one label per mask) is supported.")
        bank = model_cfg.memory_bank_cfg
        if bank.category_num < 1 or bank.length < 1:
            raise ConfigError(
                f"memory_bank_cfg: category_num ({bank.category_num}) and length ({bank.length}) must be >= 1."
            )
        self.model_cfg, self.dataset_cfgs, self.data_load_cfgs = model_cfg, dataset_cfgs, data_load_cfgs
        self.test_mode = test_mode
        for warning in validate_config(model_cfg, dataset_cfgs, test_mode):
            if os.environ.get("LOCAL_RANK", "0") == "0":
                print(f"Warning: {warning}")
        infer = model_cfg.sam2_infer_cfgs
        self.memory = MemoryBank(
            bank.category_num, bank.length, self.feature_dim(), infer.kmeans_k, infer.n_pca_components
        )
        # Negative references (false positives of the support set), in the same memory file.
        self.memory_neg: MemoryBank | None = None
        if infer.with_negative_refs or test_mode in NEGATIVE_MODES:
            if bank.length_negative < 1:
                raise ConfigError(
                    f"memory_bank_cfg.length_negative must be >= 1, got {bank.length_negative}."
                )
            self.memory_neg = self._new_negative_bank()
        self.negative_paths: tuple[str | None, str | None] = (None, None)
        """(--out_neg_pkl, --out_neg_json): the negative reference set fill_memory_neg reads."""
        self.segmenter: ReferenceSegmenter | None = None
        self.dataset: Dataset | None = None
        self._outputs: list[tuple[int, Any]] = []
        self.results: list[dict] | None = None
        self.loaded_meta: dict | None = None
        self.memory_path: str | None = None
        """The memory file being restored (``--ckpt_path``), named in its error messages."""
        self.last_evals: dict = {}
        self.last_stats: dict = {}

    # ------------------------------------------------------------------ components
    def _new_negative_bank(self) -> MemoryBank:
        bank, infer = self.model_cfg.memory_bank_cfg, self.model_cfg.sam2_infer_cfgs
        return MemoryBank(bank.category_num, bank.length_negative, self.feature_dim(), infer.kmeans_k,
                          infer.n_pca_components)  # fmt: skip

    def _uses_negatives(self) -> bool:
        return self.test_mode == "test" and self.model_cfg.sam2_infer_cfgs.with_negative_refs

    def feature_dim(self) -> int:
        return encoder_feat_dim(self.model_cfg.encoder_cfg.name)

    def build_encoder(self) -> nn.Module:
        """The patch-feature encoder (DINOv2). Override to inject another one."""
        return build_encoder(self.model_cfg)

    def build_proposer(self) -> nn.Module:
        """The class-agnostic proposer (SAM2 point grid). Override to inject another one."""
        return build_proposer(self.model_cfg)

    def _check_checkpoints(self, encoder: bool, proposer: bool) -> None:
        """Every problem of the checkpoints this mode loads, in one message (before building)."""
        from no_time_to_train.checkpoints.preflight import check_checkpoints

        base = Sam2MatcherLightningModel
        cfg = self.model_cfg
        check_checkpoints(
            cfg.sam2_cfg_file, cfg.sam2_ckpt_path, cfg.encoder_cfg.name, cfg.encoder_ckpt_path, style="cli",
            # A subclass that injects its own network does not load that checkpoint.
            sam2=proposer and type(self).build_proposer is base.build_proposer,
            encoder_needed=encoder and type(self).build_encoder is base.build_encoder,
        )  # fmt: skip

    # ------------------------------------------------------------------ datasets
    def build_dataset(self, mode: str) -> Dataset:
        if mode in ("fill_memory", "vis_memory"):
            c = self.dataset_cfgs.fill_memory
            self._check_dataset_cfg(c, "fill_memory")
            ds = COCOMemoryFillCropDataset(
                root=c.root, json_file=c.json_file, memory_pkl=c.memory_pkl, image_size=c.image_size,
                memory_length=self.model_cfg.memory_bank_cfg.length, context_ratio=c.context_ratio,
                class_split=c.class_split, cat_names=c.cat_names,
            )  # fmt: skip
            self._check_class_count(len(ds.cat_ids), "dataset_cfgs.fill_memory")
            return ds
        if mode in ("test", "test_support"):
            c, where = self.target_cfg(mode)
            self._check_dataset_cfg(c, where)
            bank_ids = [int(i) for i in self.memory.mem_cat_ids.tolist()]
            return COCORefTestDataset(
                root=c.root, json_file=c.json_file, image_size=c.image_size, class_split=c.class_split,
                cat_names=c.cat_names, cat_ids=None if -1 in bank_ids else bank_ids,
            )  # fmt: skip
        if mode == "fill_memory_neg":
            return self._negative_dataset()
        return _Single()

    def target_cfg(self, mode: str) -> tuple[Any, str]:
        if mode != "test_support":
            return self.dataset_cfgs.test, "test"
        if self.dataset_cfgs.support is None:
            raise ConfigError(
                "test_support segments the support set: set dataset_cfgs.support (root, json_file; images with "
                "ground truth, disjoint from the test images), e.g. --model.init_args.dataset_cfgs.support.root DIR "
                "--model.init_args.dataset_cfgs.support.json_file FILE."
            )
        return self.dataset_cfgs.support, "support"

    def _negative_dataset(self) -> Dataset:
        pkl, js = self.negative_paths
        if not pkl or not js:
            raise ConfigError(
                "fill_memory_neg reads the negatives test_support wrote: pass --out_neg_pkl and --out_neg_json."
            )
        support, fill = self.target_cfg("test_support")[0], self.dataset_cfgs.fill_memory
        ds = COCOMemoryFillCropDataset(
            root=support.root, json_file=js, memory_pkl=pkl, image_size=fill.image_size,
            memory_length=self.model_cfg.memory_bank_cfg.length_negative, context_ratio=fill.context_ratio,
            class_split=fill.class_split, cat_names=fill.cat_names, where="--out_neg_json", at_most=True,
        )  # fmt: skip
        bank_ids = [int(i) for i in self.memory.mem_cat_ids.tolist()]
        if ds.cat_ids != bank_ids:
            raise ConfigError(
                f"The negatives in {js} select classes {ds.cat_ids} but the memory bank holds {bank_ids}: use the "
                "fill_memory class selection (dataset_cfgs.fill_memory.class_split / cat_names) here too."
            )
        return ds

    @staticmethod
    def _check_dataset_cfg(c: Any, where: str) -> None:
        if c.name != "coco":
            raise ConfigError(
                f"dataset_cfgs.{where}.name={c.name!r}: only 'coco' (COCO-format json) is supported."
            )
        if c.norm_img:
            raise ConfigError(
                f"dataset_cfgs.{where}.norm_img: images are normalised by the encoders; set it False."
            )

    def _check_class_count(self, n: int, where: str) -> None:
        want = self.model_cfg.memory_bank_cfg.category_num
        if n != want:
            raise ConfigError(
                f"{where} selects {n} classes but memory_bank_cfg.category_num is {want}. Pass "
                f"--model.init_args.model_cfg.memory_bank_cfg.category_num {n} (or select {want} classes)."
            )

    def setup(self, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            # After Lightning has installed its own SIGTERM handler, which would let the run go on.
            signals.install(self.trainer)
        if stage != "test":
            raise ConfigError(f"Only the `test` subcommand is supported (got {stage!r}); choose a mode with "
                              "--model.test_mode fill_memory|postprocess_memory|vis_memory|test.")  # fmt: skip
        if self.test_mode == "none":
            raise ConfigError(
                "Choose a mode: --model.test_mode fill_memory|postprocess_memory|vis_memory|test."
            )
        c = self.dataset_cfgs.support if self.test_mode == "test_support" else self.dataset_cfgs.test
        # Without an explicit class selection the test classes are the memory bank's, which are
        # known only once --ckpt_path is restored (after setup): build that dataset lazily. The
        # negatives' dataset is checked against the restored bank's classes.
        lazy = (self.test_mode in ("test", "test_support") and not (c is not None and (c.cat_names or c.class_split))
                or self.test_mode == "fill_memory_neg")  # fmt: skip
        self.dataset = None if lazy else self.build_dataset(self.test_mode)
        self._configure_cpu_threads()
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = self.model_cfg.allow_tf32
            torch.backends.cudnn.allow_tf32 = self.model_cfg.allow_tf32
        needs_encoder = self.test_mode in (
            "fill_memory",
            "vis_memory",
            "test",
            "test_support",
            "fill_memory_neg",
        )
        needs_proposer = self.test_mode in ("test", "test_support")
        if self.segmenter is None:
            self._check_checkpoints(needs_encoder, needs_proposer)
            self.segmenter = ReferenceSegmenter(
                self.memory,
                encoder=self.build_encoder() if needs_encoder else None,
                proposer=self.build_proposer() if needs_proposer else None,
                infer_cfg=self.model_cfg.sam2_infer_cfgs,
                compute_cfg=self.model_cfg.compute_cfgs,
                precision=self.model_cfg.encoder_precision,
                negatives=self.memory_neg if self._uses_negatives() else None,
            )
        self._outputs = []
        self.results = None

    def _configure_cpu_threads(self) -> None:
        """Each CPU process of the run gets its share of the cores (torch would give every one of
        them all the cores, and the processes would then wait for each other's threads)."""
        trainer = self._trainer
        self._cpu_share = None
        if trainer is not None and trainer.strategy.root_device.type != "cpu":
            return
        processes = max(1, int(getattr(trainer, "num_devices", 1) or 1)) if trainer is not None else 1
        n = configure_cpu_threads(self.model_cfg.compute_cfgs.num_threads, processes)
        # Without a fixed num_threads, each step uses what other processes leave free of this share.
        self._cpu_share = None if self.model_cfg.compute_cfgs.num_threads else n
        if self.global_rank == 0 and self.test_mode != "postprocess_memory":
            print(f"CPU: {n} thread(s) per process ({usable_cpus()} usable CPUs, {processes} process(es)).")

    def test_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.dataset = self.build_dataset(self.test_mode)
        # More workers than cores only adds contention (the configs ask for 4).
        workers = min(self.data_load_cfgs.workers, usable_cpus())
        workers = workers if self.test_mode != "postprocess_memory" else 0
        return DataLoader(
            self.dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=_identity_collate,
            pin_memory=torch.cuda.is_available(), drop_last=False,
            worker_init_fn=one_thread_worker if workers else None,
        )  # fmt: skip

    # ------------------------------------------------------------------ steps
    def on_test_start(self) -> None:
        if self.test_mode == "fill_memory" and self.memory.is_filled:
            raise ConfigError("fill_memory starts from an empty bank; do not pass --ckpt_path in this mode.")
        if self.test_mode in ("test", "vis_memory", "test_support", "fill_memory_neg"):
            memory_io.require_postprocessed(self.memory, f"--model.test_mode {self.test_mode}")
        if self.test_mode == "postprocess_memory" and not self.memory.is_filled:
            raise ConfigError("postprocess_memory needs --ckpt_path of a memory file written by fill_memory.")
        if self.test_mode == "fill_memory_neg" and self.memory_neg.is_filled:
            self.memory_neg = self._new_negative_bank().to(
                self.device
            )  # negatives are re-sampled: start empty
        if self.test_mode == "postprocess_memory_neg" and not self.memory_neg.is_filled:
            raise ConfigError(
                "postprocess_memory_neg needs --ckpt_path of a memory file written by fill_memory_neg."
            )
        if self._uses_negatives():
            memory_io.require_negatives(self.memory_neg, "--model.test_mode test")
        if self.test_mode in ("test", "test_support"):
            self._check_test_classes()
        self._started = time.perf_counter()

    def _check_test_classes(self) -> None:
        bank_ids = [int(c) for c in self.memory.mem_cat_ids.tolist()]
        ds = self.dataset
        if -1 not in bank_ids and bank_ids != ds.cat_ids:
            c = self.dataset_cfgs.test
            raise ConfigError(
                f"The memory bank holds category ids {bank_ids} but the test set selects {ds.cat_ids} "
                f"(class_split={c.class_split!r}, cat_names={c.cat_names!r}). Select the same classes for "
                "fill_memory and test."
            )

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # The progress bar says what runs ("fill_memory 3/6"), not Lightning's "Testing DataLoader 0".
        if batch_idx == 0 and self._trainer is not None:
            bar = getattr(self.trainer.progress_bar_callback, "test_progress_bar", None)
            if bar is not None:
                bar.set_description(self.test_mode)

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        item = batch[0]
        if getattr(self, "_cpu_share", None):
            adapt_cpu_threads(self._cpu_share)
        if self.test_mode in ("fill_memory", "fill_memory_neg"):
            entry = references.encode_crop(self.segmenter, item["image"], item["mask"], item["class_idx"])
            self._outputs.append((item["index"], (entry, item["slot"])))
        elif self.test_mode == "postprocess_memory":
            if self.memory.is_postprocessed:
                print("The memory is already postprocessed; writing it unchanged.")
            else:
                self.memory.postprocess()
        elif self.test_mode == "postprocess_memory_neg":
            if self.memory_neg.is_postprocessed:
                print("The negatives are already postprocessed; writing them unchanged.")
            else:
                self.memory_neg.postprocess()
        elif self.test_mode in ("test", "test_support"):
            dets = self.segmenter.predict(item["image"][None], tuple(item["ori_size"]))
            records = encode_detections(
                dets.masks, dets.boxes, dets.scores, dets.labels, item["img_id"], self.dataset.cat_inds_to_ids
            )
            self._outputs.append((item["index"], records))
            if self.test_mode == "test":
                self.after_prediction(item, dets)
        elif self.test_mode == "vis_memory":
            self.visualize_reference(item)

    def after_prediction(self, item: dict, dets: Any) -> None:
        """Per-image side outputs: online visualisation and plain exports (both off by default)."""
        opts, ds = self.model_cfg.test, self.dataset
        if opts.online_vis:
            from no_time_to_train.output.visualization import (
                gt_instances,
                load_original_image,
                prediction_path,
                visualize_prediction,
            )  # fmt: skip

            image = load_original_image(opts.imgs_path or ds.root, item["file_name"], item["ori_size"])
            names = list(self.model_cfg.class_names or ds.cat_names)
            out = prediction_path(self.model_cfg.dataset_name, item["file_name"])
            gt = gt_instances(ds, item["img_id"], image.shape[:2])
            visualize_prediction(image, dets, names, gt, opts.vis_thr, out)
        if opts.export_dir:
            from no_time_to_train.output.exports import export_prediction

            export_prediction(
                dets.masks.cpu().numpy(), dets.boxes.cpu().numpy(), dets.scores.tolist(), dets.labels.tolist(),
                item["file_name"], ds.cat_names, ds.cat_ids, opts.export_dir, opts.export_format,
            )  # fmt: skip

    def visualize_reference(self, item: dict) -> None:
        from no_time_to_train.output.visualization import visualize_memory_item

        device = self.memory.mem_feats_centers.device
        feats, weights = self.segmenter.encode_references(
            item["image"][None].to(device), item["mask"][None].to(device)
        )
        visualize_memory_item(item, feats[0], weights[0], self.memory, self.model_cfg.dataset_name)

    def on_test_epoch_end(self) -> None:
        if self.test_mode == "fill_memory":
            self._finish_fill()
        elif self.test_mode == "fill_memory_neg":
            items = gather_indexed(self._outputs)
            if len(items) != len(self.dataset):
                raise RuntimeError(
                    f"fill_memory_neg gathered {len(items)} negatives, expected {len(self.dataset)}"
                )
            if not items:
                raise DatasetError(
                    f"{self.negative_paths[0]} holds no negative reference: test_support found no false positive "
                    "scoring at least sam2_infer_cfgs.negative_score_thr. There is nothing to penalise; run test "
                    "without with_negative_refs (or lower negative_score_thr and run test_support again)."
                )
            references.fill_bank(self.memory_neg, [e for e, _ in items], [slot for _, slot in items])
            self.memory_neg.mem_cat_ids.copy_(self.memory.mem_cat_ids)
        elif self.test_mode in ("test", "test_support"):
            per_image = gather_indexed(self._outputs)
            self.results = [r for records in per_image for r in records]
            self._evaluate_and_report()
        self._outputs = []

    def _evaluate_and_report(self) -> None:
        """COCO evaluation and the per-class report, on the first process (so also when the
        module is driven by ``trainer.test`` without the CLI)."""
        # On every rank: Lightning's ``log_dir`` is a broadcast, so a rank-0-only call would wait
        # for ranks that have already left.
        report_dir = self.report_dir()
        if not self.trainer.is_global_zero:
            return
        seconds = time.perf_counter() - getattr(self, "_started", time.perf_counter())
        self.evaluate(self.results or [])
        if self.last_evals:
            from no_time_to_train.evaluation.reports import save_per_class_report

            save_per_class_report(self.last_evals, self.dataset, report_dir)
        # The run's figures in one machine-readable file (scripts/ablate.py collects them).
        n = len(self.dataset)
        summary = {"stats": self.last_stats, "images": n, "test_seconds": round(seconds, 3),
                   "seconds_per_image": round(seconds / max(n, 1), 4), "devices": self.trainer.world_size,
                   "encoder": self.model_cfg.encoder_cfg.name, "sam2_cfg_file": self.model_cfg.sam2_cfg_file}  # fmt: skip
        atomic_save_json(summary, os.path.join(report_dir, "summary.json"), indent=1)

    def report_dir(self) -> str:
        """Next to the logs; without a logger, next to the pictures of this dataset."""
        if self.trainer.loggers:
            return self.trainer.log_dir
        return os.path.join("results_analysis", self.model_cfg.dataset_name, "evaluation")

    def _finish_fill(self) -> None:
        items = gather_indexed(self._outputs)
        ds = self.dataset
        if len(items) != len(ds):
            raise RuntimeError(f"fill_memory gathered {len(items)} references, expected {len(ds)}")
        entries = [entry for entry, _ in items]
        references.fill_bank(self.memory, entries, [slot for _, slot in items])
        self.memory.mem_cat_ids.copy_(torch.tensor(ds.cat_ids, dtype=torch.long))
        self._check_reference_masks(entries)

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
    def evaluate(self, results: list[dict], verbose: bool = True) -> dict:
        ds = self.dataset
        if verbose and not ds.coco.getAnnIds(catIds=ds.cat_ids):
            print(
                f"Note: {self.dataset_cfgs.test.json_file} has no ground-truth annotations of the selected "
                "classes, so AP and AR are undefined (COCO reports them as -1). The predictions are still "
                "written (--export_result, model_cfg.test.export_dir)."
            )
        iou_types: tuple[str, ...] = ("bbox", "segm")
        gt = ds.coco.loadAnns(ds.coco.getAnnIds(catIds=ds.cat_ids))
        if gt and not any(has_mask(a) for a in gt):
            iou_types = ("bbox",)
            if verbose:
                print(
                    f"Note: {self.dataset_cfgs.test.json_file} has boxes but no masks (box-only ground truth): "
                    "only bbox AP is reported; segm AP needs mask ground truth (polygons or RLE). "
                    "no_time_to_train/dataset/sam_bbox_to_segm_batch.py can make masks from boxes."
                )
        stats, self.last_evals = evaluate_coco(
            ds.coco, results, cat_ids=ds.cat_ids, img_ids=ds.img_ids, iou_types=iou_types, verbose=verbose
        )
        self.last_stats = stats
        return stats

    # ------------------------------------------------------------------ memory files
    def memory_meta(self) -> dict:
        enc = self.model_cfg.encoder_cfg
        names = getattr(self.dataset, "cat_names", None) if self.test_mode == "fill_memory" else None
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
