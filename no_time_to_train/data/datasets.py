"""COCO-format datasets: reference crops for the memory bank, and target images for test.

Class indexing: the selected category ids are sorted ascending and class index i is the i-th of
them (``cat_ids``); results carry the real category ids again (``cat_inds_to_ids``).
"""

from __future__ import annotations

import os
from collections import defaultdict

import torch
from torch.utils.data import Dataset

from no_time_to_train.data.coco import (
    check_image_size,
    coco_from_dict,
    image_file_name,
    load_coco,
    select_categories,
)  # fmt: skip
from no_time_to_train.data.coco_checks import has_mask
from no_time_to_train.data.images import load_rgb, pil_to_tensor, square_tensor
from no_time_to_train.data.reference_sets import load_reference_pkl
from no_time_to_train.errors import DatasetError
from no_time_to_train.pipeline.references import make_reference_crop


class COCOMemoryFillCropDataset(Dataset):
    """One item per reference instance of the reference pickle: a crop around its box.

    Item: ``{"index", "class_idx", "slot", "image" (3, S, S) in [0, 1], "mask" (S, S) in [0, 1],
    "img_info"}``; the crop is resized bicubic (image) and bilinear (mask) to S x S.
    """

    def __init__(
        self,
        root: str,
        json_file: str,
        memory_pkl: str,
        image_size: int = 518,
        memory_length: int = 10,
        context_ratio: float = 0.2,
        class_split: str | None = None,
        cat_names: list[str] | None = None,
        where: str = "dataset_cfgs.fill_memory",
        at_most: bool = False,
    ):
        """``at_most``: a class may have 0 to ``memory_length`` entries (negative references)
        instead of exactly ``memory_length``."""
        self.root, self.image_size, self.context_ratio = root, image_size, context_ratio
        self.coco = load_coco(json_file, f"{where}.json_file")
        self.cat_ids, self.cat_names = select_categories(self.coco, cat_names, class_split, where)
        self.cat_ids_to_inds = {c: i for i, c in enumerate(self.cat_ids)}
        refs = load_reference_pkl(memory_pkl)
        self.items: list[dict] = []
        for cat_id in self.cat_ids:
            entries = refs.get(cat_id)
            name = self.coco.cats[cat_id]["name"]
            if at_most:
                entries = list(entries or [])
                if len(entries) > memory_length:
                    raise DatasetError(
                        f"{memory_pkl} has {len(entries)} negative references for class '{name}' (id {cat_id}), "
                        f"more than memory_bank_cfg.length_negative ({memory_length})."
                    )
            elif not entries:
                raise DatasetError(
                    f"The reference pickle {memory_pkl} has no references for class '{name}' (id {cat_id}). "
                    "Re-create it for the selected classes (no_time_to_train/dataset/few_shot_sampling.py, or "
                    "coco_to_pkl.py for a custom json), or select fewer classes."
                )
            if not at_most and len(entries) != memory_length:
                raise DatasetError(
                    f"The reference pickle {memory_pkl} has {len(entries)} references for class '{name}' "
                    f"(id {cat_id}) but memory_bank_cfg.length is {memory_length}. Use the same number of shots "
                    "for sampling and for --model.init_args.model_cfg.memory_bank_cfg.length."
                )
            for slot, e in enumerate(entries):
                ann_id = e["ann_ids"][0]
                if ann_id not in self.coco.anns:
                    raise DatasetError(f"{memory_pkl}: annotation id {ann_id} is not in {json_file}.")
                ann = self.coco.anns[ann_id]
                if ann["category_id"] != cat_id:
                    raise DatasetError(
                        f"{memory_pkl}: annotation {ann_id} has category {ann['category_id']}, listed under {cat_id}."
                    )
                if not has_mask(ann):
                    raise DatasetError(
                        f"{json_file}: annotation {ann_id} (a reference of class '{name}' in {memory_pkl}) has no "
                        "usable segmentation mask; references need masks. Turn boxes into masks with "
                        "`python no_time_to_train/dataset/sam_bbox_to_segm_batch.py` and pass its *_with_segm.json."
                    )
                self.items.append({"cat_id": cat_id, "slot": slot, "ann_id": ann_id, "img_id": e["img_id"]})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        ann = self.coco.anns[item["ann_id"]]
        info = self.coco.imgs[ann["image_id"]]
        img = load_rgb(os.path.join(self.root, image_file_name(info)))
        check_image_size(img, info, self.root)
        mask = torch.from_numpy(self.coco.annToMask(ann))
        image, mask_r, window = make_reference_crop(
            pil_to_tensor(img), mask, ann["bbox"], self.context_ratio, self.image_size
        )
        return {
            "index": index,
            "class_idx": self.cat_ids_to_inds[item["cat_id"]],
            "slot": item["slot"],
            "image": image,
            "mask": mask_r,
            "img_info": {"id": info["id"], "file_name": image_file_name(info), "ori_height": info["height"],
                         "ori_width": info["width"], "ann_id": item["ann_id"], "crop_xyxy": window},
        }  # fmt: skip


