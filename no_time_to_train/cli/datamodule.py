"""The data of a run: which dataset the mode reads, its loader, and the CPU worker/thread policy.

``dataset_cfgs`` and ``data_load_cfgs`` stay under ``model.init_args`` (the reference's YAML keys);
the datamodule reads them from the LightningModule it serves, and the bank's classes once the
memory file is restored (test without an explicit class selection selects the bank's classes).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from no_time_to_train.data.datasets import COCOMemoryFillCropDataset, COCORefTestDataset
from no_time_to_train.data.folders import FolderTargetDataset, list_images
from no_time_to_train.errors import ConfigError, UserInputError
from no_time_to_train.runtime import adapt_cpu_threads, configure_cpu_threads, one_thread_worker, usable_cpus

SUPPORT_HINT = (
    "set dataset_cfgs.support (root, json_file; images with ground truth, disjoint from the test images), e.g. "
    "--model.init_args.dataset_cfgs.support.root DIR --model.init_args.dataset_cfgs.support.json_file FILE."
)


class _Single(Dataset):
    """One dummy item: the modes that work on the bank alone run their step exactly once."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        return {"index": index}


def _identity_collate(batch: list) -> list:
    return batch


class ReferenceDataModule(pl.LightningDataModule):
    """Datasets and loaders of the module's mode (``module.mode.data``)."""

    def __init__(self, module: Any):
        super().__init__()
        self.module = module
        self.dataset: Dataset | None = None
        self.cpu_share: int | None = None
        """Threads per process for each step on CPU (None: fixed by compute_cfgs.num_threads, or GPU)."""
        self.negative_paths: tuple[str | None, str | None] = (None, None)
        """(--out_neg_pkl, --out_neg_json): the negative reference set fill_memory_neg reads."""
        self.all_files: list[str] = []
        """Every target image of the run (relative paths), in the order of their ids."""
        self.all_ids: list[int] | None = None
        """Their image ids (None: 1, 2, ... in that order, a folder without a json)."""
        self.todo: list[str] | None = None
        """Without a json: the images still to do (a resumed run skips the finished ones)."""
        self.already_done = 0

    # ------------------------------------------------------------------ which images
    def target_cfg(self) -> tuple[Any, str]:
        """(config, key) of the images a segmenting mode reads: dataset_cfgs.test or .support."""
        cfgs = self.module.dataset_cfgs
        if self.module.mode.data != "support":
            return cfgs.test, "test"
        if cfgs.support is None:
            raise ConfigError(
                f"--model.test_mode {self.module.mode.name} segments the support set: {SUPPORT_HINT}"
            )
        return cfgs.support, "support"

    def is_folder(self) -> bool:
        """Targets given as a folder without ground truth (``dataset_cfgs.test.json_file: null``)."""
        return self.module.mode.data == "targets" and self.module.dataset_cfgs.test.json_file is None

    def is_lazy(self) -> bool:
        """Built at the first loader, after the memory file is restored: targets without an explicit
        class selection take the bank's classes, and negatives are checked against them."""
        data = self.module.mode.data
        if data == "negatives" or self.is_folder():
            return True
        if data in ("targets", "support"):
            c = self.target_cfg()[0]
            return not (c.cat_names or c.class_split)
        return False

    def build(self) -> Dataset:
        module, data = self.module, self.module.mode.data
        if data == "references":
            c = module.dataset_cfgs.fill_memory
            ds = COCOMemoryFillCropDataset(
                root=c.root, json_file=c.json_file, memory_pkl=c.memory_pkl, image_size=c.image_size,
                memory_length=module.model_cfg.memory_bank_cfg.length, context_ratio=c.context_ratio,
                class_split=c.class_split, cat_names=c.cat_names,
            )  # fmt: skip
            module.check_class_count(len(ds.cat_ids), "dataset_cfgs.fill_memory")
            return ds
        if self.is_folder():
            return self._folder()
        if data in ("targets", "support"):
            c, _ = self.target_cfg()
            bank_ids = module.bank_cat_ids()
            return COCORefTestDataset(
                root=c.root, json_file=c.json_file, image_size=c.image_size, class_split=c.class_split,
                cat_names=c.cat_names, cat_ids=None if -1 in bank_ids else bank_ids,
            )  # fmt: skip
        if data == "negatives":
            return self._negatives()
        return _Single()

    def _folder(self) -> Dataset:
        """The folder's images not done yet; classes and ids from the memory file."""
        module, c = self.module, self.module.dataset_cfgs.test
        ids = module.bank_cat_ids()
        names = module.class_names() or []
        if -1 in ids:  # a file written before it recorded category ids
            ids = list(range(1, len(ids) + 1))
        if len(names) != len(ids):
            names = [f"class_{i}" for i in ids]
        todo = self.all_files if self.todo is None else self.todo
        return FolderTargetDataset(c.root, todo, self.all_files, c.image_size, ids, names)

    def _prepare_folder(self) -> None:
        """List the folder; resume or start the dataset's shards."""
        c = self.module.dataset_cfgs.test
        self.all_files = list_images(c.root, c.images)
        done = self._prepare_export(resume=True)
        self.todo = [f for f in self.all_files if f not in done]
        self.already_done = len(self.all_files) - len(self.todo)
        out = self.module.outputs.export_dataset
        if self.already_done and self.module.global_rank == 0:
            print(f"Resuming {out}: {self.already_done} of {len(self.all_files)} images are done ({out}.parts); "
                  f"{len(self.todo)} to go.")  # fmt: skip

    def _prepare_export(self, resume: bool) -> set[str]:
        """Start (or, with ``resume``, resume) the shards of --export_dataset: one process decides,
        every process learns the outcome. Returns the images already done."""
        from no_time_to_train.output.coco_dataset import ShardStore

        module, out = self.module, self.module.outputs
        if not out.export_dataset:
            return set()
        store, strategy = ShardStore(out.export_dataset), self.trainer.strategy
        problem = None
        if module.global_rank == 0:
            try:
                # A set with ground truth is evaluated as a whole: its export always starts afresh.
                store.prepare(module.dataset_manifest(self.all_files), overwrite=out.overwrite or not resume)
            except UserInputError as e:
                problem = str(e)
        problem = strategy.broadcast(problem, src=0)
        if problem:
            raise UserInputError(problem)
        strategy.barrier("prepare_export")
        return set(store.done()) if resume else set()

    def _negatives(self) -> Dataset:
        pkl, js = self.negative_paths
        if not pkl or not js:
            raise ConfigError(
                "fill_memory_neg reads the negatives test_support wrote: pass --out_neg_pkl and --out_neg_json."
            )
        module, fill = self.module, self.module.dataset_cfgs.fill_memory
        if module.dataset_cfgs.support is None:
            raise ConfigError(
                f"--model.test_mode {module.mode.name} reads the support set's images: {SUPPORT_HINT}"
            )
        ds = COCOMemoryFillCropDataset(
            root=module.dataset_cfgs.support.root, json_file=js, memory_pkl=pkl, image_size=fill.image_size,
            memory_length=module.model_cfg.memory_bank_cfg.length_negative, context_ratio=fill.context_ratio,
            class_split=fill.class_split, cat_names=fill.cat_names, where="--out_neg_json", at_most=True,
        )  # fmt: skip
        bank_ids = module.bank_cat_ids()
        if ds.cat_ids != bank_ids:
            raise ConfigError(
                f"The negatives in {js} select classes {ds.cat_ids} but the memory bank holds {bank_ids}: use the "
                "fill_memory class selection (dataset_cfgs.fill_memory.class_split / cat_names) here too."
            )
        return ds

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        if self.is_folder():
            self._prepare_folder()
        self.dataset = None if self.is_lazy() else self.build()
        if self.module.mode.data == "targets" and not self.is_folder():
            self._prepare_export(resume=False)
        if self.dataset is not None and self.module.mode.reads_images and not self.is_folder():
            self._index_targets(self.dataset)
        self._configure_cpu_threads()

    def _index_targets(self, ds: Any) -> None:
        """Images of a json's target set, in id order (what a dataset export lists)."""
        from no_time_to_train.data.coco import image_file_name

        self.all_ids = list(ds.img_ids)
        self.all_files = [image_file_name(ds.coco.imgs[i]) for i in ds.img_ids]

    def _configure_cpu_threads(self) -> None:
        """Each CPU process of the run gets its share of the cores (torch would give every one of
        them all the cores, and the processes would then wait for each other's threads)."""
        trainer, module = self.trainer, self.module
        self.cpu_share = None
        if trainer is not None and trainer.strategy.root_device.type != "cpu":
            return
        processes = max(1, int(getattr(trainer, "num_devices", 1) or 1)) if trainer is not None else 1
        requested = module.model_cfg.compute_cfgs.num_threads
        n = configure_cpu_threads(requested, processes)
        # Without a fixed num_threads, each step uses what other processes leave free of this share.
        self.cpu_share = None if requested else n
        if module.global_rank == 0 and module.mode.data != "bank":
            print(f"CPU: {n} thread(s) per process ({usable_cpus()} usable CPUs, {processes} process(es)).")

    def test_dataloader(self) -> DataLoader:
        if self.dataset is None:
            self.dataset = self.build()
            if self.module.mode.reads_images and not self.is_folder():
                self._index_targets(self.dataset)
        # More workers than cores only adds contention (the configs ask for 4).
        workers = (
            min(self.module.data_load_cfgs.workers, usable_cpus()) if self.module.mode.data != "bank" else 0
        )
        return DataLoader(
            self.dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=_identity_collate,
            pin_memory=torch.cuda.is_available(), drop_last=False,
            worker_init_fn=one_thread_worker if workers else None,
        )  # fmt: skip

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.cpu_share:
            adapt_cpu_threads(self.cpu_share)
        return batch
