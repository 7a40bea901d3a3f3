"""The store's web app: bodies served with Range, the proxy's flows, the control API, the dashboard."""
