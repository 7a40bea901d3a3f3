"""The engine: registrations, their lifecycle, transfers, events and the webhook."""
