"""Sizes of the memory files for a given number of classes and shots (random features).

File sizes do not depend on feature values, only on how many reference patches carry mask
weight; so this builds the reference crops of a generated dataset (real crop and mask sampling
code), gives every foreground patch a random feature, and writes the fill and postprocessed files
exactly as ``--out_path`` does.

    python scripts/memory_sizes.py --classes 20 --shots 30 --encoder dinov2_large
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.nn.functional as F

from no_time_to_train.data.datasets import COCOMemoryFillCropDataset
from no_time_to_train.data.splits import COCO_CLASSES, COCO_FEW_SHOT_CLASSES
from no_time_to_train.data.synthetic import generate_coco_dataset
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.pipeline import memory_io
from no_time_to_train.pipeline.builders import encoder_feat_dim


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=20, help="number of classes (<= 80)")
    p.add_argument("--shots", type=int, default=30)
    p.add_argument("--encoder", default="dinov2_large")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = COCO_FEW_SHOT_CLASSES + tuple(c for c in COCO_CLASSES if c not in COCO_FEW_SHOT_CLASSES)
    names = names[: args.classes]
    dim = encoder_feat_dim(args.encoder)
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_coco_dataset(
            os.path.join(tmp, "data"), n_train=max(8, (args.classes * args.shots + 3) // 4 + 8), n_val=0,
            class_names=names, n_shot=args.shots, seed=args.seed, min_size=320, max_size=480,
        )  # fmt: skip
        ds = COCOMemoryFillCropDataset(
            data["train_img_dir"], data["train_json"], data["reference_pkl"], memory_length=args.shots,
            cat_names=list(names),
        )  # fmt: skip
        gen = torch.Generator().manual_seed(args.seed)
        cls, slots, feats, weights = [], [], [], []
        for item in ds:
            w = F.interpolate(item["mask"][None, None], size=(37, 37), mode="nearest").flatten()
            fg = w > 0
            cls.append(item["class_idx"])
            slots.append(item["slot"])
            feats.append(torch.randn(int(fg.sum()), dim, generator=gen).half())
            weights.append(w[fg])
        bank = MemoryBank(len(names), args.shots, dim)
        bank.fill_packed(torch.tensor(cls), torch.tensor(slots), feats, weights)
        bank.mem_cat_ids.copy_(torch.tensor(ds.cat_ids))
        fill_path, post_path = (
            os.path.join(tmp, "memory.ckpt"),
            os.path.join(tmp, "memory_postprocessed.ckpt"),
        )
        memory_io.write(fill_path, bank, memory_io.make_meta(bank, args.encoder, 518))
        n_fg = bank.mem_fg_feats.shape[0]
        bank.postprocess()
        memory_io.write(post_path, bank, memory_io.make_meta(bank, args.encoder, 518))
        sizes = {"fill_bytes": os.path.getsize(fill_path), "postprocessed_bytes": os.path.getsize(post_path)}
    n_ref = len(ds)
    dense = n_ref * 1369 * dim * 4
    print(f"{len(names)} classes x {args.shots} shots, {args.encoder} (D={dim}), {n_ref} references")
    print(f"  foreground patches stored: {n_fg} ({n_fg / (n_ref * 1369):.1%} of {n_ref} x 1369)")
    print(f"  fill file:          {sizes['fill_bytes'] / 2**20:9.1f} MiB")
    print(f"  postprocessed file: {sizes['postprocessed_bytes'] / 2**20:9.2f} MiB")
    print(f"  (the raw float32 bank C x K x 1369 x D alone would be {dense / 2**30:.2f} GiB)")
    return sizes


if __name__ == "__main__":
    main()
