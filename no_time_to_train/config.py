"""Typed configuration: the ``model_cfg`` / ``dataset_cfgs`` / ``data_load_cfgs`` trees.

Key names and defaults follow the reference YAMLs (``new_exps/coco_fewshot_10shot_Sam2L.yaml``), so
its files and its dotted CLI overrides work unchanged, e.g.
``--model.init_args.model_cfg.memory_bank_cfg.length 30`` or
``--model.init_args.model_cfg.sam2_infer_cfgs.iou_thr 0.5``. Because the trees are dataclasses,
jsonargparse type-checks every value and rejects unknown keys. Plain data: the checks of keys that
must agree with each other are in :mod:`no_time_to_train.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TestMode = Literal[
    "none", "fill_memory", "postprocess_memory", "vis_memory", "test",
    "test_support", "fill_memory_neg", "postprocess_memory_neg",
]  # fmt: skip


def _split_names(value: str | list[str] | None) -> list[str]:
    """``"boat,bird"`` or ``["boat", "bird"]`` -> ``["boat", "bird"]`` (blank items dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if str(s).strip()]


@dataclass
class InferenceCfg:
    """Test-time settings of every step after the networks (reference defaults; the YAML key is
    the reference's ``sam2_infer_cfgs``): the point grid and its IoU filter, NMS, top-k, the
    memory statistics of postprocess_memory, and negative-reference scoring."""

    points_per_side: int = 32
    """Point-grid prompts per image side (points_per_side**2 prompts)."""
    testing_point_bs: int = 256
    """Prompts per SAM2 mask-decoder call (memory/speed trade-off; results do not depend on it)."""
    iou_thr: float = 0.4
    """Keep a proposal if SAM2's predicted IoU is strictly above this."""
    nms_thr: float = 0.5
    """IoU threshold of the class-aware box NMS (ranked by SAM2's predicted IoU)."""
    num_out_instance: int = 100
    """Detections kept per image; NMS keeps 8x this many before the soft merge."""
    kmeans_k: int = 4
    """K-means centres per class computed by postprocess_memory (used by vis_memory)."""
    n_pca_components: int = 3
    """PCA components per class computed by postprocess_memory (vis_memory needs 3)."""
    cls_num_per_mask: int = 1
    """Labels per mask. Only 1 (argmax) is supported."""
    add_no_mem_embed: bool = False
    """Add SAM2's ``no_mem_embed`` to the image embedding like ``SAM2ImagePredictor`` does. The
    reference skips it; default False reproduces its numbers."""
    with_negative_refs: bool = False
    """Score with negative references too (the memory file's negatives, from test_support ->
    fill_memory_neg -> postprocess_memory_neg): a proposal that resembles a known false positive
    of its class more than the class itself is penalised (see README, Negative references)."""
    negative_score_thr: float = 0.2
    """Negative sampling keeps only false positives scoring at least this (the reference declares
    the key without reading it)."""


@dataclass
class ComputeCfg:
    """How the same numbers are computed (``--model.init_args.model_cfg.compute_cfgs.*``; this
    project's keys, not the reference's)."""

    pooling: Literal["separable", "dense"] = "separable"
    """Mask-feature pooling: 'separable' (same numbers, far fewer FLOPs) or 'dense' (reference)."""
    merge_chunk: int = 64
    """Memory budget of the soft merge's full-resolution work: about ``merge_chunk`` megapixels of
    floats (4 MiB each), whatever the image size. Results do not depend on it."""
    num_threads: int | None = None
    """CPU intra-op threads per process (None: the usable CPUs divided by the processes of the run
    on this machine). Results do not depend on it."""
    decoder_chunk: int | None = None
    """Prompts per pass of the fast SAM2 decoder (None: 32 on CPU, 64 on GPU). Results do not
    depend on it."""


