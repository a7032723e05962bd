"""Target images without ground truth: a folder searched recursively, or a subset of it.

Images are identified by their path relative to the root (POSIX separators), processed in sorted
order, and numbered 1, 2, ... in that order (the image ids of the dataset written at the end), so a
run, a resumed run and a run on several processes give the same ids.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from torch.utils.data import Dataset

from no_time_to_train.data.images import load_rgb, square_tensor
from no_time_to_train.errors import DatasetError, UserInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def list_images(root: str, images: str | None = None, where: str = "dataset_cfgs.test") -> list[str]:
    """Relative paths of the target images under ``root``, sorted.

    ``images``: None (every image under ``root``, recursively; other files are ignored), a glob
    relative to ``root`` (``**`` searches sub-folders, e.g. ``"**/*.jpg"``), or a ``.txt`` file
    listing one relative path per line (blank lines and ``#`` comments ignored; every listed file
    must exist). UserInputError naming the setting when the folder is missing or holds no image.
    """
    if not root or not os.path.isdir(root):
        raise UserInputError(f"{where}.root {root}: no such folder (the folder of the target images).")
    if images and images.endswith(".txt") and os.path.isfile(images):
        with open(images, encoding="utf-8") as f:
            rel = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        missing = [r for r in rel if not os.path.isfile(os.path.join(root, r))]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise UserInputError(
                f"{where}.images {images} lists {len(missing)} file(s) not found under {root}: {shown}. "
                "Paths in the list are relative to the root."
            )
        found = [Path(r).as_posix() for r in rel]
    elif images:
        found = [
            Path(os.path.relpath(p, root)).as_posix()
            for p in glob.glob(os.path.join(glob.escape(root), images), recursive=True)
            if os.path.isfile(p) and _is_image(p)
        ]
    else:
        found = [
            Path(os.path.relpath(os.path.join(d, n), root)).as_posix()
            for d, _, names in os.walk(root, followlinks=True)
            for n in names
            if _is_image(n)
        ]
    if any(part == ".." for r in found for part in Path(r).parts):
        raise UserInputError(f"{where}.images: paths must stay inside {root} (no '..').")
    found = sorted(dict.fromkeys(found))
    if not found:
        what = f" matching {images}" if images else ""
        raise UserInputError(
            f"{where}.root {root}: no image{what} ({', '.join(IMAGE_EXTENSIONS)}) in the folder or its sub-folders."
        )
    return found


class FolderTargetDataset(Dataset):
    """Target images of a folder without ground truth, squashed to ``image_size``.

    Item: ``{"index", "image" (3, S, S), "ori_size" (H, W), "img_id", "file_name"}``, or, for a
    file that cannot be read (truncated, not an image, too large), ``{"index", "img_id",
    "file_name", "error": reason}``: a long run skips it and lists it instead of stopping.

    ``cat_ids`` / ``cat_names``: the classes of the memory bank (no json names them here).
    """

    has_ground_truth = False

    def __init__(self, root: str, files: list[str], all_files: list[str], image_size: int,
                 cat_ids: list[int], cat_names: list[str]) -> None:  # fmt: skip
        """``files``: the images to process now (a resumed run skips those already done);
        ``all_files``: every image of the run, whose order gives the image ids."""
        self.root, self.image_size = root, image_size
        position = {f: i for i, f in enumerate(all_files)}
        self.files = list(files)
        self.img_ids = [position[f] + 1 for f in self.files]
        self.cat_ids, self.cat_names = list(cat_ids), list(cat_names)
        self.cat_inds_to_ids = dict(enumerate(self.cat_ids))

    def __len__(self) -> int:
        return len(self.files)

    def gt_by_image(self, img_id: int) -> dict:
        return {}  # no ground truth

    def __getitem__(self, index: int) -> dict:
        name = self.files[index]
        item = {"index": index, "img_id": self.img_ids[index], "file_name": name}
        try:
            img = load_rgb(
                os.path.join(self.root, name), hint="The file disappeared after the folder was listed."
            )
        except (DatasetError, OSError, ValueError) as e:  # truncated, not an image, too large, ...
            return {**item, "error": str(e)}
        image, ori = square_tensor(img, self.image_size)
        return {**item, "image": image, "ori_size": ori}
