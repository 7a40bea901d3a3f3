"""The storage contract for a fleet: PostgreSQL for registrations, records and leases, S3-compatible object storage
for bodies (`store.db.postgres.storage.PostgresStorage`)."""
