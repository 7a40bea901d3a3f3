"""The background fetch store: SQLite bodies, transfers, registrations and the local web app."""
