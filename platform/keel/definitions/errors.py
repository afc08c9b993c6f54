"""Definition errors: a place (file and JSON pointer) and a message. The loader collects every one of
them and raises them together, so an admin fixes a definition in one pass, not one error at a time."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from keel.errors import KeelError


@dataclass(frozen=True, order=True)
class DefinitionError:
    file: str     # posix path relative to the app folder, e.g. "entities/goal.json"
    pointer: str  # JSON pointer into that file (RFC 6901); "" for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.pointer or '/'}: {self.message}"


class DefinitionErrors(KeelError):
    """Every problem found in one app definition; `errors` is sorted by file, then pointer."""

    def __init__(self, errors: Iterable[DefinitionError]):
        self.errors: list[DefinitionError] = sorted(set(errors))
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def pointer(*parts: object) -> str:
    """A JSON pointer from path parts: pointer("fields", 3, "id") -> "/fields/3/id"."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
