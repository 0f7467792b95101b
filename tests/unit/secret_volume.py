"""A Secret volume as the kubelet lays it out, for the token-reload tests: a helper module."""

from __future__ import annotations

import os
from pathlib import Path


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume: ``key -> ..data/key`` and
    ``..data -> ..<version>``; an update writes a new version directory and swaps ``..data``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.version = 0

    def write(self, files: dict[str, str]) -> None:
        self.version += 1
        target = self.root / f"..v{self.version}"
        target.mkdir()
        for key, text in files.items():
            (target / key).write_text(text)
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(Path("..data") / key)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(target.name)
        os.replace(tmp, self.root / "..data")

    def path(self, key: str) -> str:
        return str(self.root / key)