@dataclass
class EncoderCfg:
    """The feature encoder of reference crops and target images."""

    name: str = "dinov2_large"
    """dinov2_{small,base,large,giant}[_reg]; dinov3_{small,small_plus,base,large,huge,7b},
    dinov3_sat_{large,7b}; clip_{b32,b16,l14,l14@336px}; PE-Spatial-{L14,G14}-448."""
    img_size: int = 518
    """Side every reference crop and target image is resized to for the encoder (the reference:
    518 for DINOv2 and PE, 592 for DINOv3, 224 or 336 for CLIP)."""
    patch_size: int = 14
    """The encoder's patch size; must be the named encoder's (14 for DINOv2, PE and CLIP L/14, 16
    for DINOv3 and CLIP B/16, 32 for CLIP B/32). The patch grid is ``img_size // patch_size``."""
    pixel_stats: Literal["default", "imagenet", "clip", "sat"] = "default"
    """Image normalisation: the family's as in the reference (ImageNet; CLIP's for CLIP, also
    ImageNet for the DINOv3 satellite models), or 'sat' for Meta's SAT-493M statistics."""


@dataclass
class MemoryBankCfg:
    """The per-class memory bank's size."""

    enable: bool = True
    """Accepted for the reference's configs and ignored: the memory bank is the method."""
    category_num: int = 20
    """Number of classes in the bank; must equal the number of selected classes."""
    length: int = 10
    """Reference instances (shots) per class."""
    length_negative: int = 10
    """Negative references (false positives of the support set) kept per class, at most."""


@dataclass
class TestOutputCfg:
    """Side outputs of test: pictures and per-image exports (``--model.init_args.model_cfg.test.*``)."""

    imgs_path: str | None = None
    """Folder of the original target images for visualisation (default: the test set's root)."""
    online_vis: bool = False
    """Save [GT | prediction] panels to results_analysis/<dataset_name>/<file_name> during test."""
    vis_thr: float = 0.5
    """Only predictions scoring above this are drawn."""
    export_dir: str | None = None
    """If set, write plain per-image outputs (instance masks with labels and scores) here."""
    export_format: Literal["png", "rle"] = "png"
    """Per-image export format: one PNG per instance plus a json index, or one RLE json per image."""


@dataclass
class ModelCfg:
    """The method and its networks (``--model.init_args.model_cfg.*``)."""

    name: str = "matching_baseline_noAMG"
    """The method; only the paper's matching_baseline_noAMG."""
    proposer: str = "sam2"
    """The class-agnostic mask proposer, a registered plug-in (``no_time_to_train.proposers``):
    'sam2' (the paper's SAM2 point grid, built from sam2_cfg_file / sam2_ckpt_path)."""
    proposer_args: dict[str, Any] = field(default_factory=dict)
    """Extra keyword options of the selected proposer's module (plug-in specific; empty for the
    paper's settings)."""
    sam2_cfg_file: str = "sam2_hiera_l.yaml"
    """SAM2 architecture (sam2_hiera_{t,s,b+,l}.yaml or sam2.1_hiera_*.yaml); must match the checkpoint."""
    sam2_ckpt_path: str | None = "./checkpoints/sam2_hiera_large.pt"
    """SAM2 checkpoint (an official .pt file; see checkpoints/README.md)."""
    sam2_infer_cfgs: InferenceCfg = field(default_factory=InferenceCfg)
    encoder_cfg: EncoderCfg = field(default_factory=EncoderCfg)
    encoder_ckpt_path: str | None = "./checkpoints/dinov2/dinov2_vitl14_pretrain.pth"
    """Encoder checkpoint (an official .pth file of encoder_cfg.name)."""
    memory_bank_cfg: MemoryBankCfg = field(default_factory=MemoryBankCfg)
    dataset_name: str = "coco"
    """Names the output folders of visualisations (results_analysis/<dataset_name>/)."""
    test: TestOutputCfg = field(default_factory=TestOutputCfg)
    class_names: list[str] | None = None
    """Display names per class index (defaults to the test set's selected names)."""
    compute_cfgs: ComputeCfg = field(default_factory=ComputeCfg)
    encoder_precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast the network forward passes (SAM2 encoder and decoder, DINOv2) on GPU; matching,
    NMS and the merge stay in float32. fp32 reproduces the reference."""
    allow_tf32: bool = True
    """Let float32 matmuls and convolutions use TF32 on Ampere or newer GPUs."""


@dataclass
class ImageSetCfg:
    """An image folder with its COCO json, and the classes selected from it."""

    name: str = "coco"
    """The json format; only 'coco'."""
    root: str = "./data/coco/val2017"
    """Folder of the images."""
    json_file: str | None = "./data/coco/annotations/instances_val2017.json"
    """COCO instances json of the images."""
    image_size: int = 1024
    """Side the images are resized to for the network that reads them."""
    norm_img: bool = False
    """Accepted for the reference's configs; must be False (the networks normalise their input)."""
    class_split: str | None = None
    """A named class split (e.g. few_shot_classes); see no_time_to_train/data/splits.py."""
    cat_names: list[str] | str | None = None
    """Class names (comma-separated string or list); takes precedence over class_split."""

    def __post_init__(self) -> None:
        self.cat_names = _split_names(self.cat_names)
        # `--...json_file null` reaches a dataclass nested in LightningCLI's init_args as the text
        # "None"; no json is named so.
        if isinstance(self.json_file, str) and self.json_file.strip().lower() in ("", "none", "null"):
            self.json_file = None


