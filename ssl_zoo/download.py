"""Fetching files, verified: a URL download into a URL-keyed cache and the Hub's ``hf_hub_download``, with
ssl_zoo's one-line errors. This layer knows files, not models: ``ssl_zoo.weights`` (loading),
``ssl_zoo.hub`` (publishing) and ``ssl_zoo.model_card`` sit above it, and it imports nothing of ssl_zoo
but ``errors`` (imports run download <- weights <- hub / model_card).

A URL file becomes final (renamed from ``<name>.incomplete`` into place) only after
- its size equals the length the server announced (``Content-Length``, or the total of a ``Content-Range``),
- it parses as the format its name announces (:func:`check_format`: a ``.safetensors`` header whose tensors
  fill the file exactly; otherwise a PyTorch checkpoint: a complete zip archive, or a legacy pickle that
  ``torch.load(weights_only=True)`` reads), and
- its sha256 / md5 match when the caller knows them.
A transfer that stops early is resumed with a ``Range`` request at most ``MAX_ATTEMPTS`` times within
``TOTAL_SECONDS``; then one line says what arrived. A file that fails a check is deleted, never cached.

The error family of fetched weights files (``WeightsError`` and its subclasses) is defined here, the lowest
layer that raises them; ``ssl_zoo.weights`` and ``ssl_zoo.hub`` re-export it.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import struct
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

from .errors import SslZooError

_logger = logging.getLogger(__name__)

# Bounded retries: a server that keeps stopping early is given up on after this many requests or this
# much time, whichever comes first (each request resumes where the previous one stopped).
MAX_ATTEMPTS = 3
TOTAL_SECONDS = 120.0
READ_TIMEOUT_S = 30.0  # one socket read (a stalled connection)
CHUNK = 1 << 20


# -- errors -------------------------------------------------------------------

class WeightsError(SslZooError, RuntimeError):
    """Base class of every pretrained-weights error ssl_zoo raises."""


class WeightsNotFoundError(WeightsError):
    """The named file, folder, Hub repo, revision or file in the repo does not exist."""


class WeightsOfflineError(WeightsError):
    """Offline (or the Hub is unreachable) and the file is not in the local cache."""


class ChecksumMismatchError(WeightsError):
    """The file's sha256 (or a URL file's md5) differs from the one the recipe records."""


class CorruptWeightsError(WeightsError):
    """The file is truncated or not a readable safetensors / state-dict file."""


# -- digests --------------------------------------------------------------------

def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(path: str | os.PathLike, chunk_size: int = CHUNK) -> dict[str, str]:
    """Hex ``md5`` and ``sha256`` of a file, in one pass."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            md5.update(block)
            sha256.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def verify_sha256(path: str | os.PathLike, expected: str, what: str = "weights") -> None:
    """Raise ``ChecksumMismatchError`` unless the file's sha256 is ``expected``."""
    actual = sha256_file(path)
    if actual.lower() != expected.lower().strip():
        raise ChecksumMismatchError(
            f"Checksum mismatch for {what} at {path}: sha256 is {actual}, the recipe records {expected}. "
            f"The file is corrupt or was replaced upstream. Delete that file and load again (it is downloaded "
            f"anew); if the new upload is intended, update the recipe's weights.sha256.")


def verify_checksums(path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
                     what: str = "weights", discard: bool = False) -> dict[str, str]:
    """Check a file against a sha256 and / or an md5 (or md5 prefix); returns the file's digests.

    On a mismatch raises ``ChecksumMismatchError``; with ``discard`` the file is deleted first, so
    a bad download never stays in the cache.
    """
    digests = file_digests(path)
    problems = []
    if sha256 and digests["sha256"] != sha256.lower().strip():
        problems.append(f"sha256 is {digests['sha256']}, expected {sha256}")
    if md5 and not digests["md5"].startswith(md5.lower().strip()):
        problems.append(f"md5 is {digests['md5']}, expected {'a prefix ' if len(md5) < 32 else ''}{md5}")
    if problems:
        if discard:
            Path(path).unlink(missing_ok=True)
        kept = "It was deleted from the cache; run again to download it anew. " if discard else ""
        raise ChecksumMismatchError(
            f"Checksum mismatch for {what} ({path}): {'; '.join(problems)}. The download is corrupt or the file "
            f"changed upstream. {kept}If the new file is intended, update the recipe's weights checksum.")
    return digests


# -- formats --------------------------------------------------------------------

def file_format(name: str) -> str:
    """The format a file name announces: ``"safetensors"``, else ``"torch"`` (``.pth``, ``.pth.tar``, ``.pt``,
    ``.bin``, ``.ckpt``: what upstream SSL releases publish)."""
    return "safetensors" if name.endswith(".safetensors") else "torch"


def check_format(path: str | os.PathLike, fmt: str | None = None) -> None:
    """Raise ``CorruptWeightsError`` unless ``path`` is a complete file of format ``fmt`` (default: from its name).

    safetensors: the 8-byte header length, a JSON header, and tensor data that ends exactly at the file's end.
    torch: a zip archive whose central directory (written last) is readable, or a legacy (pre-1.6) pickle
    that ``torch.load(weights_only=True)`` reads to the end.
    """
    path = Path(path)
    fmt = fmt or file_format(path.name)
    problem = format_problem(path, fmt)
    if problem:
        raise CorruptWeightsError(f"{path} ({path.stat().st_size} bytes) is not a complete {fmt} file: {problem}.")


