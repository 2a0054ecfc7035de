"""Where datasets come from: one resolution order for every dataset (see shared DESIGN.md, "Data").

1. `$LEARNLOOP_DATA/<name>/` (or the cache dir `~/.cache/learnloop/<name>/` when the variable is unset)
2. files installed by system or pip packages (e.g. Debian's dataset-fashion-mnist)
3. a download into the cache, checked against SHA-256, only when `LEARNLOOP_DOWNLOAD=1`
4. one clear `DataMissingError` naming what to install
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from learnloop.errors import CorruptFileError, DataMissingError, UserError


def data_home() -> Path:
    env = os.environ.get("LEARNLOOP_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "learnloop"


@dataclass(frozen=True)
class Remote:
    """A file that may be downloaded: its URL and the SHA-256 the download must have."""

    filename: str
    url: str
    sha256: str


@dataclass
class DatasetSpec:
    name: str
    description: str
    files: tuple[str, ...]                       # file names that make the dataset complete
    system_dirs: tuple[str, ...] = ()            # folders where packages install them
    install_hint: str = ""                       # what to install when nothing is found
    remotes: tuple[Remote, ...] = ()
    loader: Callable | None = field(default=None, repr=False)  # (folder, **kw) -> dataset object


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    _REGISTRY[spec.name] = spec
    return spec


def available() -> list[str]:
    return sorted(_REGISTRY)


def spec(name: str) -> DatasetSpec:
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(available())}")
    return _REGISTRY[name]


def user_path(path: str | os.PathLike, kind: str = "folder") -> Path:
    """A path the user named explicitly: it must exist as a `kind` ("folder" or "file")."""
    p = Path(path).expanduser()
    if not (p.is_dir() if kind == "folder" else p.is_file()):
        raise UserError(f"{p}: no such {kind}")
    return p


def _complete(folder: Path, files) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def locate(name: str, path: str | os.PathLike | None = None) -> Path:
    """Return the folder holding dataset `name`'s files, following the resolution order."""
    s = spec(name)
    if not s.files:                      # embedded in a package (e.g. scikit-learn): nothing to find
        return Path()
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise UserError(f"{folder}: no such file or folder")
        if not _complete(folder, s.files):
            raise DataMissingError(f"{folder} does not hold the {name} files: {', '.join(s.files)}")
        return folder
    candidates = [data_home() / name, *map(Path, s.system_dirs)]
    for folder in candidates:
        if _complete(folder, s.files):
            return folder
    if s.remotes and os.environ.get("LEARNLOOP_DOWNLOAD") == "1":
        folder = data_home() / name
        for r in s.remotes:
            if not (folder / r.filename).is_file():
                download(r.url, folder / r.filename, r.sha256)
        return folder
    where = ", ".join(str(c) for c in candidates)
    raise DataMissingError(f"{name} not found (looked in {where}); {s.install_hint}")


def load(name: str, path=None, **kwargs):
    """Load a registered dataset by name (see `available()`)."""
    s = spec(name)
    return s.loader(locate(name, path), **kwargs)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` atomically; refuse (and delete) a file whose SHA-256 differs."""
    from learnloop.utils.io import atomic_path

    dest = Path(dest)
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            got = sha256_of(tmp)
            if got != sha256:
                raise CorruptFileError(f"{url}: SHA-256 mismatch (expected {sha256[:12]}…, got {got[:12]}…)")
    except OSError as e:
        raise DataMissingError(f"could not download {url}: {e}") from None
    return dest
