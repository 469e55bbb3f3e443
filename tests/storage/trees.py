"""A sample checkpoint directory for the storage tests, and ways to compare trees.

The tree has what breaks naive copies: nested directories, empty files, a file larger
than a copy chunk (5 MiB and a few bytes, so sizes are not round), and every byte value.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from detlite.interfaces import FileRecord

BIG = 5 * 1024 * 1024 + 7


def make_checkpoint(root: Path, *, seed: int = 0) -> Path:
    """Write the sample checkpoint under ``root`` (created) and return ``root``."""
    rng = random.Random(seed)
    files = {
        "metadata.json": json.dumps({"format": "fake", "batches_trained": 10, "seed": seed}),
        "state/model.bin": rng.randbytes(BIG),
        "state/optimizer/adam.bin": bytes(range(256)) * 4,
        "state/optimizer/empty.bin": b"",
        "code/a/b/c/deep.py": "print('deep')\n",
        "empty-at-top": b"",
        "name with spaces.txt": "spaces are fine\n",
    }
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    return root


def hashlib_records(root: Path) -> dict[str, FileRecord]:
    """Size and sha256 of every file under ``root``, computed independently with hashlib."""
    records = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        records[path.relative_to(root).as_posix()] = FileRecord(
            size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
    return records


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
