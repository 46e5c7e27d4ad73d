"""The OpenAPI 3.0 document of the server, written by hand to match ``app._routes``."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_COMPONENT = {
    "type": "object",
    "required": ["path", "state", "good", "total", "k", "coherence"],
    "properties": {
        "path": {"type": "string"},
        "state": {"type": "string", "enum": ["intact", "recoverable", "lost"]},
        "good": {"type": "integer"},
        "total": {"type": "integer"},
        "k": {"type": "integer"},
        "coherence": {"type": "number"},
        "original_ok": {"type": "boolean"},
    },
}
_HEALTH = {
    "type": "object",
    "required": ["state", "components"],
    "properties": {
        "state": {"type": "string", "enum": ["unchecked", "intact", "degraded", "lost"]},
        "checked_at": {"type": "string", "nullable": True},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "components": {"type": "array", "items": {"$ref": "#/components/schemas/Component"}},
    },
}
_PACKAGE = {
    "type": "object",
    "required": ["name", "version", "size", "health"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "integer"},
        "size": {"type": "integer"},
        "files": {"type": "integer"},
        "created": {"type": "string"},
        "expires": {"type": "string", "nullable": True},
        "seconds_left": {"type": "integer", "nullable": True,
                         "description": "seconds until the manifest expires (negative: expired)"},
        "expiry_state": {"type": "string", "enum": ["ok", "expiring", "expired"],
                         "description": "expiring: within 7 days"},
        "versions": {"type": "array", "items": {"type": "integer"},
                     "description": "versions kept (the last one is served)"},
        "signers": {"type": "array", "items": {"type": "string"},
                    "description": "key ids of the manifest's signatures"},
        "health": {"$ref": "#/components/schemas/Health"},
    },
}

NAME = {
    "name": "name", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
}
PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "version", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 0}}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _binary(desc: str, media: str = "application/octet-stream") -> dict[str, Any]:
    return {"description": desc, "content": {media: {"schema": {"type": "string",
                                                                "format": "binary"}}}}


def _json(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


_STATIC_RESPONSES = {
    "200": _binary("the file (gzip when asked and compressible)"),
    "206": _binary("one byte range"),
    "304": {"description": "not modified (If-None-Match / If-Modified-Since)"},
    "400": _err("unsafe path"),
    "404": _err("no such package, version or file"),
    "416": {"description": "range not satisfiable"},
    "503": _err("the stored bytes are damaged beyond repair"),
}
_RANGE_HEADERS = [
    {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
]


def _static(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": [*params, *_RANGE_HEADERS],
                    "responses": _STATIC_RESPONSES}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 description of every route the server answers."""
    auth: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "AuraSeal package distribution API",
            "version": "1.0.0",
            "description": "Sealed packages, their files and parts, publish, and the ledger. "
            "See docs/SERVER.md.",
        },
        "paths": {
            "/healthz": {"get": {
                "summary": "liveness and warnings",
                "description": "Always 200 while the server answers. status is \"degraded\" "
                "(with one reason each) when a manifest expires within 7 days or has "
                "expired, or a package was found lost or damaged.",
                "responses": {"200": _json("ok or degraded", {
                    "type": "object", "required": ["status", "reasons"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "degraded"]},
                        "reasons": {"type": "array", "items": {"type": "string"}},
                        "packages": {"type": "integer"},
                        "ledger": {"type": "boolean"}}})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/packages": {"get": {"summary": "packages served", "responses": {
                "200": _json("packages", {
                    "type": "object", "required": ["packages"],
                    "properties": {"packages": {"type": "array", "items": {
                        "$ref": "#/components/schemas/Package"}}}})}}},
            "/packages/{name}": {
                "get": {
                    "summary": "the package as a zip archive (docs/FORMAT.md)",
                    "parameters": [NAME, {
                        "name": "coherence", "in": "query", "required": False,
                        "schema": {"type": "number", "minimum": 0, "maximum": 1,
                                   "default": 0.954}}, *_RANGE_HEADERS],
                    "responses": {
                        "200": _binary("zip archive", "application/zip"),
                        "206": _binary("one byte range", "application/zip"),
                        "304": {"description": "not modified"},
                        "400": _err("bad coherence"),
                        "404": _err("no such package"),
                        "416": {"description": "range not satisfiable"},
                        "503": _json("below the requested coherence", {
                            "type": "object", "required": ["error", "components"],
                            "properties": {
                                "error": {"type": "object"},
                                "package": {"type": "string"},
                                "version": {"type": "integer"},
                                "requested_coherence": {"type": "number"},
                                "components": {"type": "array", "items": {
                                    "$ref": "#/components/schemas/Component"}}}}),
                    },
                },
                "put": {
                    "summary": "publish a sealed package zip, or only a new signed manifest",
                    "description": "A body that is a signed manifest (application/json) "
                    "publishes a new version whose files are the served version's (hard "
                    "links); its files must be identical to the served ones (409 otherwise).",
                    "security": auth,
                    "parameters": [NAME],
                    "requestBody": {"required": True, "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}},
                        "application/json": {"schema": {"type": "object"}}}},
                    "responses": {
                        "201": _json("published", {"type": "object", "required": ["package",
                                                                                    "version"],
                                                   "properties": {
                                                       "package": {"type": "string"},
                                                       "version": {"type": "integer"},
                                                       "ledger_entry": {"type": "string",
                                                                        "nullable": True}}}),
                        "400": _err("bad upload"),
                        "401": _err("missing or invalid token"),
                        "403": _err("not signed by trusted keys"),
                        "409": _err("version not greater than the one served, or (a "
                                    "manifest-only publish) files differ from the served "
                                    "version"),
                        "413": _err("too large"),
                        "422": _err("package fails its own manifest"),
                    },
                },
            },
            "/packages/{name}/scrub": {"post": {
                "summary": "scrub and repair a package now", "security": auth,
                "parameters": [NAME],
                "responses": {"200": _json("health", {"type": "object"}),
                              "401": _err("missing or invalid token"),
                              "404": _err("no such package")}}},
            "/packages/{name}/root": {"put": {
                "summary": "store the next root of trust (docs/KEYS.md)", "security": auth,
                "parameters": [NAME],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object"}}}},
                "responses": {"201": _json("stored", {"type": "object"}),
                              "400": _err("not a root, or its previous version is missing"),
                              "401": _err("missing or invalid token"),
                              "403": _err("signatures short of a threshold (a draft)"),
                              "409": _err("another root of that version is stored")}}},
            "/packages/{name}/integrity-manifest.json": _static(
                "the signed manifest of the current version", [NAME]),
            "/packages/{name}/files/{path}": _static(
                "a file, a part (<path>.part.<M>) or the manifest of the current version; "
                "also root/<N>.json, timestamp.json and ledger-proof.json (the ledger proof "
                "of the publish of the current version, docs/LEDGER.md)",
                [NAME, PATH]),
            "/packages/{name}/parts/{part}": _static(
                "part number of the (only, or ?component=) sealed component",
                [NAME, {"name": "part", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 255}},
                 {"name": "component", "in": "query", "required": False,
                  "schema": {"type": "string"}}]),
            "/packages/{name}/versions": {"get": {
                "summary": "versions kept for the package (the last one is served)",
                "parameters": [NAME],
                "responses": {
                    "200": _json("versions", {
                        "type": "object", "required": ["package", "current", "versions"],
                        "properties": {"package": {"type": "string"},
                                       "current": {"type": "integer"},
                                       "versions": {"type": "array",
                                                    "items": {"type": "integer"}}}}),
                    "404": _err("no such package")}}},
            "/packages/{name}/versions/{version}/integrity-manifest.json": _static(
                "the manifest of a kept version (immutable)", [NAME, VERSION]),
            "/packages/{name}/versions/{version}/files/{path}": _static(
                "a file or part of a kept version (immutable)", [NAME, VERSION, PATH]),
            "/reports": {"post": {
                "summary": "browsers' Integrity-Policy reports (Reporting API) → ledger events",
                "requestBody": {"required": True, "content": {
                    media: {"schema": {"type": "array", "items": {"type": "object"}}}
                    for media in ("application/reports+json", "application/json")}},
                "responses": {"200": _json("recorded", {
                    "type": "object", "required": ["recorded", "dropped"],
                    "properties": {"recorded": {"type": "array", "items": {"type": "string"}},
                                   "dropped": {"type": "integer"}}}),
                              "400": _err("not JSON"), "413": _err("larger than 64 KiB"),
                              "429": _err("too many reports")}}},
            "/ledger/entries": {"post": {
                "summary": "record an entry", "security": auth,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["type"],
                    "properties": {"type": {"type": "string"}, "data": {"type": "object"}}}}}},
                "responses": {"201": _json("recorded", {"type": "object", "required": ["id"],
                                                        "properties": {"id": {"type": "string"}}}),
                              "400": _err("bad body"), "401": _err("missing or invalid token"),
                              "503": _err("no ledger")}}},
            "/ledger/entries/{entry_id}": {"get": {
                "summary": "an entry with its inclusion proof",
                "parameters": [{"name": "entry_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json("entry", {"type": "object"}),
                              "404": _err("no such entry"), "503": _err("no ledger")}}},
            "/ledger/checkpoint": {"get": {"summary": "the latest signed checkpoint", "responses": {
                "200": {"description": "C2SP signed note",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                "404": _err("no block yet"), "503": _err("no ledger")}}},
            "/ledger/consistency": {"get": {
                "summary": "consistency proof between two tree sizes",
                "parameters": [
                    {"name": "from", "in": "query", "required": True,
                     "schema": {"type": "integer", "minimum": 0}},
                    {"name": "to", "in": "query", "required": True,
                     "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": _json("proof", {"type": "object"}),
                              "400": _err("bad sizes"), "404": _err("no such size"),
                              "503": _err("no ledger")}}},
            "/ledger/verifier-key": {"get": {
                "summary": "the note verifier key of the server's checkpoints", "responses": {
                    "200": {"description": "name+hexid+base64 key",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "503": _err("no ledger")}}},
            "/ledger/blocks/{number}": {"get": {
                "summary": "a committed block",
                "parameters": [{"name": "number", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": _json("block", {"type": "object"}),
                              "404": _err("no such block"), "503": _err("no ledger")}}},
        },
        "components": {
            "schemas": {"Error": _ERROR, "Component": _COMPONENT, "Health": _HEALTH,
                        "Package": _PACKAGE},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
