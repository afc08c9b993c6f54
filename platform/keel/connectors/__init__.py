"""Connectors: how Keel reads the systems it does not own (HR, CRM, finance, IM, meeting notes).

Outbound HTTP goes through keel.outbound (SSRF checks, credentials bound to origins); `templates`
renders admin templates in Jinja's immutable sandbox; `mapping` turns source items into entity values;
`http_json` and `files` are the built-in sources. Importing this package opens no connection.
"""
from __future__ import annotations

from keel.connectors.files import (
    ArchiveRefused,
    ImportPathRefused,
    TableFileError,
    csv_safe_cell,
    extract_zip,
    read_import_file,
    read_table_file,
    safe_import_path,
)
from keel.connectors.http_json import HTTP_JSON_SCHEMA, ConnectorError, HttpJsonSource, validate_config
from keel.connectors.mapping import MappingError, MappingProblem, compile_mapping, map_item, map_items
from keel.connectors.templates import TemplateError, render

__all__ = [
    "HTTP_JSON_SCHEMA",
    "ArchiveRefused",
    "ConnectorError",
    "HttpJsonSource",
    "ImportPathRefused",
    "MappingError",
    "MappingProblem",
    "TableFileError",
    "TemplateError",
    "compile_mapping",
    "csv_safe_cell",
    "extract_zip",
    "map_item",
    "map_items",
    "read_import_file",
    "read_table_file",
    "render",
    "safe_import_path",
    "validate_config",
]
