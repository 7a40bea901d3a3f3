"""The OpenAPI 3.1 description of the control API, served at `/api/openapi.json`.

Written by hand beside `api/` and `validate.py` (the schemas in `openapi_schemas.py`); the schemathesis test in
`tests/test_openapi.py` holds the three together.
"""

from store.web import paging, validate
from store.web.openapi_schemas import FETCH_BODY, ICON, PROBLEM, RECORD, REGISTRATION, REQUEST, UPDATE_BODY, URL, ref
from vocabulary import MAX_ID

FLAG = {"type": "string", "enum": ["0", "1"], "default": "0"}
EVENT_ID = {"type": "string", "pattern": "^[0-9]{1,19}$"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _problem(description: str) -> dict:
    return {"description": description, "content": {"application/problem+json": {"schema": ref("Problem")}}}


def _answers(ok: dict, *problems: int) -> dict:
    """An operation's responses: `ok` (status -> response), the problems it may answer, and 401."""
    return {**ok, **{str(status): {"$ref": f"#/components/responses/{PROBLEMS[status]}"} for status in (*problems, 401)}}


PROBLEMS = {
    400: "Invalid", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Gone",
    413: "TooLarge", 415: "NotJson", 416: "RangeNotSatisfiable", 503: "Unavailable",
}

ID_PARAMETER = {
    "name": "id", "in": "path", "required": True, "description": "The registration's id.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID},
}

REGISTRATION_ANSWER = {"description": "The registration.", "content": _json(ref("Registration"))}
BODY_ANSWER = {
    "description": "The body as a sandboxed attachment (Content-Disposition: attachment, Content-Security-Policy:"
                   " sandbox, nosniff), with the origin's Content-Type, ETag and Last-Modified.",
    "content": {"*/*": {"schema": {}}},
}


PAGE = {
    "type": "object", "required": ["ids"],
    "properties": {
        "ids": {"type": "array", "items": {"type": "string"}},
        "registrations": {"type": "array", "items": ref("Registration"),
                          "description": "with details=1: the registrations of `ids` (one deleted meanwhile is left out)"},
        "next": {"type": "string", "description": "the cursor of the next page; absent on the last one"},
    },
}


def _body(schema: dict) -> dict:
    return {"required": True, "content": _json(schema)}


PATHS = {
    "/api/fetches": {
        "get": {
            "operationId": "getIds", "summary": "getIds(): the ids of active registrations, a page at a time",
            "parameters": [
                {"name": "all", "in": "query", "schema": FLAG, "description": "1: every registration"},
                {"name": "limit", "in": "query", "description": "most ids in the answer",
                 "schema": {"type": "integer", "minimum": 1, "maximum": paging.LIMIT_MOST, "default": paging.LIMIT_DEFAULT}},
                {"name": "order", "in": "query", "description": "by when they were made: oldest (getIds()'s order) or newest first",
                 "schema": {"type": "string", "enum": list(paging.ORDERS), "default": paging.ORDERS[0]}},
                {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 64},
                 "description": "the `next` of the answer before: the page after it (in its order)"},
                {"name": "details", "in": "query", "schema": FLAG, "description": "1: each registration too"},
            ],
            "responses": _answers({"200": {"description": "A page of ids, oldest first unless asked otherwise.",
                                           "content": _json(PAGE)}}, 400),
        },
        "post": {
            "operationId": "fetch", "summary": "fetch(id, requests, options): start a background fetch",
            "requestBody": _body(ref("FetchBody")),
            "responses": _answers({"201": {
                **REGISTRATION_ANSWER,
                "headers": {"Location": {"required": True, "schema": {"type": "string"}, "description": "the registration's path"}},
                "links": {operation: {"operationId": operation, "parameters": {"id": "$response.body#/id", **index}}
                          for operation, index in [("get", {}), ("updateUI", {}), ("abort", {}), ("matchAll", {}),
                                                   ("responseReady", {"index": 0}), ("responseReadyHead", {"index": 0}),
                                                   ("delete", {})]},
            }}, 400, 409, 413, 415, 503),
        },
    },
    "/api/fetches/{id}": {
        "parameters": [ID_PARAMETER],
        "get": {"operationId": "get", "summary": "get(id)", "responses": _answers({"200": REGISTRATION_ANSWER}, 404)},
        "patch": {
            "operationId": "updateUI", "summary": "updateUI(title, icons); new request headers or URLs while paused",
            "requestBody": _body(ref("UpdateBody")),
            "responses": _answers({"200": REGISTRATION_ANSWER}, 400, 404, 409, 413, 415, 503),
        },
        "delete": {
            "operationId": "delete", "summary": "Delete the registration, its records and bodies (aborting it if active)",
            "responses": _answers({"204": {"description": "Deleted."}}, 404, 503),
        },
    },
    "/api/fetches/{id}/abort": {
        "parameters": [ID_PARAMETER],
        "post": {
            "operationId": "abort",
            "summary": "abort(): failure / aborted; partial bodies are discarded, complete records keep theirs",
            "requestBody": _body({"type": "object", "maxProperties": 0}),
            "responses": _answers({"200": REGISTRATION_ANSWER}, 400, 404, 409, 413, 415, 503),
        },
    },
    "/api/fetches/{id}/records": {
        "parameters": [ID_PARAMETER],
        "get": {
            "operationId": "matchAll",
            "summary": "matchAll(request, options); the first is match()'s answer. The records of a failed or"
                       " aborted fetch stay until DELETE, each with its response's status (404 for one that failed"
                       " with bad-status)",
            "parameters": [
                {"name": "url", "in": "query", "schema": URL, "description": "the request's URL; none: every record"},
                {"name": "method", "in": "query", "schema": {"type": "string", "default": "GET"}},
                {"name": "ignoreSearch", "in": "query", "schema": FLAG},
                {"name": "ignoreMethod", "in": "query", "schema": FLAG},
            ],
            "responses": _answers({"200": {"description": "The records that match.", "content": _json({
                "type": "object", "required": ["records"], "properties": {"records": {"type": "array", "items": ref("Record")}}})}},
                400, 404),
        },
    },
    "/api/fetches/{id}/records/{index}/body": {
        "parameters": [ID_PARAMETER, {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}],
        **{method: {
            "operationId": f"responseReady{suffix}",
            "summary": "The record's response body; Range supported. After a failure or an abort: a complete record's"
                       " body; an empty one for a record whose non-ok status failed the fetch; 410 for a record"
                       " that had not completed",
            "parameters": [{"name": name, "in": "header", "schema": {"type": "string"}} for name in ("Range", "If-Range")],
            "responses": _answers(
                {"200": BODY_ANSWER, "206": BODY_ANSWER, "default": _problem("The fetch failed: the origin's status or 502.")},
                403, 404, 410, 416, 503,
            ),
        } for method, suffix in (("get", ""), ("head", "Head"))},
    },
    "/api/events": {
        "get": {
            "operationId": "events",
            "summary": "Server-sent events progress, success, fail, abort; data: the registration",
            "parameters": [
                {"name": "Last-Event-ID", "in": "header", "schema": EVENT_ID, "description": "replay the events after this id"},
                {"name": "lastEventId", "in": "query", "schema": EVENT_ID, "description": "the same, for a client that sets no header"},
            ],
            "responses": _answers({"200": {"description": "The event stream.", "content": {"text/event-stream": {"schema": {"type": "string"}}}}}, 400),
        },
    },
    "/api/openapi.json": {
        "get": {"operationId": "openapi", "summary": "This document",
                "responses": _answers({"200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}})},
    },
}


def document(public_host: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bgfetch control API",
            "version": "1",
            "description": "The Background Fetch API (WICG) over HTTP: BackgroundFetchManager and "
                           "BackgroundFetchRegistration as JSON. State changes need Content-Type: application/json;"
                           " sent by a web browser (with Origin), also the dashboard's Bgfetch-Csrf-Token"
                           " header, unless the proxy runs with bgfetch_token;"
                           f" a body may hold {validate.MAX_BODY_BYTES} bytes (413 beyond) and nest arrays and objects"
                           f" {validate.MAX_DEPTH} levels deep (400 beyond).",
        },
        "servers": [{"url": f"http://{public_host}"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "description": "Needed when the proxy runs with bgfetch_token."}},
            "schemas": {
                "Registration": REGISTRATION, "Record": RECORD, "Request": REQUEST, "FetchBody": FETCH_BODY,
                "UpdateBody": UPDATE_BODY, "Icon": ICON, "Problem": PROBLEM,
            },
            "responses": {
                "Invalid": _problem(f"A value is invalid (a URL bgfetch may not fetch too: bgfetch itself, a bad port of the Fetch"
                                    f" standard), `field` names it; or the body is not"
                                    f" JSON in UTF-8 or nests deeper than {validate.MAX_DEPTH} levels (`field` is \"\")."),
                "Unauthorized": _problem("No or a wrong Authorization: Bearer token."),
                "Forbidden": _problem("The body was fetched with other credentials (Authorization, Cookie)."),
                "NotFound": _problem("No such registration or record."),
                "Gone": _problem("The record had not completed when its fetch failed or was aborted (type"
                                 " record-incomplete, the spec's AbortError): its bytes are gone."),
                "Conflict": _problem("The registration's state does not allow this (type id-in-use, not-paused, not-active);"
                                     " or, for fetch(), downloadTotal is more than bgfetch_quota leaves (type"
                                     " quota-exceeded, `field` downloadTotal: the spec's QuotaExceededError)."),
                "NotJson": _problem("The body must be Content-Type: application/json."),
                "TooLarge": _problem(f"The body is over {validate.MAX_BODY_BYTES} bytes."),
                "RangeNotSatisfiable": _problem("The Range lies past the body's end."),
                "Unavailable": _problem("The fetch is paused (lastError says why), or the store cannot write now (a full"
                                        " disk, another process's lock); Retry-After says when to try again."),
            },
        },
    }
