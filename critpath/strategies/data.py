"""Where recorded data lives (``shared/data/mmlu_pro``: questions and every model's
answers): an explicit path, ``$CRITPATH_DATA``, or ``../shared/data`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

from critpath.errors import ConfigError

__all__ = ["recorded_dir"]


def recorded_dir(explicit: str | Path | None = None, name: str = "mmlu_pro") -> Path:
    """A recorded data set (a folder with ``questions.jsonl``): ``explicit`` (the set, or
    a folder holding ``name``), else ``$CRITPATH_DATA``, else ``shared/data`` beside the
    checkout or the current folder."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates = [Path(explicit)]
    else:
        env = os.environ.get("CRITPATH_DATA")
        if env:
            candidates.append(Path(env))
        here = Path(__file__).resolve().parents[2]  # the checkout (critpath/strategies/../..)
        candidates += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        for d in (c, c / name):
            if (d / "questions.jsonl").is_file():
                return d
    where = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"no recorded data set ({name}/questions.jsonl) at {where}; "
                      "pass --data DIR or set CRITPATH_DATA")  # fmt: skip
