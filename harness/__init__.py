"""The real parts bgfetch is run between, for its tests and its benchmarks: a misbehaving origin,
a `mitmdump -s addon.py` on free ports, and a bounded wait for a condition to hold.

Both `tests/` and `bench/` import this package; it imports neither of them."""
