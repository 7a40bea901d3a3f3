"""The control API: the Background Fetch API's calls as JSON over HTTP.

| route | spec counterpart |
|---|---|
| `POST /api/fetches`, `GET /api/fetches[?all=1&limit=&order=&cursor=&details=1]` | `fetch()`, `getIds()` |
| `GET`, `PATCH`, `DELETE /api/fetches/{id}` | `get()`, `updateUI()`, — |
| `POST /api/fetches/{id}/abort` | `abort()` |
| `GET /api/fetches/{id}/records[?url=&ignoreSearch=1&ignoreMethod=1&method=]` | `matchAll()` |
| `GET /api/fetches/{id}/records/{n}/body` | `responseReady` |
| `GET /api/events` (text/event-stream), `GET /api/openapi.json` | events, — |

State changes take `Content-Type: application/json` (a form post cannot send it) and answer
`415` otherwise; a bad value is a `400` problem whose `field` names it; a body over
`validate.MAX_BODY_BYTES` is a `413` problem, and is never held whole.
"""

from store.web.api.base import ApiHandler, NoRoute, OpenApi
from store.web.api.events import Events
from store.web.api.fetches import Abort, Fetch, Fetches
from store.web.api.records import RecordBody, Records

ROUTES = [
    (r"/api/fetches", Fetches),
    (r"/api/fetches/([^/]+)", Fetch),
    (r"/api/fetches/([^/]+)/abort", Abort),
    (r"/api/fetches/([^/]+)/records", Records),
    (r"/api/fetches/([^/]+)/records/([0-9]+)/body", RecordBody),
    (r"/api/events", Events),
    (r"/api/openapi.json", OpenApi),
]

__all__ = ["ROUTES", "ApiHandler", "NoRoute"]
