"""Where pretrained weights come from: the local torch hub cache, then a download.

Offline, a download must fail fast with a message that names the file and the folder to put it
in, never hang: so we probe the host with a short socket timeout before fetching, and fetch
with our own timeout instead of torch.hub's (which has none).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import torch

CONNECT_TIMEOUT_S = 5.0


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says what to do."""


def hub_checkpoint_dir() -> Path:
    """torchvision's own weights cache: `$TORCH_HOME/hub/checkpoints` (default ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def file_name(url: str) -> str:
    """The cache file name torchvision uses for a weights URL."""
    return os.path.basename(urllib.parse.urlparse(url).path)


def cached_path(url: str) -> Path | None:
    """The cached file for `url`, or None when it is not in the hub cache."""
    path = hub_checkpoint_dir() / file_name(url)
    return path if path.is_file() else None


def host_reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` seconds.

    The DNS lookup ignores socket timeouts and can hang on a broken network, so the probe runs
    in a daemon thread that we stop waiting for after `timeout`. `$TLCORE_OFFLINE=1` answers
    False without trying: no download is attempted (air-gapped machines, tests).
    """
    if os.environ.get("TLCORE_OFFLINE", "") not in ("", "0"):
        return False
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    ok = threading.Event()

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                ok.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return ok.is_set()


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` atomically (temp file then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def fetch_state_dict(url: str, model_name: str) -> dict[str, torch.Tensor]:
    """Load a torchvision state dict from the hub cache, downloading it when online.

    Raises:
        WeightsUnavailable: not cached and the download host cannot be reached.
    """
    path = cached_path(url)
    if path is None:
        target = hub_checkpoint_dir() / file_name(url)
        hint = (
            f"weights for {model_name} are not cached and could not be downloaded: put "
            f"{file_name(url)} (from {url}) in {target.parent}/, or pick efficientnet_lite0, "
            "whose weights ship with its pip package"
        )
        if not host_reachable(url):
            raise WeightsUnavailable(hint + " (no network)")
        try:
            path = download(url, target)
        except OSError as exc:
            raise WeightsUnavailable(f"{hint} (download failed: {exc})") from exc
    # weights_only: a checkpoint is data; never run code from it.
    return torch.load(path, map_location="cpu", weights_only=True)
