"""The built-in connector types, `http_json` and `file` (CSV/Excel). They are plain ConnectorType objects
(connectors/types.py) registered through `keel_connector_types` in connectors/plugin.py, exactly like a
plugin's."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from jsonschema import Draft202012Validator

from keel.connectors.files import encoding_problem, read_import_file, read_table_file
from keel.connectors.http_json import HTTP_JSON_SCHEMA, ConnectorError, HttpJsonSource, validate_config
from keel.connectors.mapping import MAPPING_SCHEMA, mapping_problems
from keel.connectors.types import ConnectorContext

DEFAULT_MAX_FILE_BYTES = 100 * 1024 * 1024


class HttpJsonConnector:
    """A JSON API read page by page through the SSRF-safe client (connectors/http_json.py)."""

    name = "http_json"
    config_schema = HTTP_JSON_SCHEMA

    def validate(self, config: Any) -> list[str]:
        return validate_config(config)

    def open(self, config: Mapping[str, Any], secrets: Sequence[str] | Mapping[str, str] | None,
             context: ConnectorContext) -> HttpJsonSource:
        if context.client is None:
            raise ConnectorError("the http_json connector needs the outbound HTTP client in its context")
        return HttpJsonSource(config, secrets, context.client, values=context.values, environ=context.environ)


FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://keel.dev/schemas/connectors/file.json",
    "title": "config of a file (CSV/Excel) connector",
    "description": "Reads `file` from the import folder, or, without `file`, the file uploaded for the run.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "minLength": 1, "maxLength": 500,
                 "description": "a name inside the import folder, never a server path"},
        "encoding": {"type": "string", "minLength": 1, "maxLength": 40,
                     "description": "e.g. gbk; default: a BOM decides, then UTF-8, then GB18030"},
        "sheet": {"type": "string", "minLength": 1, "maxLength": 100},
        "columns": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200},
                    "uniqueItems": True, "description": "the header must contain these columns"},
        "allow_unknown_columns": {"type": "boolean"},
        "max_bytes": {"type": "integer", "minimum": 1, "maximum": 1024 * 1024 * 1024},
        "mapping": MAPPING_SCHEMA,
    },
}
_file_validator = Draft202012Validator(FILE_SCHEMA)


class FileSource:
    """The data rows of one CSV/Excel file as {column: value} items."""

    def __init__(self, config: Mapping[str, Any], context: ConnectorContext):
        self.config, self.context = config, context

    def iter_items(self) -> Iterator[dict[str, Any]]:
        name, data = self._read()
        yield from read_table_file(name, data, expected_columns=self.config.get("columns"),
                                   encoding=self.config.get("encoding"), sheet=self.config.get("sheet"),
                                   allow_unknown_columns=self.config.get("allow_unknown_columns", True))

    def _read(self) -> tuple[str, bytes]:
        limit = self.config.get("max_bytes", DEFAULT_MAX_FILE_BYTES)
        if "file" in self.config:
            if self.context.import_root is None:
                raise ConnectorError("the file connector names a file but no import folder is configured")
            name = self.config["file"]
            return name, read_import_file(self.context.import_root, name, max_bytes=limit)
        if self.context.upload is None:
            raise ConnectorError("the file connector has no `file` and no uploaded file was given "
                                 "for this run")
        name, data = self.context.upload
        if len(data) > limit:
            raise ConnectorError(f"the uploaded file exceeds the limit of {limit} bytes")
        return PurePosixPath(name).name, data


class FileConnector:
    """CSV (UTF-8, GBK) and .xlsx tables from the import folder or an upload (connectors/files.py)."""

    name = "file"
    config_schema = FILE_SCHEMA

    def validate(self, config: Any) -> list[str]:
        problems = sorted(f"{e.json_path}: {e.message}" for e in _file_validator.iter_errors(config))
        if problems:
            return problems
        name = config.get("file")
        if name is not None and (name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts):
            problems.append("$.file: must be a relative name inside the import folder")
        if name is not None and PurePosixPath(name).suffix.lower() not in (".csv", ".tsv", ".txt", ".xlsx"):
            problems.append("$.file: must be a .csv, .tsv, .txt or .xlsx file")
        if "encoding" in config and (problem := encoding_problem(config["encoding"])):
            problems.append(f"$.encoding: {problem}")
        problems += [f"$.mapping: {p}" for p in mapping_problems(config.get("mapping") or {})]
        return problems

    def open(self, config: Mapping[str, Any], secrets: Sequence[str] | Mapping[str, str] | None,
             context: ConnectorContext) -> FileSource:
        return FileSource(config, context)
