"""Where media may be read from: `video_uri`/`thumbnail_uri` confined to the lake's media roots.

The URIs come from landing data, so they are untrusted: an absolute path, a `../` path or a
symlink could otherwise reach any file on the machine, and on an S3 lake `s3://other-bucket/...`
would be fetched with the lake's credentials. A URI is resolved first (symlinks followed on a
local lake, `..` normalised on S3) and read only when the result lies inside one of the roots;
anything else is refused before any byte is read.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence

import pyarrow.fs as pafs

from vq_assets.core.embeddings.media import DEFAULT_MAX_BYTES, MediaRefused, read_file
from vq_assets.core.lake.store import Lake

DEFAULT_MEDIA_ROOTS = ("landing/media",)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _outside(uri: str) -> MediaRefused:
    return MediaRefused("refused: outside media roots", f"{uri} is outside the media roots")


class LakeMediaReader:
    """`read_bytes(uri)` for the decode workers: regular files inside the media roots, at most
    `max_bytes` each.

    `roots` are paths relative to the lake root (default `landing/media`), or absolute: local
    paths on a local lake, `s3://bucket/prefix` on an S3 lake. A URI is an absolute local path or
    `file://` URI (local lake), an `s3://` URI (S3 lake), or a path relative to the lake root.
    Picklable (the lake pickles with its filesystem), so it travels to decode workers.
    """

    def __init__(
        self,
        lake: Lake,
        roots: Sequence[str] = DEFAULT_MEDIA_ROOTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not roots:
            raise ValueError("at least one media root is needed")
        self.lake = lake
        self.max_bytes = max_bytes
        self.roots = [self._root(r) for r in roots]

    def _root(self, root: str) -> str:
        if self.lake.is_s3:
            if root.startswith("s3://"):
                return posixpath.normpath(root.removeprefix("s3://"))
            if _SCHEME.match(root) or root.startswith("/"):
                raise ValueError(f"media root {root!r}: an S3 lake takes s3:// or relative roots")
            return posixpath.normpath(self.lake.path(root))
        if _SCHEME.match(root):
            raise ValueError(f"media root {root!r}: a local lake takes local paths")
        # resolved once, so a lake under a symlinked folder still contains its own media
        return os.path.realpath(os.path.join(self.lake.base, root))

    def locate(self, uri: str) -> str:
        """The path inside the lake's filesystem that `uri` names; `MediaRefused` when it lies
        outside every media root (or names a scheme this lake cannot reach)."""
        if self.lake.is_s3:
            if uri.startswith("s3://"):
                path = uri.removeprefix("s3://")
            elif _SCHEME.match(uri) or uri.startswith("/"):
                raise _outside(uri)
            else:
                path = self.lake.path(uri)
            path = posixpath.normpath(path)  # S3 keys have no `..`: resolve it before checking
            if not any(path.startswith(root + "/") for root in self.roots):
                raise _outside(uri)
            return path
        path = uri.removeprefix("file://")
        if _SCHEME.match(path):
            raise _outside(uri)
        path = os.path.realpath(os.path.join(self.lake.base, path))  # an absolute path stays
        if not any(
            path != root and os.path.commonpath([path, root]) == root for root in self.roots
        ):
            raise _outside(uri)
        return path

    def __call__(self, uri: str) -> bytes:
        path = self.locate(uri)
        if not self.lake.is_s3:
            return read_file(path, self.max_bytes)
        info = self.lake.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(uri)
        if info.type != pafs.FileType.File:
            raise MediaRefused("refused: not a regular file", f"{uri} is not an object")
        if info.size is not None and info.size > self.max_bytes:
            raise MediaRefused(
                "refused: over byte limit", f"{uri}: {info.size} > {self.max_bytes} B"
            )
        with self.lake.fs.open_input_stream(path) as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise MediaRefused("refused: over byte limit", f"{uri}: more than {self.max_bytes} B")
        return data
