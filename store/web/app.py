"""The store's tornado applications: the internal one behind the proxy, the public listen port."""

import tornado.web

from store.proxyside import options, protocol
from store.engine.service import Store
from store.engine.destinations import Destinations
from store.web import api, dashboard, forgery, operations, proxied


def make_app(
    store: Store, *, secret: str | None, token: str | None, public_host: str, page_secret: str | None = None,
    destinations: Destinations | None = None,
    paused_read_timeout: float = options.BY_NAME["bgfetch_paused_read_timeout"].default,
) -> tornado.web.Application:
    """`secret` set: the internal app, which answers only the proxy and also takes its flows.
    `page_secret`: the dashboard's secret for state changes (`forgery`); one of its own if None.
    `destinations`: where new fetches may go (by default: anywhere but `public_host`).
    `paused_read_timeout`: seconds a reader of a fetch that does not move waits for new bytes."""
    api_options = {"store": store, "secret": secret, "token": token}
    routes = [(path, handler, api_options) for path, handler in api.ROUTES]
    routes.append((r"/", dashboard.Dashboard, {**api_options, "token": None}))  # the page asks for it
    routes += [(path, handler, {**api_options, "token": token if guarded else None})
               for path, handler, guarded in operations.ROUTES]
    if secret is not None:  # flows of any client: the origin's credentials, not the API token
        flow_options = {"store": store, "secret": secret, "token": None}
        routes += [
            (protocol.FETCH_PATH, proxied.ProxiedFetch, flow_options),
            (protocol.STORED_PATH, proxied.ProxiedStored, flow_options),
        ]
    return tornado.web.Application(
        routes,
        public_host=public_host,
        page_secret=page_secret or forgery.new_secret(),
        destinations=destinations or Destinations(public_host),
        paused_read_timeout=paused_read_timeout,
        compress_response=False,
        default_handler_class=api.NoRoute,
        default_handler_args=api_options,
    )
