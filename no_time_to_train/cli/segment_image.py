"""One-image command: references in, masks out, no dataset layout or config needed.

    python -m no_time_to_train.segment_image --refs REFS --images a.jpg b.jpg --out out/

REFS is either a folder ``REFS/<class name>/<image>`` with a mask ``<image stem>_mask.png`` next to
each reference image (non-zero pixels are the object; several distinct non-zero values are several
instances), or a COCO json (``--refs refs.json --ref-images DIR``) whose annotations have masks
(polygons or RLE) or only boxes (turned into masks with SAM2). For every target image it writes
``<out>/<stem>.json`` (instances: class, score, XYXY box, RLE mask), ``<out>/<stem>_overlay.png``,
and with ``--save-masks`` one PNG per instance; with ``--coco-out OUT.json`` also one COCO instances
dataset of all targets (file names relative to their common folder; resumable). A target that
cannot be read is skipped and named at the end, instead of stopping the batch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from no_time_to_train.api import FewShotSegmenter, Prediction
from no_time_to_train.checkpoints.preflight import PRESETS, resolve_preset
from no_time_to_train.data.coco import image_file_name, load_coco
from no_time_to_train.data.images import load_rgb
from no_time_to_train.errors import DatasetError, UserInputError, run_reporting_user_errors
from no_time_to_train.pipeline import memory_io

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _read_mask(mask_path: Path, image_path: Path) -> np.ndarray:
    """``(N, H, W)`` instance masks of one reference image; DatasetError naming the mask file."""
    try:
        with Image.open(mask_path) as m:
            arr = np.asarray(m)
        with Image.open(image_path) as im:
            size = im.size
    except OSError as e:
        raise DatasetError(f"Could not read the mask {mask_path} or its image {image_path} ({e}).") from e
    arr = arr if arr.ndim == 2 else arr[..., :3].max(axis=2)
    if (arr.shape[1], arr.shape[0]) != size:
        raise DatasetError(
            f"Mask {mask_path} is {arr.shape[1]}x{arr.shape[0]} but its image {image_path} is {size[0]}x{size[1]}; "
            "a mask must have its image's size."
        )
    values = [v for v in np.unique(arr) if v != 0]
    if not values:
        raise DatasetError(f"Mask {mask_path} is empty (all zero).")
    return np.stack([arr == v for v in values])


def read_reference_folder(folder: str) -> list[tuple[str, str, np.ndarray]]:
    """``(class name, image path, (N, H, W) masks)`` for every reference image of the folder."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"--refs {folder}: no such folder (or COCO json).")
    refs = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(
            p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.stem.endswith("_mask")
        )
        if not images:
            raise DatasetError(
                f"Class folder {class_dir} has no reference image ({', '.join(IMAGE_EXTS)} with a "
                "<stem>_mask.png next to each). Add references or remove the folder."
            )
        for img in images:
            mask_path = img.with_name(f"{img.stem}_mask.png")
            if not mask_path.is_file():
                raise DatasetError(f"Reference {img} has no mask: expected {mask_path} (non-zero = object).")
            refs.append((class_dir.name, str(img), _read_mask(mask_path, img)))
    if not refs:
        raise DatasetError(
            f"No references in {folder}: expected {folder}/<class name>/<image> with <image stem>_mask.png."
        )
    return refs


def read_reference_json(json_file: str, image_dir: str) -> list[tuple[str, str, np.ndarray | None, list]]:
    """``(class name, image path, masks or None, boxes XYXY)`` per annotation of a COCO json."""
    coco = load_coco(json_file, "--refs")
    refs = []
    for ann in coco.dataset.get("annotations", []):
        info = coco.imgs[ann["image_id"]]
        name = coco.cats[ann["category_id"]]["name"]
        path = os.path.join(image_dir, image_file_name(info))
        x, y, w, h = ann["bbox"]
        mask = coco.annToMask(ann)[None].astype(bool) if ann.get("segmentation") else None
        refs.append((name, path, mask, [[x, y, x + w, y + h]]))
    if not refs:
        raise DatasetError(f"{json_file} has no annotations to use as references.")
    return refs


