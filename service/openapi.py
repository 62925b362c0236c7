"""The OpenAPI document, corrected to describe the server that answers.

Litestar builds the document from the handlers; a few things it cannot know or gets wrong are
set right here, on the served JSON (``/schema/openapi.json`` and the docs page):

- request bodies are described by msgspec from the very Structs that validate them, so item
  constraints, ``additionalProperties: false`` (unknown fields are refused) and integer limits
  are exactly what the server enforces;
- integer bounds are integers (Litestar writes 2^63-1 as the float 9.223372036854776e18, one
  past the real maximum);
- the service-token scheme (``Authorization: Bearer``) is declared, so the docs page has an
  Authorize button; the health probes need no token and never answer 401/403;
- every operation has a description: its summary, and the rules a schema cannot express
  (the cursor's format, the idempotency key, the token scope it needs);
- every GET has its HEAD (app.FreyaApp answers it), which Litestar does not list.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from service.fields import MAX_ID, NO_NUL

_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "A service token of FREYA_API_TOKENS (needed only when it is set). GET, HEAD and "
    "OPTIONS need the read scope, other methods write, /v1/admin admin.",
}

_NOTES = {
    "cursor": "Paging: pass the previous page's `next_cursor` as `cursor` to get the next page; a cursor "
    "is opaque, signed, and valid only for the same list with the same filters (anything else is a 400).",
    "fields": "`fields` is a comma-separated list of field names, among those of the item schema; "
    "only those are returned (and selected); an unknown name is a 400.",
    "q": '`q` is web-search syntax: words, "quoted phrases", `or`, and `-word` to exclude; any text up to '
    "the length limit is accepted.",
}
_BULK = "Each message may appear once in `updates` (a 400 otherwise); nothing is written unless all exist."
_IDEMPOTENT = (
    "Send an `Idempotency-Key` header (1-255 printable ASCII characters) to make a retry safe: the first "
    "answer is stored with the write in one transaction, and a retry with the same key and body gets it "
    "again (`Idempotent-Replayed: true`) instead of writing twice. The same key with another body is a 422."
)


# Rules of a body that its Struct cannot state: an edit needs content, role or both (not null),
# a conversation's edit title, metadata or both (present; a null title clears it).
_AT_LEAST_ONE_OF = {"MessageUpdate": ("content", "role"), "MessageUpdateItem": ("content", "role")}
_AT_LEAST_ONE_PRESENT = {"ConversationUpdate": ("title", "metadata")}
# metadata is any JSON without a NUL character in any string (jsonb cannot hold one): recursively.
_JSON_WITHOUT_NUL = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonWithoutNul"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/JsonWithoutNul"},
        },
    ]
}


def request_body_schemas() -> dict[str, Any]:
    """msgspec's JSON Schema of every request body Struct (those that refuse unknown fields), by name."""
    structs = [cls for cls in _all_structs() if cls.__struct_config__.forbid_unknown_fields]
    _, components = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    for name, fields in _AT_LEAST_ONE_OF.items():
        components[name]["anyOf"] = [
            {"required": [field], "properties": {field: {"not": {"type": "null"}}}} for field in fields
        ]
    for name, fields in _AT_LEAST_ONE_PRESENT.items():
        components[name]["anyOf"] = [{"required": [field]} for field in fields]
    components["JsonWithoutNul"] = _JSON_WITHOUT_NUL
    for schema in components.values():
        metadata = schema.get("properties", {}).get("metadata")
        if metadata is not None:
            metadata["propertyNames"] = {"pattern": NO_NUL}
            metadata["additionalProperties"] = {"$ref": "#/components/schemas/JsonWithoutNul"}
    return components


def _all_structs() -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []
    pending = list(msgspec.Struct.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("service.") and cls.__module__ != "service.settings":
            found.append(cls)
    return found


def correct(document: dict[str, Any]) -> dict[str, Any]:
    """Set the document right, in place (each step may run again on its own output)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(request_body_schemas())
    # With fields= a message has only the fields chosen: none of them is always there.
    schemas.get("Message", {}).pop("required", None)
    components.setdefault("securitySchemes", {})["bearer"] = _BEARER
    document["security"] = [{"bearer": []}]
    for path, item in document.get("paths", {}).items():
        if "get" in item:
            item["head"] = _head_of(item["get"])
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                _correct_operation(path, method, operation)
    _integer_bounds(document)
    return document


def _correct_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    if path.startswith("/health/"):
        operation["security"] = []
        for status in ("401", "403"):
            operation["responses"].pop(status, None)
    if operation.get("description"):
        return
    names = {parameter.get("name") for parameter in operation.get("parameters", [])}
    notes = [note for name, note in _NOTES.items() if name in names]
    if method == "post" and path.startswith("/v1/") and not path.startswith("/v1/admin/"):
        notes.append(_IDEMPOTENT)
    if (method, path) == ("patch", "/v1/messages"):
        notes.append(_BULK)
    operation["description"] = "\n\n".join([operation.get("summary", "") + ".", *notes])


def _head_of(get: dict[str, Any]) -> dict[str, Any]:
    """The HEAD of a GET operation: its parameters and statuses, with headers but no body."""
    head = copy.deepcopy(get)
    head["operationId"] = f"{get.get('operationId', '')}Head"
    head["summary"] = f"{get.get('summary', '')} (headers only)"
    head.pop("description", None)  # written again by _correct_operation, from the new summary
    for response in head.get("responses", {}).values():
        response.pop("content", None)
    return head


def _integer_bounds(node: Any) -> None:
    """Integer limits as integers; 2^63 (the float Litestar writes for 2^63-1) as 2^63-1."""
    if isinstance(node, list):
        for child in node:
            _integer_bounds(child)
    elif isinstance(node, dict):
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            value = node.get(key)
            if isinstance(value, float) and value.is_integer():
                node[key] = MAX_ID if value >= MAX_ID else int(value)
        for child in node.values():
            _integer_bounds(child)


class OpenAPIJson(JsonRenderPlugin):
    """``/schema/openapi.json``, corrected."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, correct(openapi_schema))


class CorrectedSwagger(SwaggerRenderPlugin):
    """The docs page, showing the corrected document."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, correct(openapi_schema))