@dataclass
class ReferenceSetCfg(ImageSetCfg):
    """The reference set that fill_memory encodes (``dataset_cfgs.fill_memory``)."""

    root: str = "./data/coco/train2017"
    """Folder of the reference images."""
    json_file: str = "./data/coco/annotations/instances_train2017.json"
    """COCO instances json of the reference images."""
    image_size: int = 518
    """Reference crop size; must equal ``model_cfg.encoder_cfg.img_size``."""
    memory_pkl: str = "./data/coco/annotations_refsam2/memory/train2017_allClasses_length10_v1.pkl"
    """The sampled reference set (few_shot_sampling.py's .pkl or .json)."""
    memory_length: int = 10
    """Accepted for the reference's configs and ignored: the shots per class are
    ``model_cfg.memory_bank_cfg.length``."""
    context_ratio: float = 0.2
    """Context around a reference box: the crop is a square of side ``max(w, h) * (1 + context_ratio)``."""


@dataclass
class TargetSetCfg(ImageSetCfg):
    """Target images that test (``dataset_cfgs.test``) or test_support (``dataset_cfgs.support``)
    segments; ``image_size`` is the proposer's input. With a json (ground truth) the run reports
    COCO AP; test also takes a folder without one (``json_file: null``)."""

    json_file: str | None = "./data/coco/annotations/instances_val2017.json"
    """COCO instances json of the target images (ground truth for the AP); null: label the images
    under ``root`` (no AP; write them with --export_dataset)."""
    images: str | None = None
    """Without a json: which images under ``root`` (default every image, in sub-folders too): a
    glob relative to the root (``**/*.jpg``) or a .txt file listing relative paths."""
    with_query_points: bool = False
    """Accepted for the reference's configs and ignored (the point grid is always used)."""


@dataclass
class DatasetCfgs:
    """Data of each mode (``--model.init_args.dataset_cfgs.*``)."""

    fill_memory: ReferenceSetCfg = field(default_factory=ReferenceSetCfg)
    test: TargetSetCfg = field(default_factory=TargetSetCfg)
    support: TargetSetCfg | None = None
    """Images with ground truth that test_support segments to find false positives (negative
    references), e.g. part of train2017 disjoint from the test images."""


@dataclass
class DataLoadCfgs:
    """Data loading."""

    workers: int = 4
    """DataLoader worker processes per device (0 loads in the main process)."""
