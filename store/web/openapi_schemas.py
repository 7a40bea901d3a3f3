"""The schemas of the control API's JSON (registrations, records, request bodies, problems),
for the OpenAPI document (`openapi.py`)."""

from store.web import validate
from vocabulary import FAILURE_REASONS, MAX_BYTES, MAX_ID, MAX_TITLE, MAX_URL, RESULTS, STATES

TOKEN_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


REGISTRATION = {
    "type": "object",
    "description": "A BackgroundFetchRegistration, with the spec's names, plus bgfetch's transfer view.",
    "required": [
        "id", "title", "icons", "downloadTotal", "downloaded", "uploadTotal", "uploaded", "result",
        "failureReason", "recordsAvailable", "state", "records", "createdAt", "updatedAt", "lastError",
    ],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "icons": {"type": "array", "items": ref("Icon")},
        "downloadTotal": {"type": "integer", "minimum": 0, "description": "0: not given"},
        "downloaded": {"type": "integer", "minimum": 0},
        "uploadTotal": {"type": "integer", "minimum": 0},
        "uploaded": {"type": "integer", "minimum": 0},
        "result": {"type": "string", "enum": list(RESULTS)},
        "failureReason": {"type": "string", "enum": ["", *FAILURE_REASONS]},
        "recordsAvailable": {"type": "boolean", "description": "true: records stay, whatever the result, until DELETE"},
        "state": {"type": "string", "enum": list(STATES)},
        "records": {"type": "integer", "minimum": 1, "description": "how many requests it holds"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "lastError": {"type": "string"},
    },
}

RECORD = {
    "type": "object",
    "description": "A BackgroundFetchRecord: the request, and the response once its headers arrived. A failed or"
                   " aborted fetch keeps its records: a complete one (`complete`) with its body, the others with"
                   " their status (a non-ok one: the status that failed the fetch) and no body.",
    "required": ["index", "request", "response", "stored", "complete", "bodyUrl"],
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "request": {
            "type": "object", "required": ["url", "method"],
            "properties": {"url": {"type": "string"}, "method": {"type": "string"}},
        },
        "response": {
            "type": ["object", "null"],
            "required": ["status", "headers", "size"],
            "properties": {
                "status": {"type": "integer"},
                "headers": {
                    "type": "array",
                    "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
                },
                "size": {"type": ["integer", "null"], "description": "null while unknown"},
            },
        },
        "stored": {"type": "integer", "minimum": 0, "description": "bytes of the body stored so far"},
        "complete": {"type": "boolean"},
        "bodyUrl": {"type": "string", "description": "path of the body on this host"},
    },
}

HEADERS = {
    "type": "object", "maxProperties": 100, "propertyNames": {"pattern": TOKEN_PATTERN},
    "additionalProperties": {"type": "string", "pattern": r"^[\t\x20-\x7e]*$", "maxLength": validate.MAX_TEXT},
}

URL = {"type": "string", "pattern": r"^[hH][tT][tT][pP][sS]?://[^/?#\s]", "maxLength": MAX_URL,
       "description": "an absolute http or https URL"}

REQUEST = {
    "oneOf": [
        URL,
        {
            "type": "object", "required": ["url"], "additionalProperties": False,
            "properties": {
                "url": URL,
                "method": {"type": "string", "pattern": TOKEN_PATTERN, "maxLength": 32, "default": "GET"},
                "headers": HEADERS,
                "body": {"type": "string", "description": "the request body (not for GET)"},
                "integrity": {"type": "string", "pattern": r"^sha256-[A-Za-z0-9+/]{43}=$"},
            },
        },
    ],
}

FETCH_BODY = {
    "type": "object", "required": ["id", "requests"], "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID, "description": "printable characters"},
        "requests": {"type": "array", "minItems": 1, "maxItems": validate.MAX_REQUESTS, "items": ref("Request"),
                     "description": "a request may repeat: each is a record of its own"},
        "title": {"type": "string", "maxLength": MAX_TITLE},
        "icons": {"type": "array", "maxItems": validate.MAX_ICONS, "items": ref("Icon")},
        "downloadTotal": {"type": "integer", "minimum": 0, "maximum": MAX_BYTES,
                          "description": "0: no limit; more than bgfetch_quota leaves: 409 quota-exceeded"},
    },
}

UPDATE_BODY = {
    "type": "object", "additionalProperties": False,
    "description": "updateUI(title, icons); `records` only for a paused registration (new credentials or URL).",
    "properties": {
        "title": FETCH_BODY["properties"]["title"],
        "icons": FETCH_BODY["properties"]["icons"],
        "records": {
            "type": "array",
            "items": {
                "type": "object", "required": ["index"], "additionalProperties": False,
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "headers": {**HEADERS, "additionalProperties": {"type": ["string", "null"], "pattern": r"^[\t\x20-\x7e]*$"},
                                "description": "merged into the record's headers; null removes one"},
                    "url": URL,
                },
            },
        },
    },
}

ICON = {
    "type": "object", "required": ["src"], "additionalProperties": False,
    "properties": {name: {"type": "string", "maxLength": validate.MAX_TEXT} for name in sorted(validate.ICON_FIELDS)},
}

PROBLEM = {
    "type": "object", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457; `field` names the offending value of a request, e.g. requests[1].url.",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "field": {"type": "string"}, "registration": ref("Registration"),
    },
}