def format_problem(path: Path, fmt: str) -> str | None:
    """Why ``path`` is not a complete ``fmt`` file, or None when it is."""
    return _safetensors_problem(path, path.stat().st_size) if fmt == "safetensors" else _torch_problem(path)


def _safetensors_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "shorter than the 8-byte header length"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"its header announces {n} bytes, the file holds {size - 8} after the length"
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            return f"its header is not JSON ({exc})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + n + max(ends, default=0)
    return None if expected == size else f"its tensors end at byte {expected}, the file has {size}"


def _torch_problem(path: Path) -> str | None:
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                if not archive.namelist():
                    return "an empty zip archive"
        except (zipfile.BadZipFile, OSError) as exc:
            return f"a damaged zip archive ({exc})"
        return None
    with open(path, "rb") as fh:
        start = fh.read(2)
    if start[:1] != b"\x80":  # every torch.save pickle starts with the PROTO opcode
        return "neither a zip archive (torch >= 1.6) nor a pickle (legacy torch.save)"
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated legacy pickle: EOFError, UnpicklingError, RuntimeError, ...
        return f"a legacy torch.save pickle that does not read to the end ({type(exc).__name__}: {exc})"
    return None


# -- the Hub --------------------------------------------------------------------

def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read at call time from ``huggingface_hub.constants``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_download(repo_id: str, filename: str, revision: str | None = None, *, endpoint: str | None = None,
                 token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                 force_download: bool = False) -> Path:
    """``hf_hub_download`` with ssl_zoo's errors; returns the cached file's path. (The Hub client itself
    checks the size and, for LFS files, the sha256 it announces.)"""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    host = endpoint or constants.ENDPOINT
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=endpoint, token=token,
                                    cache_dir=None if cache_dir is None else str(cache_dir),
                                    force_download=force_download,
                                    library_name="ssl_zoo"))
    except RepositoryNotFoundError as exc:
        raise WeightsNotFoundError(
            f"Hub repo {repo_id!r} not found at {host} (or it is private and no valid token was sent: "
            f"`hf auth login` or HF_TOKEN).") from exc
    except RevisionNotFoundError as exc:
        raise WeightsNotFoundError(f"Revision {revision!r} does not exist in Hub repo {repo_id!r} at {host}.") from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        cache = cache_dir or constants.HF_HUB_CACHE
        why = ("HF_HUB_OFFLINE is set" if offline() else f"the Hub at {host} could not be reached")
        raise WeightsOfflineError(
            f"Cannot get {filename} of {where}: {why} and the file is not in the cache {cache}. Download it "
            f"once with network access (the cache then serves it offline), or copy the repo's files "
            f"into a folder and load that folder (`ssl-zoo eval --model FOLDER`, "
            f"timm.create_model('local-dir:FOLDER', pretrained=True)).") from exc
    except EntryNotFoundError as exc:
        raise WeightsNotFoundError(f"Hub repo {where} at {host} has no file {filename!r}. An ssl_zoo model repo "
                                   f"holds model.safetensors, config.json and README.md.") from exc
    except HfHubHTTPError as exc:
        raise WeightsError(f"Downloading {filename} of {where} from {host} failed: {exc}") from exc


# -- URLs -----------------------------------------------------------------------

