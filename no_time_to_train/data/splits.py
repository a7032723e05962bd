"""Class splits by name (COCO, COCO-20i, PASCAL VOC, LVIS).

Names are the ``categories[].name`` strings of the annotation files. Class *indices* are never
taken from these lists: datasets sort the selected category ids ascending and index them in that
order, so the order of a list here only matters for display.
"""

from __future__ import annotations

COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"),
    (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"),
    (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"),
    (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip

COCO_CLASSES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)

# COCO novel classes for few-shot detection: the 20 PASCAL VOC classes, in COCO-id order.
COCO_FEW_SHOT_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "boat", "bird", "cat",
    "dog", "horse", "sheep", "cow", "bottle", "chair", "couch", "potted plant", "dining table", "tv",
)  # fmt: skip

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

# Novel classes of the three standard VOC few-shot splits (the order used by the reference scripts).
VOC_NOVEL_SPLITS: dict[int, tuple[str, ...]] = {
    1: ("bus", "sofa", "cow", "bird", "motorbike"),
    2: ("horse", "aeroplane", "sofa", "cow", "bottle"),
    3: ("sheep", "sofa", "boat", "cat", "motorbike"),
}

# LVIS splits are read from the annotation file (``frequency`` field), see ``lvis_class_names``.
LVIS_SPLITS: dict[str, str | None] = {
    "lvis": None,
    "lvis_common": "c",
    "lvis_frequent": "f",
    "lvis_rare": "r",
    "lvis_minival": None,
    "lvis_minival_common": "c",
    "lvis_minival_frequent": "f",
    "lvis_minival_rare": "r",
}

METAINFO: dict[str, tuple[str, ...]] = {
    "default_classes": COCO_CLASSES,
    "coco": COCO_CLASSES,
    "few_shot_classes": COCO_FEW_SHOT_CLASSES,
    # COCO-20i folds: fold i takes every 4th class starting at class i (0-based) of the 80.
    **{f"coco_semantic_split_{i + 1}": COCO_CLASSES[i::4] for i in range(4)},
    **{f"pascal_voc_split_{s}": names for s, names in VOC_NOVEL_SPLITS.items()},
    "pascal_voc_all": VOC_CLASSES,
}


def is_lvis_split(name: str) -> bool:
    return name in LVIS_SPLITS


def lvis_class_names(split: str, categories: list[dict]) -> tuple[str, ...]:
    """Names of an LVIS split, taken from the json's categories (``frequency`` in r/c/f)."""
    freq = LVIS_SPLITS[split]
    return tuple(c["name"] for c in categories if freq is None or c.get("frequency") == freq)


def known_splits() -> list[str]:
    return sorted([*METAINFO, *LVIS_SPLITS])


def split_class_names(split: str, categories: list[dict] | None = None) -> tuple[str, ...]:
    """Class names of ``split``; LVIS splits need the json's ``categories`` list.

    Raises KeyError with the list of known splits for an unknown name.
    """
    if split in METAINFO:
        return METAINFO[split]
    if split in LVIS_SPLITS:
        if categories is None:
            raise KeyError(f"class split {split!r} is read from the LVIS json; pass its categories")
        return lvis_class_names(split, categories)
    raise KeyError(f"unknown class split {split!r}; known splits: {', '.join(known_splits())}")
