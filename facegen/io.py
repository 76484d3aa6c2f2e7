"""Filesystem helpers: one code path for local folders, ``file://``, ``s3://`` and ``gs://`` URIs.

Everything goes through :mod:`pyarrow.fs`, which Ray Data also uses, so a dataset prepared here reads the
same way on a cluster. S3 credentials and endpoint come from the standard environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), so MinIO, moto or real S3 differ only in env vars.
"""

from __future__ import annotations

import contextlib
import csv
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pyarrow.fs as pafs

from facegen.errors import DatasetError, FacegenError


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` strings (``s3://``, ``gs://``, ``file://``), False for plain paths."""
    return "://" in location


def absolute_path(path: str) -> str:
    """A local path made absolute (URIs and "" unchanged): Ray workers run in their own folders, so a path
    relative to where a config was loaded would not resolve there."""
    return path if not path or is_uri(path) else os.path.abspath(os.path.expanduser(path))


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """Turn a URI or a local path into ``(filesystem, path inside it)``; the path has no trailing slash.

    Plain paths are made absolute. For ``s3://`` with ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) set,
    the endpoint is passed explicitly: pyarrow 26 honours the variable itself, older builds don't.
    """
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    try:
        if location.startswith("s3://") and endpoint:
            parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            fs = pafs.S3FileSystem(
                endpoint_override=parsed.netloc,
                scheme=parsed.scheme,
                region=os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1")),
            )
            return fs, location[len("s3://"):].rstrip("/")
        fs, path = pafs.FileSystem.from_uri(location)
    except (ValueError, OSError) as exc:  # unknown scheme, unreachable bucket, bad credentials
        raise FacegenError(f"{location}: cannot open ({exc})") from None
    return fs, path.rstrip("/")


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    """The user-facing location of ``path`` on ``fs`` (for messages and manifests), e.g. ``s3://b/k``."""
    scheme = {"s3": "s3://", "gcs": "gs://"}.get(fs.type_name, "")
    return scheme + path


def join(path: str, *parts: str) -> str:
    """Join with ``/`` whatever the OS: pyarrow paths are always slash-separated."""
    return posixpath.join(path, *parts)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    """True if ``path`` is a file or a directory."""
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """Whole file as bytes; a missing file raises ``FileNotFoundError``."""
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(fs: pafs.FileSystem, path: str) -> str:
    """Whole file decoded as UTF-8 (a BOM, which Excel-saved CSVs carry, is dropped)."""
    return read_bytes(fs, path).decode("utf-8-sig")


def list_files(fs: pafs.FileSystem, directory: str, recursive: bool = False) -> dict[str, int]:
    """Files under ``directory`` as ``{path relative to directory: size in bytes}``; ``{}`` if it is absent.

    One listing call (paginated by pyarrow on object stores) instead of one stat per file.
    """
    selector = pafs.FileSelector(directory, allow_not_found=True, recursive=recursive)
    prefix = directory.rstrip("/") + "/"
    return {
        info.path[len(prefix):]: info.size
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
    }


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``<path>.tmp-<uuid>`` then move it over ``path``.

    Readers never see a half-written file: a local move is a rename, and an S3 object appears only once its
    upload completes. A crash leaves at most a ``.tmp-*`` file, which the shard writer later removes.
    """
    parent = posixpath.dirname(path)
    if isinstance(fs, pafs.LocalFileSystem):  # object stores have no directories to create
        fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as stream:
        stream.write(data)
    fs.move(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """:func:`write_atomic` for a local writer that wants a file name (PIL ``save``, matplotlib ``savefig``,
    ``torch.save``, ``open``): yields ``<path>.tmp-<uuid>`` (its folder created), renamed over ``path`` when the
    block ends; deleted if the block raises.

        with atomic_path("out/grid.png") as tmp:
            image.save(tmp, format="PNG")
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def staged_folder(path: str) -> Iterator[str]:
    """A new empty local folder ``<path>.tmp-<uuid>`` to fill; when the block ends it replaces the folder ``path``
    (deleted first, with all it holds), if the block raises it is deleted. Readers of ``path`` never see a folder
    half written: only the old one, none (for an instant) or the complete new one."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def missing_files(fs: pafs.FileSystem, root: str, rel_paths: list[str]) -> set[str]:
    """The subset of ``rel_paths`` (relative to ``root``) that do not exist as files.

    Lists each distinct parent folder once and compares sets: 200k CelebA images cost a few listing calls,
    not 200k stats (which on S3 would be 200k requests).
    """
    by_dir: dict[str, set[str]] = {}
    for rel in rel_paths:
        by_dir.setdefault(posixpath.dirname(rel), set()).add(rel)
    missing: set[str] = set()
    for folder, wanted in by_dir.items():
        present = list_files(fs, join(root, folder) if folder else root)
        missing |= {rel for rel in wanted if posixpath.basename(rel) not in present}
    return missing


class TextTable:
    """A small annotation file read whole: its URI for messages and its non-blank rows as ``(line no, fields)``.

    ``.csv`` files are split with the csv module, anything else on runs of whitespace.
    """

    def __init__(self, fs: pafs.FileSystem, path: str):
        self.path, self.name, self.is_csv = path, to_uri(fs, path), path.endswith(".csv")
        try:
            lines = read_text(fs, path).splitlines()
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{self.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        # One csv.reader per line (not per file) so a stray quote cannot swallow the next line's number.
        split = (lambda line: next(csv.reader([line]))) if self.is_csv else str.split
        self.rows: list[tuple[int, list[str]]] = [(n, split(ln)) for n, ln in enumerate(lines, 1) if ln.strip()]

    def error(self, line: int, message: str) -> DatasetError:
        return DatasetError(f"{self.name} line {line}: {message}")

    def pairs(self, what: str) -> Iterator[tuple[int, str, str]]:
        """``(line, image name, value)`` of a two-column file; a CSV's header row is skipped."""
        for line, fields in self.rows[1:] if self.is_csv else self.rows:
            if len(fields) != 2:
                raise self.error(line, f"expected 2 fields (image, {what}), got {len(fields)}")
            yield line, fields[0], fields[1]
