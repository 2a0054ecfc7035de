"""Where datasets come from: one resolution order for every dataset (see shared DESIGN.md, "Data").

1. `$LEARNLOOP_DATA/<name>/` (or the cache dir `~/.cache/learnloop/<name>/` when the variable is unset)
2. files installed by system or pip packages (e.g. Debian's dataset-fashion-mnist)
3. a download into the cache, checked against SHA-256, only when `LEARNLOOP_DOWNLOAD=1`
4. one clear `DataMissingError` naming what to install

A path the user names (`data_path`) replaces steps 1-3: it must exist, and be a folder holding the files
(an empty string means "not given"). A dataset embedded in a package reads no files, so a path given for
it is an error rather than silently ignored. A file that is present but not a regular file (a folder, a
FIFO) is named in a `CorruptFileError` and never opened for reading.
"""

from __future__ import annotations

import hashlib
import os
import stat
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from learnloop.errors import CorruptFileError, DataMissingError, UserError
from learnloop.utils.io import open_regular


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
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # other accepted names of a file

    def names(self, filename: str) -> tuple[str, ...]:
        """Every name under which `filename` is accepted (the canonical one first)."""
        return (filename, *self.aliases.get(filename, ()))


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


def _kind(p: Path) -> str | None:
    """None for a regular file (or a symlink to one), else what it is; "missing" when nothing is there."""
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"


def user_path(path: str | os.PathLike, kind: str = "folder") -> Path:
    """A path the user named explicitly: it must exist as a `kind` ("folder" or "file", a regular one)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such {kind}")
    if kind == "folder" and not p.is_dir():
        raise UserError(f"{p}: is a file, not a folder")
    if kind == "file":
        what = _kind(p)
        if what is not None:
            raise UserError(f"{p}: is {what}, not a regular file" if what.startswith("a ") else f"{p}: {what}")
    return p


def _complete(folder: Path, s: DatasetSpec) -> bool:
    return folder.is_dir() and all(any(_kind(folder / n) is None for n in s.names(f)) for f in s.files)


def _check_user_folder(s: DatasetSpec, folder: Path) -> None:
    """The named folder must hold every file; a present but non-regular one is named (never read)."""
    missing = []
    for f in s.files:
        names = s.names(f)
        kinds = [_kind(folder / n) for n in names]
        if None in kinds:
            continue
        odd = [n for n, k in zip(names, kinds) if k != "missing"]
        if odd:
            try:
                with open_regular(folder / odd[0], "rb"):      # raises the one-line error naming the file
                    pass
            except OSError as e:
                raise CorruptFileError(f"{folder / odd[0]}: cannot read ({e.strerror or e})") from None
        missing.append(" or ".join(names))
    if missing:
        raise DataMissingError(f"{folder} does not hold the {s.name} files: missing {'; '.join(missing)}")


def locate(name: str, path: str | os.PathLike | None = None) -> Path:
    """Return the folder holding dataset `name`'s files, following the resolution order."""
    s = spec(name)
    if path is not None and str(path) == "":
        path = None
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise UserError(f"{folder}: no such file or folder")
        if not s.files:
            raise UserError(f"dataset '{name}' is embedded in a package and reads no files; "
                            f"do not give it a path ({folder})")
        if not folder.is_dir():
            raise UserError(f"{folder}: is a file; give the folder that holds the {name} files")
        _check_user_folder(s, folder)
        return folder
    if not s.files:                      # embedded in a package (e.g. scikit-learn): nothing to find
        return Path()
    candidates = [data_home() / name, *map(Path, s.system_dirs)]
    for folder in candidates:
        if _complete(folder, s):
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
