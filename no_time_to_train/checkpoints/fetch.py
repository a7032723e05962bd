"""Download official checkpoints: progress bar, size and SHA-256 checks, strict load, atomic write.

The quick start uses it to fetch the small official pair (SAM2 Hiera-T + DINOv2 ViT-S/14, about
240 MB) when no real checkpoint is present and the network is reachable::

    python -m no_time_to_train.checkpoints.fetch small [--dest checkpoints] [--mirror URL]

Every file is streamed to a temporary file next to its destination while its SHA-256 is computed;
it is renamed into place only after (1) the byte count equals the server's Content-Length, (2) the
hash equals the expected one where one is known (``--sha256`` for one file, or a ``SHA256SUMS``
file next to the files on a mirror: ``<hex>  <relative path>`` lines), and (3) the file loads
strictly into its architecture (every key and shape, as at run time). An interrupted or failed
download leaves nothing behind. Meta publishes no checksums for these two files; each download's
hash is printed and appended to ``<dest>/SHA256SUMS`` so that a copy can be checked later.

``--mirror URL`` (or ``$NTT_CHECKPOINT_MIRROR``) fetches ``URL/<relative path>`` instead of Meta's
servers: a local folder laid out like ``checkpoints/`` (``file:///path``) or an internal HTTP
server. Exit status: 0 downloaded (or already present), 3 unreachable (offline), 1 any other failure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from no_time_to_train.checkpoints.registry import DINOV2_VARIANTS, SAM2_CHECKPOINT_FILES
from no_time_to_train.errors import CheckpointError

MIRROR_ENV = "NTT_CHECKPOINT_MIRROR"
SUMS_FILE = "SHA256SUMS"
EXIT_OFFLINE = 3
_CHUNK = 1 << 20


class Unreachable(CheckpointError):
    """The server could not be reached at all (no network, DNS failure, refused connection)."""


@dataclass(frozen=True)
class OfficialFile:
    """One file of a download set: where it comes from and where it goes under ``--dest``."""

    url: str
    rel_path: str  # path under the checkpoints folder, as the configs name it
    approx_mb: int
    check: Callable[[Path], None]  # strict load into the architecture; raises CheckpointError


def _check_sam2(cfg_file: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        from no_time_to_train.checkpoints.loading import build_sam2

        build_sam2(cfg_file, path)

    return check


def _check_dinov2(name: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        from no_time_to_train.checkpoints.loading import build_dinov2

        build_dinov2(name, path)

    return check


def small_pair() -> list[OfficialFile]:
    """SAM2 Hiera-T and DINOv2 ViT-S/14, at the paths of ``pl_configs/demo_tiny.yaml``."""
    sam2, dino = SAM2_CHECKPOINT_FILES["sam2_hiera_t.yaml"], DINOV2_VARIANTS["dinov2_small"]
    return [
        OfficialFile(sam2.url, sam2.file_name, 149, _check_sam2("sam2_hiera_t.yaml")),
        OfficialFile(dino.url, f"dinov2/{dino.file_name}", 88, _check_dinov2("dinov2_small")),
    ]


SETS: dict[str, Callable[[], list[OfficialFile]]] = {"small": small_pair}


def source_url(item: OfficialFile, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{item.rel_path}" if mirror else item.url


def _open(url: str, timeout: float):  # noqa: ANN202 - a urllib response
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s)/file URLs by design
    except urllib.error.HTTPError as err:
        raise CheckpointError(f"{url}: the server answered {err.code} {err.reason}.") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Unreachable(f"{url} cannot be reached ({reason}).") from err


def _read(resp, url: str) -> bytes:  # noqa: ANN001
    try:
        return resp.read(_CHUNK)
    except OSError as err:  # a timeout or reset in the middle of the file
        raise CheckpointError(f"{url}: the download was interrupted ({err}). Run it again.") from err


def mirror_sums(mirror: str | None, timeout: float) -> dict[str, str]:
    """``rel_path -> sha256`` from the mirror's ``SHA256SUMS`` (empty when it has none)."""
    if not mirror:
        return {}
    try:
        with _open(f"{mirror.rstrip('/')}/{SUMS_FILE}", timeout) as resp:
            text = resp.read().decode()
    except CheckpointError:
        return {}
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def download(url: str, dest: Path, sha256: str | None = None, check: Callable[[Path], None] | None = None,
             timeout: float = 10.0, progress: bool = True) -> str:  # fmt: skip
    """Fetch ``url`` to ``dest`` (see the module docstring for the checks); returns the SHA-256."""
    from tqdm import tqdm

    resp = _open(url, timeout)  # before anything is created: offline leaves no trace
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with resp, os.fdopen(fd, "wb") as out:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress, file=sys.stderr) as bar:  # fmt: skip
                while chunk := _read(resp, url):
                    out.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        if total is not None and got != total:
            raise CheckpointError(
                f"{url}: received {got} of {total} bytes (connection dropped?). Run it again."
            )
        hexdigest = digest.hexdigest()
        if sha256 and hexdigest != sha256.lower():
            raise CheckpointError(
                f"{url}: SHA-256 {hexdigest} differs from the expected {sha256.lower()}; the file was not kept."
            )
        if check is not None:
            check(tmp)
        os.replace(tmp, dest)
        return hexdigest
    finally:
        tmp.unlink(missing_ok=True)


def fetch_set(name: str, dest: str | os.PathLike = "checkpoints", mirror: str | None = None,
              timeout: float = 10.0, progress: bool = True) -> list[Path]:  # fmt: skip
    """Download the files of set ``name`` missing under ``dest``; returns their paths."""
    root = Path(dest)
    items = SETS[name]()
    missing = [it for it in items if not (root / it.rel_path).is_file()]
    if missing:
        size = sum(it.approx_mb for it in missing)
        where = mirror or "Meta's servers"
        print(f"[fetch] downloading {len(missing)} official checkpoint(s), about {size} MB, from {where}",
              file=sys.stderr)  # fmt: skip
    sums = mirror_sums(mirror, timeout)
    for it in missing:
        target = root / it.rel_path
        hexdigest = download(
            source_url(it, mirror), target, sums.get(it.rel_path), it.check, timeout, progress
        )
        with open(root / SUMS_FILE, "a") as f:
            f.write(f"{hexdigest}  {it.rel_path}\n")
        print(f"[fetch] {target}: SHA-256 {hexdigest}, loads strictly", file=sys.stderr)
    return [root / it.rel_path for it in items]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("set", choices=sorted(SETS), help="small: SAM2 Hiera-T + DINOv2 ViT-S/14")
    p.add_argument("--dest", default="checkpoints", help="checkpoints folder (default: checkpoints)")
    p.add_argument("--mirror", default=os.environ.get(MIRROR_ENV) or None,
                   help=f"fetch URL/<relative path> instead (default: ${MIRROR_ENV})")  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0, help="seconds without an answer before giving up")
    args = p.parse_args(argv)
    try:
        for path in fetch_set(args.set, args.dest, args.mirror, args.timeout):
            print(path)
    except Unreachable as err:
        print(f"[fetch] offline: {err}", file=sys.stderr)
        return EXIT_OFFLINE
    except CheckpointError as err:
        print(f"[fetch] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
