"""Reading the YAML files that configure Nudge (policies/, the template catalogue).

Each file's own loader validates the content; this reads and parses it, and turns an unreadable
file or broken YAML into the loader's own error type, naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: Path | str, error: type[Exception], source: str | None = None) -> Any:
    """The parsed content of `path`; `error` ("<source>: cannot be read: ..." or "<source>: is
    not valid YAML: ...") when it cannot be had."""
    source = source or str(path)
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{source}: cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{source}: is not valid YAML: {exc}") from exc
