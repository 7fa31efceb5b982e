"""The timm architectures `timm.model` accepts: a list generated from the pinned timm and shipped
with the plugin, so that `validate` checks a name, and suggests a close one, without importing
timm or torch (importing timm takes seconds).

Regenerate it after changing the pinned timm, from the repository root:
`python plugins/pipeforge-timm/src/pipeforge_timm/names.py`.
"""

from __future__ import annotations

import difflib
import functools
import sys
from importlib import resources
from pathlib import Path

TIMM_VERSION = "1.0.31"  # the timm pinned in pyproject.toml, the list's source
FILE = "architectures.txt"


@functools.lru_cache(maxsize=1)
def architectures() -> frozenset[str]:
    """Every name of `timm.list_models()` of the pinned timm."""
    text = resources.files("pipeforge_timm").joinpath(FILE).read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def problem(name: str) -> str | None:
    """Why `name` is not a timm architecture (with the closest ones), or None if it is one. A
    pretrained-weights tag may follow the architecture: `resnet18.a1_in1k`."""
    base = name.split(".", 1)[0]
    if base in architectures():
        return None
    close = difflib.get_close_matches(base, sorted(architectures()), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        "; the names are those of timm.list_models()"
    return f"timm {TIMM_VERSION} has no architecture named {base!r}{hint}"


def generate() -> str:
    """The list file's text, from the installed timm (which must be the pinned one)."""
    import timm

    if timm.__version__ != TIMM_VERSION:
        raise SystemExit(f"timm {timm.__version__} is installed; the list is generated from timm {TIMM_VERSION} "
                         "(change TIMM_VERSION and the pin in pyproject.toml together)")
    header = f"# timm.list_models() of timm {TIMM_VERSION}; regenerate: python plugins/pipeforge-timm/src/pipeforge_timm/names.py\n"
    return header + "".join(f"{name}\n" for name in timm.list_models())


if __name__ == "__main__":  # run as a script from the source tree: writes the list beside it
    target = Path(__file__).with_name(FILE)
    text = generate()
    target.write_text(text, encoding="utf-8")
    sys.stderr.write(f"wrote {text.count(chr(10)) - 1} names to {target}\n")
