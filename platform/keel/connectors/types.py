"""What a connector type is: the shape a plugin hands to Keel through `keel_connector_types`, and what a
run gives the source it opens. Protocols, not base classes: any object with these attributes will do.
(Plugin authors may import them from keel.plugins.)"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from keel.outbound import OutboundClient


class ItemSource(Protocol):
    """What a connector type opens: the items of one run, read lazily."""

    def iter_items(self) -> Iterator[dict[str, Any]]:
        """Every source item as a JSON-like dict. Raise a KeelError (e.g. connectors.ConnectorError) on
        failure; the caller collects all items before it writes anything."""
        ...


@dataclass(frozen=True)
class ConnectorContext:
    """What a run gives the source it opens. `client` is the one SSRF-safe outbound HTTP client (never
    open sockets yourself); `import_root` the folder file imports may read from (users never name a
    server path); `upload` a user's uploaded file as (name, bytes); `values` run-time values templates
    see as `vars`; `environ` where secrets are read (os.environ when None)."""

    client: OutboundClient | None = None
    import_root: Path | None = None
    upload: tuple[str, bytes] | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None


@runtime_checkable
class ConnectorType(Protocol):
    """A kind of connector a definition can name in `connectors/<id>.json` as `"type"`.

    `config_schema` is the JSON Schema (draft 2020-12) of the definition's `config`; `validate` returns
    every problem of a config as 'place: message' (the schema's and any the schema cannot express), and
    `open` builds the item source for one run. `secrets` is the definition's `secrets` (environment
    variable names, never values)."""

    name: str
    config_schema: Mapping[str, Any]

    def validate(self, config: Any) -> list[str]: ...

    def open(self, config: Mapping[str, Any], secrets: Sequence[str] | Mapping[str, str] | None,
             context: ConnectorContext) -> ItemSource: ...


def config_problems(connector_types: Mapping[str, ConnectorType], type_name: str, config: Any) -> list[str]:
    """Every problem of a connector definition's `config` for its type, as 'place: message'."""
    ctype = connector_types.get(type_name) if isinstance(type_name, str) else None
    if ctype is None:
        known = ", ".join(sorted(connector_types)) or "none"
        return [f"$.type: unknown connector type '{type_name}' (known: {known}); is its plugin installed? "
                "`keel plugin list` shows what is loaded and what failed"]
    try:
        return list(ctype.validate(config))
    except Exception as exc:  # a plugin's validator must not turn a definition error into a crash
        return [f"$: the {type_name} connector type could not check this config: {type(exc).__name__}: {exc}"]
