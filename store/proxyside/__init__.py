"""The store's proxy side: what runs inside mitmproxy (starting and watching the store process,
the lookup "is this URL stored?") and the protocol between the two processes."""