def url_cache_folder(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of one URL: ``<cache>/<first 16 hex digits of sha256(url)>``.

    ``cache`` is ``cache_dir`` or ``$TORCH_HOME/hub/checkpoints/ssl_zoo`` (torch.hub's checkpoint
    cache, read at call time). Keyed by the whole URL, so two URLs that end in the same file name
    never share an entry.
    """
    if cache_dir is None:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / "ssl_zoo" / hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:16]


def url_file_name(url: str) -> str:
    return os.path.basename(urlsplit(url).path) or "download"


class _ShortBody(Exception):
    """The server closed the connection before the length it announced."""


def _fetch_once(url: str, partial: Path, deadline: float) -> int | None:
    """One request, resuming ``partial`` from its size; returns the total length the server announced
    (None when it announced none). Raises ``_ShortBody`` when the body ends early."""
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as response:
        if response.status == 206:
            total_text = (response.headers.get("Content-Range") or "").rpartition("/")[2]
            total = int(total_text) if total_text.isdigit() else None
            mode = "ab"
        else:  # 200: the whole file (a server without Range support starts again)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        with open(partial, mode) as fh:
            while True:
                if time.monotonic() > deadline:
                    raise _ShortBody(f"the time limit of {TOTAL_SECONDS:g} s ran out")
                try:
                    block = response.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    fh.write(exc.partial)
                    raise _ShortBody("the connection closed early") from None
                if not block:
                    break
                fh.write(block)
    size = partial.stat().st_size
    if total is not None and size < total:
        raise _ShortBody(f"{size} of {total} bytes arrived")
    if total is not None and size > total:
        partial.unlink(missing_ok=True)
        raise CorruptWeightsError(f"{url} sent {size} bytes, more than the {total} it announced; nothing was kept.")
    return total


def url_download(url: str, *, sha256: str | None = None, md5: str | None = None,
                 cache_dir: str | os.PathLike | None = None, fmt: str | None = None) -> Path:
    """Download ``url`` once into ``url_cache_folder(url)/<file name>`` and return the path.

    The bytes go to ``<name>.incomplete`` (a download an interruption left behind is resumed with a
    ``Range`` request); the file is renamed into place only once it has the announced length, parses as
    ``fmt`` (default: the format its name announces, :func:`check_format`) and matches ``sha256`` / ``md5``
    when given. A cached file is checked the same way (and downloaded again when it fails). A body that stops
    early is resumed, at most ``MAX_ATTEMPTS`` requests within ``TOTAL_SECONDS``. Offline
    (``HF_HUB_OFFLINE``) or unreachable: ``WeightsOfflineError`` naming the URL and the path where a
    manually downloaded copy is picked up.
    """
    from filelock import FileLock

    folder = url_cache_folder(url, cache_dir)
    target = folder / url_file_name(url)
    fmt = fmt or file_format(target.name)  # the partial file's name ends in .incomplete
    manual = f"download it on a machine with internet and place it at {target} (it is verified on use)"
    what = f"the file at {url}"
    if target.is_file():
        try:
            check_format(target, fmt)
            verify_checksums(target, sha256=sha256, md5=md5, what=what, discard=True)
            return target
        except (ChecksumMismatchError, CorruptWeightsError) as exc:  # e.g. the recipe's checksum is for a new upload
            target.unlink(missing_ok=True)
            if offline():
                raise
            _logger.warning("%s Downloading it again.", exc)
    if offline():
        raise WeightsOfflineError(f"HF_HUB_OFFLINE is set and {url} is not in the cache: {manual}, or unset "
                                  f"HF_HUB_OFFLINE.")
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".incomplete")
    with FileLock(str(target) + ".lock"):  # another process may be downloading the same URL
        if target.is_file():  # finished by another process while this one waited
            check_format(target, fmt)
            verify_checksums(target, sha256=sha256, md5=md5, what=what, discard=True)
            return target
        _download_bounded(url, partial, manual)
        problem = format_problem(partial, fmt)
        if problem:
            size = partial.stat().st_size
            partial.unlink(missing_ok=True)
            raise CorruptWeightsError(f"The file at {url} arrived at its announced length ({size} bytes) but is not "
                                      f"a complete {fmt} file: {problem}; it was not kept. The server serves a "
                                      f"damaged file: report it upstream, or {manual}.")
        digests = verify_checksums(partial, sha256=sha256, md5=md5, what=what, discard=True)
        if not (sha256 or md5):
            _logger.warning("%s has no published checksum; the downloaded file's sha256 is %s.", url,
                            digests["sha256"])
        os.replace(partial, target)
        return target


def _download_bounded(url: str, partial: Path, manual: str) -> None:
    """Fetch ``url`` into ``partial`` with at most ``MAX_ATTEMPTS`` requests in ``TOTAL_SECONDS``."""
    start = time.monotonic()
    deadline = start + TOTAL_SECONDS
    last = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            _fetch_once(url, partial, deadline)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # the partial file is not a prefix of this file: start again
                partial.unlink(missing_ok=True)
                last = "HTTP 416 for the resumed range"
            else:
                partial.unlink(missing_ok=True)
                raise WeightsNotFoundError(f"{url} answered HTTP {exc.code}: the file moved or the URL is wrong; "
                                           f"check the recipe's weights.url, or {manual}.") from None
        except _ShortBody as exc:
            last = str(exc)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, DNS, timeout
            reason = getattr(exc, "reason", None) or exc
            last = f"{type(exc).__name__}: {reason}".splitlines()[0] if str(reason) else type(exc).__name__
        if attempt == MAX_ATTEMPTS or time.monotonic() >= deadline:
            break
        time.sleep(min(0.5 * attempt, max(0.0, deadline - time.monotonic())))
    arrived = partial.stat().st_size if partial.is_file() else 0
    if not arrived:
        partial.unlink(missing_ok=True)
    resume = f"; {arrived} bytes arrived and are kept as {partial.name} for the next call to resume" if arrived else ""
    raise WeightsOfflineError(f"Could not download {url} in {attempt} attempt{'s' if attempt > 1 else ''} "
                              f"({time.monotonic() - start:.0f} s; last: {last}){resume}. Retry, or {manual}.")


__all__ = ["WeightsError", "WeightsNotFoundError", "WeightsOfflineError", "ChecksumMismatchError",
           "CorruptWeightsError", "sha256_file", "file_digests", "verify_sha256", "verify_checksums", "file_format",
           "check_format", "format_problem", "offline", "hub_download", "url_cache_folder", "url_file_name",
           "url_download", "MAX_ATTEMPTS", "TOTAL_SECONDS"]
