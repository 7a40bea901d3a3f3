"""The problems (RFC 9457) the proxy answers itself, before or instead of the store."""

from vocabulary import MAX_URL  # the longest URL of a background fetch, the API's too

TYPES = "https://bgfetch.dev/problems/"
UNAVAILABLE = {
    "type": TYPES + "store-unavailable",
    "title": "Store unavailable",
    "status": 503,
    "detail": "The bgfetch store process is not ready (it is starting, or starting again after it stopped);"
    " see mitmproxy's log.",
}
RETRY_AFTER = "2"  # seconds, for the Retry-After header of UNAVAILABLE


def url_too_long(length: int) -> dict:
    return {
        "type": TYPES + "url-too-long",
        "title": "URL too long for a background fetch",
        "status": 414,
        "detail": f"The URL is {length} characters; a background fetch takes at most {MAX_URL}.",
        "limit": MAX_URL,
    }


def not_found(path: str) -> dict:
    """The API's 404, for a path that only the proxy may use on the store."""
    return {"type": TYPES + "not-found", "title": "Not found", "status": 404,
            "detail": f"No such path: {path.split('?', 1)[0]}."}
