"""How long to wait before trying again: doubling, capped, with jitter (transfers and the webhook)."""

import random

RETRY_BASE = 0.5


def backoff(attempt: int, cap: float) -> float:
    """Seconds to wait before retry `attempt` (0-based): doubling, capped, with jitter."""
    delay = min(cap, RETRY_BASE * 2**attempt)
    return delay * random.uniform(0.5, 1.0)
