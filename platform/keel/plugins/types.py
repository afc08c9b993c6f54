"""The shapes a plugin hands to Keel through the hooks (hookspecs.py). Protocols, not base classes: any
object with these attributes will do, so a plugin needs nothing from Keel but `hookimpl`.

Field types are `keel.fieldtypes.base.FieldType` instances; job types are `keel.jobs.types.JobType`.
The host checks only what it needs to index an object (a `name`, and for a connector type its schema and
`open`); the parts that use them (sync, workflow, dashboards) call the rest.
"""
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


# -- shapes for the workflow and dashboard issues ---------------------------------------------------------
# Provisional: the host indexes them by `name` only. What the engines will call is written down here so a
# plugin written today has a target; the workflow and dashboard work may refine the signatures.

class WorkflowAction(Protocol):
    """A step in a workflow's `on_approved`/`on_rejected` list: `{"action": name, ...params}`.
    `params_schema` is the JSON Schema of the params; `run(context, params)` does the work inside the
    workflow's transaction (context: the connection, the acting Actor, the instance and its record)."""

    name: str
    params_schema: Mapping[str, Any]

    def run(self, context: Any, params: Mapping[str, Any]) -> None: ...


class ApproverRule(Protocol):
    """An approver rule in a workflow step: `{"rule": name, ...params}` (e.g. `manager_of`).
    `resolve(context, params)` returns the user ids who must approve; an empty list is a problem the
    engine reports, never a silent auto-approval."""

    name: str
    params_schema: Mapping[str, Any]

    def resolve(self, context: Any, params: Mapping[str, Any]) -> list[int]: ...


class DashboardWidget(Protocol):
    """A widget a dashboard definition can place: `{"widget": name, ...params}`. `layout(context,
    params)` returns the Dash component tree; data goes through the permission-checked query path."""

    name: str
    params_schema: Mapping[str, Any]

    def layout(self, context: Any, params: Mapping[str, Any]) -> Any: ...