class COCORefTestDataset(Dataset):
    """Target images in ascending image-id order, squashed to ``image_size``.

    Item: ``{"index", "image" (3, S, S) in [0, 1], "ori_size" (H, W), "img_id", "file_name"}``.
    ``coco`` holds the ground truth restricted to the selected classes (all images and all
    categories kept), so COCOeval over it gives the AP of those classes (nAP on a split).
    """

    def __init__(
        self,
        root: str,
        json_file: str,
        image_size: int = 1024,
        class_split: str | None = None,
        cat_names: list[str] | None = None,
        cat_ids: list[int] | None = None,
        where: str = "dataset_cfgs.test",
    ):
        self.root, self.image_size = root, image_size
        coco = load_coco(json_file, f"{where}.json_file", role="test")
        if cat_ids is not None and not (cat_names or class_split):
            missing = [c for c in cat_ids if c not in coco.cats]
            if missing:
                raise DatasetError(f"Category ids {missing} of the memory bank are not in {json_file}.")
            self.cat_ids = sorted(cat_ids)
        else:
            self.cat_ids, _ = select_categories(coco, cat_names, class_split, where)
        self.cat_names = [coco.cats[c]["name"] for c in self.cat_ids]
        self.cat_inds_to_ids = dict(enumerate(self.cat_ids))
        keep = set(self.cat_ids)
        # Ground truth of the selected classes only. Annotations may also name categories that the
        # json does not list (the custom example's targets keep every COCO annotation).
        if any(a["category_id"] not in keep for a in coco.dataset.get("annotations", [])):
            data = dict(coco.dataset)
            data["annotations"] = [a for a in coco.dataset.get("annotations", []) if a["category_id"] in keep]
            coco = coco_from_dict(data)
        self.coco = coco
        self.img_ids = sorted(coco.getImgIds())
        if not self.img_ids:
            raise DatasetError(
                f"The target annotation file {json_file} lists no images: there is nothing to segment or "
                f"evaluate. Point {where}.json_file at the json of your target images."
            )

    def __len__(self) -> int:
        return len(self.img_ids)

    def gt_by_image(self, img_id: int) -> dict[int, list[dict]]:
        """GT annotations of the selected classes in one image, grouped by class index."""
        out: dict[int, list[dict]] = defaultdict(list)
        inds = {c: i for i, c in enumerate(self.cat_ids)}
        for ann in self.coco.imgToAnns.get(img_id, []):
            out[inds[ann["category_id"]]].append(ann)
        return dict(out)

    def __getitem__(self, index: int) -> dict:
        img_id = self.img_ids[index]
        info = self.coco.imgs[img_id]
        img = load_rgb(os.path.join(self.root, image_file_name(info)))
        check_image_size(img, info, self.root)
        image, ori = square_tensor(img, self.image_size)
        return {
            "index": index,
            "image": image,
            "ori_size": ori,
            "img_id": img_id,
            "file_name": image_file_name(info),
        }
