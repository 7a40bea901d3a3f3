"""Storage: the SQLite database of registrations, records and body chunks, written by one thread."""
