"""The checkpoint downloader against a local HTTP server laid out like Meta's files, and the quick
start's three ways to get checkpoints: offline fallback to random stand-ins, download from a
mirror, and re-runs that reuse finished steps."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from no_time_to_train.checkpoints import fetch
from no_time_to_train.errors import CheckpointError

from ..conftest import REPO


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, tiny_ckpts):
    """A folder laid out like checkpoints/ (random-weight files in Meta's formats), served over HTTP."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "dinov2").mkdir()
    shutil.copy(tiny_ckpts["sam2"], root / "sam2_hiera_tiny.pt")
    shutil.copy(tiny_ckpts["dinov2"], root / "dinov2" / "dinov2_vits14_pretrain.pth")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_downloads_checks_and_records(mirror, tmp_path, capsys):
    root, url = mirror
    dest = tmp_path / "checkpoints"
    paths = fetch.fetch_set("small", dest, mirror=url, progress=True)
    assert paths == [dest / "sam2_hiera_tiny.pt", dest / "dinov2" / "dinov2_vits14_pretrain.pth"]
    for p, rel in zip(paths, ("sam2_hiera_tiny.pt", "dinov2/dinov2_vits14_pretrain.pth"), strict=True):
        assert p.read_bytes() == (root / rel).read_bytes()
    sums = (dest / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{sha256(root / 'sam2_hiera_tiny.pt')}  sam2_hiera_tiny.pt",
                    f"{sha256(root / 'dinov2/dinov2_vits14_pretrain.pth')}  dinov2/dinov2_vits14_pretrain.pth"]  # fmt: skip
    err = capsys.readouterr().err
    assert "about 237 MB" in err and "loads strictly" in err and "sam2_hiera_tiny.pt:" in err  # tqdm's bar
    assert not list(dest.rglob("*.part"))
    # Present files are not fetched again.
    assert fetch.fetch_set("small", dest, mirror=url) == paths
    assert len((dest / "SHA256SUMS").read_text().splitlines()) == 2


def test_fetch_refuses_a_wrong_checksum_and_keeps_nothing(mirror, tmp_path):
    root, url = mirror
    (root / "SHA256SUMS").write_text(f"{'0' * 64}  sam2_hiera_tiny.pt\n")
    try:
        with pytest.raises(CheckpointError, match="SHA-256 .* differs from the expected 0000"):
            fetch.fetch_set("small", tmp_path / "ck", mirror=url, progress=False)
    finally:
        (root / "SHA256SUMS").unlink()
    assert not [p for p in (tmp_path / "ck").rglob("*") if p.is_file()]


def test_fetch_refuses_a_file_that_does_not_load(tmp_path):
    root = tmp_path / "mirror"
    (root / "dinov2").mkdir(parents=True)
    (root / "sam2_hiera_tiny.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        fetch.fetch_set("small", tmp_path / "ck", mirror=root.as_uri(), progress=False)
    assert not (tmp_path / "ck" / "sam2_hiera_tiny.pt").exists() and not list(
        (tmp_path / "ck").rglob("*.part")
    )


def test_fetch_offline_exits_3_and_creates_nothing(tmp_path, capsys):
    dest = tmp_path / "ck"
    assert fetch.main(["small", "--dest", str(dest), "--mirror", closed_port_url(), "--timeout", "5"]) == 3
    assert "[fetch] offline:" in capsys.readouterr().err
    assert not dest.exists()


def _scratch_repo(tmp_path: Path) -> Path:
    """The repository's quick start in a scratch folder; install.sh replaced by a no-op (the
    environment running the tests is the one to use)."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("run_lightening.py", "no_time_to_train"):
        os.symlink(REPO / name, root / name)
    shutil.copy(REPO / "scripts" / "quickstart.sh", root / "scripts" / "quickstart.sh")
    (root / "scripts" / "install.sh").write_text("echo '[install] (test) using the running environment'\n")
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text(f'export PATH="{os.path.dirname(sys.executable)}:$PATH"\n')
    return root


def _quickstart(root: Path, **env: str) -> str:
    full = dict(os.environ, HF_HUB_OFFLINE="1", **env)
    full.pop("NTT_OFFLINE", None)
    proc = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=root, env=full, capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_quickstart_offline_then_mirror_then_reuse(mirror, tmp_path):
    root = _scratch_repo(tmp_path)
    # 1. Offline: falls back to random-weight stand-ins, with the banner, and runs every step.
    out = _quickstart(root, NTT_CHECKPOINT_MIRROR=closed_port_url(), NTT_FETCH_TIMEOUT="5")
    assert "[fetch] offline:" in out and "SMOKE RUN WITH RANDOM WEIGHTS" in out
    assert (root / "checkpoints" / "random" / "sam2_hiera_tiny.pt").is_file()
    assert not (root / "checkpoints" / "sam2_hiera_tiny.pt").exists()
    assert "BBOX RESULTS" in out and "reusing" not in out
    logs = root / "work_dirs" / "demo" / "lightning_logs"
    assert sorted(p.name for p in logs.iterdir()) == ["fill_memory", "postprocess_memory", "test"]

    # 2. Reachable (a mirror): the small official pair is downloaded, checked and used; the
    # checkpoints changed, so every step runs again.
    _, url = mirror
    out = _quickstart(root, NTT_CHECKPOINT_MIRROR=url)
    assert "loads strictly" in out and "SMOKE RUN" not in out
    assert "using checkpoints/sam2_hiera_tiny.pt + checkpoints/dinov2/dinov2_vits14_pretrain.pth" in out
    assert "BBOX RESULTS" in out and "reusing" not in out

    # 3. Nothing changed: every step is reused and says so; no new log folder.
    results = root / "work_dirs" / "demo" / "results.json"
    before = results.stat().st_mtime_ns
    out = _quickstart(root, NTT_CHECKPOINT_MIRROR=url)
    for step in ("fill_memory", "postprocess_memory", "test"):
        assert f"[quickstart] {step}: reusing" in out
    assert "BBOX RESULTS" not in out and results.stat().st_mtime_ns == before
    assert sorted(p.name for p in logs.iterdir()) == ["fill_memory", "postprocess_memory", "test"]

    # 4. One input changed (the reference set): that step and the ones after it run again.
    pkl = root / "data" / "demo" / "annotations" / "references_2shot.pkl"
    os.utime(pkl, ns=(pkl.stat().st_atime_ns, pkl.stat().st_mtime_ns + 10**9))
    out = _quickstart(root, NTT_CHECKPOINT_MIRROR=url)
    assert "reusing" not in out and "BBOX RESULTS" in out
