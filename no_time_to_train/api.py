"""Python API: few-shot instance segmentation on single images.

    from no_time_to_train.api import FewShotSegmenter

    seg = FewShotSegmenter.from_checkpoints(["boat", "bird"])      # SAM2-L + DINOv2-L by default
    seg.add_reference("boat.jpg", "boat", masks=boat_mask)          # (H, W) or (N, H, W) masks
    seg.add_reference("bird.jpg", "bird", boxes=[[10, 20, 200, 180]])  # boxes -> masks with SAM2
    seg.save_memory("my_memory.ckpt")                                # reusable, also by the CLI
    pred = seg.predict("target.jpg")                                 # masks, boxes, scores, labels
    seg.label_folder("photos/", "labels.json")                       # a COCO dataset of a folder

It runs the same code as the CLI: the reference crop of the fill dataset, ``ReferenceSegmenter``
(reference encoding and the test-time pipeline), the ``MemoryBank`` statistics, and the memory-file
format of ``--out_path`` / ``--ckpt_path``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from no_time_to_train.checkpoints.preflight import check_checkpoints, resolve_preset
from no_time_to_train.config import InferenceCfg, ModelCfg
from no_time_to_train.data.images import as_pil_rgb, pil_to_tensor, square_tensor
from no_time_to_train.encoders import encoder_spec
from no_time_to_train.errors import UserInputError
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.pipeline import memory_io, references
from no_time_to_train.pipeline.builders import build_encoder, encoder_feat_dim
from no_time_to_train.pipeline.segmenter import ReferenceSegmenter
from no_time_to_train.proposers import build_proposer, proposer_plugin
from no_time_to_train.runtime import adapt_cpu_threads, configure_cpu_threads, usable_cpus
from no_time_to_train.validation import validate

ImageLike = str | os.PathLike | np.ndarray | Image.Image
_CPU_NOTE_SHOWN = False  # the CPU speed note is printed once per process


@dataclass
class Prediction:
    """Instances found in one image, sorted by descending score.

    ``masks`` (N, H, W) bool at the image's resolution; ``boxes`` (N, 4) inclusive pixel XYXY;
    ``scores`` (N,) in [0, 1]; ``labels`` (N,) class indices into ``class_names``.
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def label_names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels.tolist()]


@dataclass
class FolderPrediction:
    """One image of a folder: its path relative to the folder, size, and prediction, or why it
    could not be read (``error``; ``prediction`` is then None)."""

    file_name: str
    width: int
    height: int
    prediction: Prediction | None
    error: str | None = None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device | None, style: str = "api") -> None:
    """A CUDA device on a machine without one: one sentence in the caller's words ("api":
    ``device=``; "segment_image": ``--device``), instead of torch's driver traceback."""
    if device is None or torch.device(device).type != "cuda" or torch.cuda.is_available():
        return
    cli = style == "segment_image"
    given = f"--device {device}" if cli else f"device={str(device)!r}"
    cpu, flag = ("--device cpu", "--device") if cli else ("device='cpu'", "device")
    raise UserInputError(
        f"{given}: this machine has no usable CUDA GPU (torch finds none). Run on the CPU with {cpu}, or leave "
        f"{flag} out (a GPU is used when there is one)."
    )


