"""Reading a kind's JSON Schema shipped as a file next to the package that registers the kind."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_schema(package_file: str, name: str = "definition_schema.json") -> dict[str, Any]:
    """The schema file `name` next to the module `package_file` (pass `__file__`)."""
    return json.loads(Path(package_file).with_name(name).read_text("utf-8"))