def write_outputs(
    pred: Prediction, image: Image.Image, out_dir: str, stem: str, save_masks: bool, file_name: str | None = None,
) -> list[str]:  # fmt: skip
    """``<stem>.json`` (the per-image schema of ``output.exports``, with RLE masks), the overlay
    ``<stem>_overlay.png`` and, with ``save_masks``, ``<stem>_inst000.png``, ... of one target."""
    from no_time_to_train.output.drawing import draw_instances, save_image
    from no_time_to_train.output.exports import instance_records, write_instances

    records = instance_records(pred.boxes, pred.scores.tolist(), pred.labels.tolist(), pred.class_names)
    paths = write_instances(
        out_dir, f"{stem}.json", file_name or stem, pred.masks, records, rle=True,
        png_prefix=f"{stem}_inst" if save_masks else None,
    )  # fmt: skip
    overlay = draw_instances(
        np.asarray(image), pred.masks, pred.boxes, pred.labels, pred.scores, pred.class_names
    )
    return [*paths, save_image(os.path.join(out_dir, f"{stem}_overlay.png"), overlay)]


def expand_images(items: list[str]) -> list[str]:
    """Files as given; folders -> their images (sorted); globs -> their matches (sorted). A
    pattern or folder that yields no image is an error naming it."""
    import glob

    out: list[str] = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if Path(p).suffix.lower() in IMAGE_EXTS)
        else:
            found = [item]
        if not found:
            raise DatasetError(f"--images {item}: no image there ({', '.join(IMAGE_EXTS)}).")
        out += found
    return list(dict.fromkeys(out))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default after its help."""


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a flag is matched exactly, never by a prefix of it.
    p = argparse.ArgumentParser(prog="python -m no_time_to_train.segment_image", description=__doc__,
                                formatter_class=_HelpFormatter, allow_abbrev=False)  # fmt: skip
    p.add_argument("--refs", help="reference folder or COCO json (not needed with --memory)")
    p.add_argument("--ref-images", help="image folder of a COCO-json --refs")
    p.add_argument("--memory", help="load a memory file (from --save-memory or the CLI) instead of --refs")
    p.add_argument("--classes", help="comma-separated class names with --memory (default: those in the file)")
    p.add_argument("--images", nargs="+", required=True,
                   help="target images: files, folders (every image in them) or globs ('imgs/*.jpg')")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-thr", type=float, default=0.3, help="keep instances scoring above this")
    p.add_argument("--save-masks", action="store_true", help="also write one PNG per instance")
    p.add_argument("--save-memory", help="write the memory built from --refs here")
    p.add_argument("--coco-out", metavar="OUT.json",
                   help="also write every target as one COCO instances dataset (file names relative to the images' "
                        "common folder; written per image, a stopped run resumes with the same command)")  # fmt: skip
    p.add_argument("--coco-segmentation", choices=("rle", "polygon"), default="rle",
                   help="mask format of --coco-out (default: %(default)s)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="--coco-out: start a stopped run with other settings over")  # fmt: skip
    p.add_argument("--negatives", help="negative references: a folder laid out like --refs "
                   "(<class name>/<image> + <stem>_mask.png) of things that are NOT the class (e.g. its false "
                   "positives); proposals resembling them more than the class are penalised")  # fmt: skip
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="the four checkpoint settings at once: paper (SAM2-L + DINOv2-L, default), small "
                        "(SAM2-t + DINOv2-S) or random (random-weight stand-ins, written to "
                        "checkpoints/random/ if absent: runs offline, meaningless outputs); the flags "
                        "below override it")  # fmt: skip
    p.add_argument("--sam2-cfg", help="SAM2 config (default: the preset's)")
    p.add_argument("--sam2-ckpt", help="SAM2 checkpoint (default: the preset's)")
    p.add_argument("--encoder", help="encoder name (default: the preset's)")
    p.add_argument("--encoder-ckpt", help="encoder checkpoint (default: the preset's)")
    p.add_argument("--points-per-side", type=int, default=32,
                   help="prompt grid of the proposer: N x N points per image (16 is about 4x faster on CPU and may "
                        "miss small objects)")  # fmt: skip
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.refs and not args.memory:
        p.error("give --refs (references) or --memory (a saved memory file)")
    if args.negatives and args.memory:
        p.error(
            "--negatives go with --refs (a memory from --save-memory keeps the negatives it was built with)"
        )
    if args.refs and args.refs.endswith(".json") and not args.ref_images:
        p.error("--refs with a COCO json needs --ref-images (the folder of its images)")
    return args


def run(args: argparse.Namespace) -> list[str]:
    from no_time_to_train.api import check_device

    check_device(args.device, "segment_image")  # before any file is read
    images = expand_images(args.images)
    root = common_root(images)
    rels = [Path(os.path.relpath(p, root)).as_posix() for p in images]
    check_output_names(rels)  # before any network is built
    if args.memory:
        meta = memory_io.read(args.memory).get(memory_io.META_KEY) or {}
        classes = args.classes.split(",") if args.classes else meta.get("class_names")
        if not classes:
            raise UserInputError(f"{args.memory} does not name its classes; pass --classes.")
        refs = []
    elif args.refs.endswith(".json"):
        refs = read_reference_json(args.refs, args.ref_images)
        classes = sorted({r[0] for r in refs})
    else:
        refs = [(n, p, m, None) for n, p, m in read_reference_folder(args.refs)]
        classes = sorted({r[0] for r in refs})
    preset = resolve_preset(args.preset)
    seg = FewShotSegmenter.from_checkpoints(
        classes, sam2_cfg=args.sam2_cfg or preset.sam2_cfg, sam2_ckpt=args.sam2_ckpt or preset.sam2_ckpt,
        encoder=args.encoder or preset.encoder, encoder_ckpt=args.encoder_ckpt or preset.encoder_ckpt,
        device=args.device, points_per_side=args.points_per_side, checkpoint_style="segment_image",
    )  # fmt: skip
    if args.memory:
        seg.load_memory(args.memory)
    seg.cpu_note("--points-per-side {}")  # before the references: in this command's own flag spelling
    for name, path, masks, boxes in tqdm(refs, desc="references", unit="image", disable=not refs):
        seg.add_reference(path, name, masks=masks, boxes=boxes)  # a json box sets the crop window
    negatives = read_reference_folder(args.negatives) if args.negatives else []
    unknown = sorted({n for n, _, _ in negatives} - set(classes))
    if unknown:
        raise UserInputError(
            f"--negatives {args.negatives}: class folder(s) {unknown} are not reference classes {classes}."
        )
    for name, path, masks in tqdm(negatives, desc="negatives", unit="image", disable=not negatives):
        seg.add_negative(path, name, masks=masks)
    if args.save_memory:
        seg.save_memory(args.save_memory)
        print(f"Memory written to {args.save_memory} (reuse it with --memory {args.save_memory}).")
    written = []
    labeller = coco_labeller(seg, args, images, root) if args.coco_out else None
    todo = set(labeller.todo) if labeller else None
    skipped = []
    for path, rel in tqdm(list(zip(images, rels, strict=True)), desc="targets", unit="image"):
        if todo is not None and rel not in todo:
            continue  # done by the run this one resumes
        try:
            image = load_rgb(path, hint="Check the --images paths.")
        except (DatasetError, OSError, ValueError) as e:
            skipped.append(path)
            tqdm.write(f"{path}: skipped ({' '.join(str(e).split())})")
            if labeller:
                labeller.add(rel, 0, 0, None, str(e))
            continue
        pred = seg.predict(image, score_thr=args.score_thr)
        # Outputs mirror the inputs' folders under --out: sub/flower.jpg -> <out>/sub/flower.json.
        folder, stem = os.path.join(args.out, os.path.dirname(rel)), Path(rel).stem
        written += write_outputs(pred, image, folder, stem, args.save_masks, rel)
        if labeller:
            labeller.add(rel, image.width, image.height, pred)
        tqdm.write(f"{path}: {len(pred)} instance(s) -> {os.path.join(folder, stem)}_overlay.png")
    if labeller:
        labeller.finish()
        written.append(args.coco_out)
    if skipped:
        print(
            f"{len(skipped)} of {len(images)} target(s) could not be read and were skipped: {', '.join(skipped)}"
        )
    return written


def check_output_names(rels: list[str]) -> None:
    """Two targets whose outputs would have one name (``a/x.jpg`` and ``a/x.png``) are refused
    before any work: one result would silently replace the other."""
    seen: dict[str, str] = {}
    for rel in rels:
        key = Path(rel).with_suffix("").as_posix()
        if key in seen:
            raise UserInputError(
                f"--images: {seen[key]} and {rel} would write the same outputs ({key}.json, {key}_overlay.png); "
                "rename one, or segment them in two runs with different --out folders."
            )
        seen[key] = rel


def common_root(paths: list[str]) -> str:
    """The deepest folder holding every path (file names in --coco-out are relative to it)."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def coco_labeller(seg: FewShotSegmenter, args: argparse.Namespace, images: list[str], root: str):  # noqa: ANN201

    from no_time_to_train.output.coco_dataset import ExportSettings, FolderLabeller, labelling_manifest

    files = [Path(os.path.relpath(p, root)).as_posix() for p in images]
    settings = ExportSettings(args.score_thr, None, args.coco_segmentation)
    manifest = labelling_manifest(seg.memory_digest(), seg.cfg, root, files, settings)
    return FolderLabeller(
        args.coco_out, files, seg.cat_ids, seg.class_names, manifest, settings, args.overwrite
    )


def main(argv: list[str] | None = None) -> int:
    return run_reporting_user_errors(run, parse_args(argv), code=2)


if __name__ == "__main__":
    sys.exit(main())