class FewShotSegmenter:
    """Reference images in, instance masks out. See the module docstring for an example."""

    def __init__(
        self,
        class_names: Sequence[str],
        model_cfg: ModelCfg | None = None,
        device: str | torch.device | None = None,
        encoder: torch.nn.Module | None = None,
        proposer: torch.nn.Module | None = None,
        context_ratio: float = 0.2,
        checkpoint_style: str = "api",
    ):
        """Prefer ``from_checkpoints`` / ``from_config``; pass ``encoder`` / ``proposer`` to inject
        other networks (they follow the contracts of ``pipeline.segmenter``). Before building the
        networks, every checkpoint problem is reported at once, named as ``checkpoint_style``
        spells the settings ("api": ``encoder_ckpt=``; "segment_image": ``--encoder-ckpt``)."""
        if not class_names or len(set(class_names)) != len(class_names):
            raise UserInputError(
                f"class_names must be a non-empty list of distinct names, got {list(class_names)}."
            )
        self.class_names = list(class_names)
        self.context_ratio = context_ratio  # crop context around each reference, as fill_memory
        self.cfg = model_cfg or ModelCfg()
        if self.cfg.compute_cfgs.num_threads:
            configure_cpu_threads(self.cfg.compute_cfgs.num_threads)
        for warning in validate(self.cfg):
            print(f"Warning: {warning}")
        self.device = torch.device(device or default_device())
        check_device(self.device, checkpoint_style)
        check_checkpoints(
            self.cfg, style=checkpoint_style, proposer=proposer is None, encoder=encoder is None
        )
        self.encoder = (encoder if encoder is not None else build_encoder(self.cfg)).to(self.device).eval()
        self._own_proposer = proposer is None
        self.proposer = (
            (proposer if proposer is not None else build_proposer(self.cfg)).to(self.device).eval()
        )
        self.feat_dim = getattr(self.encoder, "feat_dim", None) or encoder_feat_dim(self.cfg.encoder_cfg.name)
        self._refs: list[references.ReferenceEntry] = []
        self._negs: list[references.ReferenceEntry] = []
        self.segmenter: ReferenceSegmenter | None = None
        self.progress = True
        """Progress bars in ``add_reference`` (several instances) and ``predict``; False: silent."""
        self.cat_ids = list(range(1, len(self.class_names) + 1))
        """Category id of each class in exported datasets (a memory file's own ids once loaded)."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoints(
        cls,
        class_names: Sequence[str],
        sam2_cfg: str = "sam2_hiera_l.yaml",
        sam2_ckpt: str | None = "./checkpoints/sam2_hiera_large.pt",
        encoder: str = "dinov2_large",
        encoder_ckpt: str | None = "./checkpoints/dinov2/dinov2_vitl14_pretrain.pth",
        device: str | None = None,
        precision: str = "fp32",
        *,
        preset: str | None = None,
        checkpoint_style: str = "api",
        **infer_cfgs: object,
    ) -> FewShotSegmenter:
        """Build from checkpoint paths; ``precision`` ("fp32", "bf16", "fp16") autocasts the
        networks; ``infer_cfgs`` override ``sam2_infer_cfgs`` keys (e.g. ``points_per_side=16``).

        ``preset`` sets the four checkpoint arguments at once (``checkpoints.preflight.PRESETS``):
        "paper" (SAM2-L + DINOv2-L, the defaults), "small" (SAM2-t + DINOv2-S) or "random" (the
        small pair with random weights, written to ``checkpoints/random/`` if absent; runs
        offline, outputs meaningless). It replaces those four arguments."""
        unknown = set(infer_cfgs) - {f.name for f in dataclasses.fields(InferenceCfg)}
        if unknown:
            raise UserInputError(f"Unknown sam2_infer_cfgs key(s): {sorted(unknown)}.")
        if preset is not None:
            chosen = resolve_preset(preset)
            sam2_cfg, sam2_ckpt = chosen.sam2_cfg, chosen.sam2_ckpt
            encoder, encoder_ckpt = chosen.encoder, chosen.encoder_ckpt
        cfg = ModelCfg(
            sam2_cfg_file=sam2_cfg,
            sam2_ckpt_path=sam2_ckpt,
            encoder_ckpt_path=encoder_ckpt,
            sam2_infer_cfgs=InferenceCfg(**infer_cfgs),  # type: ignore[arg-type]
            encoder_precision=precision,  # type: ignore[arg-type]
        )
        # The encoder's own input and patch sizes, as the reference's config for it.
        spec = encoder_spec(encoder)
        cfg.encoder_cfg.name, cfg.encoder_cfg.img_size, cfg.encoder_cfg.patch_size = (
            encoder,
            spec.img_size,
            spec.patch_size,
        )
        return cls(class_names, cfg, device, checkpoint_style=checkpoint_style)

    @classmethod
    def from_config(
        cls, config: str, class_names: Sequence[str], device: str | None = None
    ) -> FewShotSegmenter:
        """Build from a run config: its ``model.init_args.model_cfg`` (e.g. new_exps/*.yaml) and the
        reference crop's ``dataset_cfgs.fill_memory.context_ratio``, as the CLI's fill_memory uses them."""
        import yaml
        from jsonargparse import ArgumentParser

        from no_time_to_train.config import ReferenceSetCfg

        with open(config) as f:
            raw = yaml.safe_load(f) or {}
        init = raw.get("model", {}).get("init_args", {}) or {}
        fill = (init.get("dataset_cfgs") or {}).get("fill_memory") or {}
        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--model_cfg", type=ModelCfg)
        try:
            parsed = parser.parse_object({"model_cfg": init.get("model_cfg", {}) or {}})
        except Exception as e:
            raise UserInputError(f"{config}: invalid model_cfg: {e}") from e
        context = fill.get("context_ratio", ReferenceSetCfg.context_ratio)
        if not isinstance(context, (int, float)) or isinstance(context, bool) or context < 0:
            raise UserInputError(
                f"{config}: dataset_cfgs.fill_memory.context_ratio must be a number >= 0, got {context!r}."
            )
        return cls(
            class_names, parser.instantiate_classes(parsed).model_cfg, device, context_ratio=float(context)
        )

    # ------------------------------------------------------------------ references
    def _class_index(self, label: str | int) -> int:
        if isinstance(label, str):
            if label not in self.class_names:
                raise UserInputError(f"Unknown class {label!r}; the classes are {self.class_names}.")
            return self.class_names.index(label)
        if not 0 <= int(label) < len(self.class_names):
            raise UserInputError(f"Class index {label} is out of range for {len(self.class_names)} classes.")
        return int(label)

    @torch.inference_mode()
    def add_reference(
        self,
        image: ImageLike,
        label: str | int | Sequence[str | int],
        masks: np.ndarray | torch.Tensor | None = None,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> int:
        """Add the reference instances of one image; returns how many were added.

        Args:
            image: path, PIL image or (H, W[, 3]) array.
            label: class name or index, one for all instances or one per instance.
            masks: (H, W) or (N, H, W), non-zero inside each instance.
            boxes: (N, 4) pixel XYXY boxes. With ``masks`` they set the crop windows (as the
                annotation ``bbox`` in ``fill_memory``); alone, SAM2 turns them into masks. Without
                boxes the crop window is the mask's tight box.
        """
        entries = self._encode_instances(image, label, masks, boxes, "add_reference")
        self._refs += entries
        self.segmenter = None  # the memory must be rebuilt
        return len(entries)

    @torch.inference_mode()
    def add_negative(
        self,
        image: ImageLike,
        label: str | int | Sequence[str | int],
        masks: np.ndarray | torch.Tensor | None = None,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> int:
        """Add negative references: things that look like class ``label`` but are not (e.g. false
        positives the segmenter made). Same arguments as :meth:`add_reference`; returns how many.

        With any negative, ``predict`` scores with negatives (the CLI's ``with_negative_refs``): a
        proposal that resembles a negative of its class more than the class itself is penalised.
        """
        entries = self._encode_instances(image, label, masks, boxes, "add_negative")
        self._negs += entries
        self.segmenter = None
        return len(entries)

    def _encode_instances(self, image, label, masks, boxes, what: str) -> list[references.ReferenceEntry]:  # noqa: ANN001
        pil = as_pil_rgb(image)
        box_arr = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if masks is None:
            if box_arr is None:
                raise UserInputError(f"{what} needs masks or boxes for the instances.")
            masks = self.boxes_to_masks(pil, box_arr)
        m = torch.as_tensor(np.asarray(masks)).bool()
        m = m[None] if m.ndim == 2 else m
        if m.ndim != 3 or tuple(m.shape[1:]) != (pil.height, pil.width):
            raise UserInputError(
                f"Reference masks must be (H, W) or (N, H, W) with H, W = {pil.height}, {pil.width}; got {tuple(m.shape)}."
            )
        if box_arr is not None and len(box_arr) != m.shape[0]:
            raise UserInputError(f"Got {len(box_arr)} boxes for {m.shape[0]} masks.")
        labels = [label] * m.shape[0] if isinstance(label, (str, int)) else list(label)
        if len(labels) != m.shape[0]:
            raise UserInputError(f"Got {len(labels)} labels for {m.shape[0]} instances.")
        classes = [self._class_index(x) for x in labels]
        img = pil_to_tensor(pil)
        entries: list[references.ReferenceEntry] = []
        encoder = self._reference_encoder()
        size = self.cfg.encoder_cfg.img_size
        bar = tqdm(total=len(classes), desc=f"{what}: encoding", unit="instance", leave=False,
                   disable=not self.progress or len(classes) < 2)  # fmt: skip
        for i, (c, mask) in enumerate(zip(classes, m, strict=True)):
            if not mask.any():
                raise UserInputError(f"A reference mask of class {self.class_names[c]!r} is empty.")
            # A given box sets the crop window, as the annotation's bbox does in fill_memory.
            box = None
            if box_arr is not None:
                x1, y1, x2, y2 = box_arr[i].tolist()
                box = [x1, y1, x2 - x1, y2 - y1]
            entry = references.encode_reference(
                encoder, img, mask, c, box, self.context_ratio, size, self.device
            )
            if entry.is_empty:
                raise UserInputError(
                    f"A reference of class {self.class_names[c]!r} is too small: no patch of the "
                    f"{size}x{size} crop samples it. Use a larger instance."
                )
            entries.append(entry)
            bar.update()
        bar.close()
        return entries

    def _reference_encoder(self) -> ReferenceSegmenter:
        return ReferenceSegmenter(
            references.empty_bank(1, 1, self.feat_dim),
            encoder=self.encoder,
            precision=self.cfg.encoder_precision,
        )

    @torch.inference_mode()
    def boxes_to_masks(self, image: ImageLike, boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """(N, H, W) bool masks of pixel XYXY boxes, with the proposer's box-prompt segmenter (SAM2's
        official image predictor for ``sam2``: one box prompt, single mask each)."""
        plugin = proposer_plugin(self.cfg.proposer) if self._own_proposer else None
        segmenter = plugin.box_segmenter(self.proposer) if plugin and plugin.box_segmenter else None
        if segmenter is None:
            raise UserInputError(
                "boxes_to_masks needs a proposer that segments box prompts (sam2); this segmenter was built with "
                "another proposer: give the references as masks."
            )
        arr = np.asarray(as_pil_rgb(image))
        return segmenter.segment([arr], [np.asarray(boxes, dtype=np.float32).reshape(-1, 4)])[0]

    # ------------------------------------------------------------------ memory
    def build_memory(self) -> None:
        """Fill and postprocess the memory bank from the references added so far."""
        if not self._refs:
            raise UserInputError("No references: call add_reference first.")
        counts = np.bincount([e.class_idx for e in self._refs], minlength=len(self.class_names))
        missing = [n for n, k in zip(self.class_names, counts, strict=True) if k == 0]
        if missing:
            raise UserInputError(f"No reference for class(es) {missing}; add at least one per class.")
        inf = self.cfg.sam2_infer_cfgs
        bank = references.build_bank(self._refs, len(self.class_names), self.feat_dim, inf)
        negatives = None
        if self._negs:
            negatives = references.build_bank(self._negs, len(self.class_names), self.feat_dim, inf)
        self._use_bank(bank, negatives)

    def _use_bank(self, bank: MemoryBank, negatives: MemoryBank | None = None) -> None:
        self.segmenter = ReferenceSegmenter(
            bank.to(self.device),
            negatives=negatives.to(self.device) if negatives is not None else None,
            encoder=self.encoder,
            proposer=self.proposer,
            infer_cfg=self.cfg.sam2_infer_cfgs,
            compute_cfg=self.cfg.compute_cfgs,
            precision=self.cfg.encoder_precision,
        )

    def _meta(self, bank: MemoryBank) -> dict:
        enc = self.cfg.encoder_cfg
        return memory_io.make_meta(bank, enc.name, enc.img_size, self.class_names, patch_size=enc.patch_size)

    def save_memory(self, path: str) -> None:
        """Write the postprocessed memory (atomically); the CLI reads it with ``--ckpt_path``."""
        if self.segmenter is None:
            self.build_memory()
        bank = self.segmenter.memory
        memory_io.write(path, bank, self._meta(bank), negatives=self.segmenter.negatives)

    def load_memory(self, path: str) -> None:
        """Load a postprocessed memory file written by ``save_memory`` or the CLI."""
        ckpt = memory_io.read(path)
        meta = ckpt.get(memory_io.META_KEY) or {}
        inf = self.cfg.sam2_infer_cfgs
        c, k = meta.get("category_num", len(self.class_names)), meta.get("length", 1)
        bank = references.empty_bank(c, k, self.feat_dim, inf)
        if meta.get("class_names") and meta["class_names"] != self.class_names:
            raise UserInputError(
                f"{path} holds classes {meta['class_names']} but this segmenter has {self.class_names}."
            )
        if c != len(self.class_names):
            raise UserInputError(f"{path} holds {c} classes but this segmenter has {len(self.class_names)}.")
        memory_io.load_into(bank, ckpt, self._meta(bank), path)
        memory_io.require_postprocessed(
            bank, f"load_memory({path!r})", "a file written by postprocess_memory or save_memory"
        )
        negatives = None
        if memory_io.has_negatives(ckpt["state_dict"]):
            neg_len = int((meta.get("negatives") or {}).get("length", 1))
            negatives = references.empty_bank(c, neg_len, self.feat_dim, inf)
            memory_io.load_negative_state(negatives, ckpt["state_dict"], path)
            if not negatives.is_postprocessed:
                negatives = None  # fill_memory_neg's output: run postprocess_memory_neg to use them
        self._refs, self._negs = [], []
        ids = [int(i) for i in meta.get("cat_ids") or []]
        if len(ids) == c and -1 not in ids:
            self.cat_ids = ids
        self._use_bank(bank, negatives)

    # ------------------------------------------------------------------ inference
    def cpu_note(self, setting: str = "points_per_side={}") -> None:
        """On CPU with more than 16 x 16 prompts, say once per process what an image costs and
        what fewer prompts buy; ``setting`` spells the option in the caller's words."""
        global _CPU_NOTE_SHOWN
        pps = self.cfg.sam2_infer_cfgs.points_per_side
        if self.device.type == "cpu" and pps > 16 and not _CPU_NOTE_SHOWN and self._own_proposer:
            _CPU_NOTE_SHOWN = True
            print(f"Note: on CPU an image takes about a minute with {pps}x{pps} prompts (SAM2-L); "
                  f"{setting.format(16)} is about 4x faster (it may miss small objects).")  # fmt: skip

    @torch.inference_mode()
    def predict(self, image: ImageLike, score_thr: float = 0.0, progress: bool | None = None) -> Prediction:
        """Segment the reference classes in one image.

        ``progress`` (default: ``self.progress``) shows a bar over the prompt batches of SAM2
        (the long part on CPU), then the matching step."""
        if self.segmenter is None:
            self.build_memory()
        pil = as_pil_rgb(image)
        size = int(self.proposer.image_size)  # the proposer contract (models.proposals)
        x, ori = square_tensor(pil, size)
        self.cpu_note()
        show = self.progress if progress is None else progress
        threads = torch.get_num_threads()
        bar = None
        try:
            if self.device.type == "cpu" and not self.cfg.compute_cfgs.num_threads:
                adapt_cpu_threads(usable_cpus())  # the caller's thread setting is restored below
            if show and hasattr(self.proposer, "on_batch"):
                pps = self.cfg.sam2_infer_cfgs.points_per_side
                bar = tqdm(total=pps * pps, desc="predict: SAM2 prompts", unit="prompt", leave=False)
                self.proposer.on_batch = bar.update
            det = self.segmenter.predict(x[None].to(self.device), ori)
        finally:
            torch.set_num_threads(threads)
            if bar is not None:
                self.proposer.on_batch = None
                bar.close()
        keep = det.scores > score_thr
        # Scores are sorted: the kept ones are a prefix, and a slice shares the masks' memory.
        n = int(keep.sum())
        return Prediction(
            masks=det.masks[:n].cpu().numpy(),
            boxes=det.boxes[:n].cpu().numpy(),
            scores=det.scores[:n].float().cpu().numpy(),
            labels=det.labels[:n].cpu().numpy(),
            class_names=self.class_names,
        )

    # ------------------------------------------------------------------ folders
    def _folder_files(self, root: str, images: str | Sequence[str] | None) -> list[str]:
        from no_time_to_train.data.folders import list_images

        if images is None or isinstance(images, str):
            return list_images(root, images, where="label_folder: root")
        files = [str(f) for f in images]
        if not files:
            raise UserInputError("images: an empty list; name at least one image (relative to root).")
        return files

    def predict_folder(self, root: str, images: str | Sequence[str] | None = None, score_thr: float = 0.0,
                       skip: Sequence[str] = ()) -> Iterator[FolderPrediction]:  # fmt: skip
        """Segment every image under ``root`` (sub-folders too; other files ignored), one at a time,
        in sorted order of their relative paths. ``images``: a glob relative to ``root``
        (``"**/*.jpg"``), a .txt file of relative paths, or a list of relative paths. A file that
        cannot be read is yielded with its ``error`` instead of stopping the run; ``skip``: relative
        paths not to process."""
        from no_time_to_train.data.images import load_rgb
        from no_time_to_train.errors import DatasetError

        skip = set(skip)
        for name in self._folder_files(root, images):
            if name in skip:
                continue
            try:
                pil = load_rgb(
                    os.path.join(root, name), hint="The file disappeared after the folder was listed."
                )
            except (DatasetError, OSError, ValueError) as e:
                yield FolderPrediction(name, 0, 0, None, str(e))
                continue
            yield FolderPrediction(name, pil.width, pil.height, self.predict(pil, score_thr, progress=False))

    def label_folder(self, root: str, out_json: str, images: str | Sequence[str] | None = None,
                     score_thr: float = 0.0, max_per_image: int | None = None, segmentation: str = "rle",
                     overwrite: bool = False, results_json: str | None = None) -> dict:  # fmt: skip
        """Label the images under ``root`` (see :meth:`predict_folder`) into a COCO instances dataset
        ``out_json`` (relative ``file_name``, RLE or polygon masks, ``score``), written per image and
        resumable: called again after an interruption, it continues where it stopped (other
        settings are refused unless ``overwrite``). Unreadable files are listed in
        ``<out_json>.skipped.txt``. Returns the summary (images, annotations, per category, skipped)."""
        from no_time_to_train.output.coco_dataset import ExportSettings, FolderLabeller, labelling_manifest

        if self.segmenter is None:
            self.build_memory()
        files = self._folder_files(root, images)
        settings = ExportSettings(score_thr, max_per_image, segmentation)
        manifest = labelling_manifest(self.memory_digest(), self.cfg, root, files, settings)
        labeller = FolderLabeller(
            out_json, files, self.cat_ids, self.class_names, manifest, settings, overwrite
        )
        self.cpu_note()
        bar = tqdm(total=len(labeller.todo), desc="label_folder", unit="image", disable=not self.progress)
        for item in self.predict_folder(root, files, score_thr=0.0, skip=set(files) - set(labeller.todo)):
            labeller.add(item.file_name, item.width, item.height, item.prediction, item.error)
            bar.update()
        bar.close()
        return labeller.finish(results_json)

    def memory_digest(self) -> str:
        """SHA-256 of the memory's tensors (what a resumed labelling run must still use)."""
        import hashlib

        if self.segmenter is None:
            self.build_memory()
        h = hashlib.sha256()
        banks = [self.segmenter.memory] + (
            [self.segmenter.negatives] if self.segmenter.negatives is not None else []
        )
        for bank in banks:
            for key, value in sorted(bank.state_dict().items()):
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
