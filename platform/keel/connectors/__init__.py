"""Connectors: how Keel reads the systems it does not own (HR, CRM, finance, IM, meeting notes).

`transport` is the one outbound HTTP client (SSRF checks, credentials bound to origins); `templates`
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
from keel.connectors.transport import (
    ConnectionFailed,
    Credential,
    DestinationRefused,
    OutboundClient,
    OutboundError,
    OutboundTimeout,
    Response,
    ResponseTooLarge,
    TooManyRedirects,
    redact,
    redact_url,
)

__all__ = [
    "HTTP_JSON_SCHEMA",
    "ArchiveRefused",
    "ConnectionFailed",
    "ConnectorError",
    "Credential",
    "DestinationRefused",
    "HttpJsonSource",
    "ImportPathRefused",
    "MappingError",
    "MappingProblem",
    "OutboundClient",
    "OutboundError",
    "OutboundTimeout",
    "Response",
    "ResponseTooLarge",
    "TableFileError",
    "TemplateError",
    "TooManyRedirects",
    "compile_mapping",
    "csv_safe_cell",
    "extract_zip",
    "map_item",
    "map_items",
    "read_import_file",
    "read_table_file",
    "redact",
    "redact_url",
    "render",
    "safe_import_path",
    "validate_config",
]
