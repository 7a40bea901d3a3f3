"""A Bloom filter of URL digests: a fixed-size bit array that says "maybe" for every URL added.

The proxy asks it about every request before it asks SQLite; the store names the URLs its
records take by `protocol.url_digest`, a fixed-size hash, so an announcement is small whatever
the URL.
A false "maybe" costs one indexed query; a "no" is always right for what was added.
"""

import struct

HASHES = 7  # bit tests per URL: about 1 % false "maybe" at BITS_PER_URL
BITS_PER_URL = 10
MIN_BITS = 1 << 20  # 128 KiB
MAX_BITS = 1 << 28  # 32 MiB: room for about 27 million URLs


def bits_for(urls: int) -> int:
    """A power of two of bits with room for twice `urls`, within MIN_BITS and MAX_BITS."""
    wanted = 2 * BITS_PER_URL * max(urls, 1)
    return min(max(1 << (wanted - 1).bit_length(), MIN_BITS), MAX_BITS)


class BloomFilter:
    """`HASHES` bits per 16-byte digest in a bytearray of `bits` bits (a power of two): double hashing
    of the digest's two 64-bit halves. `added` counts what went in, repeats included."""

    def __init__(self, bits: int = MIN_BITS) -> None:
        if bits < 8 or bits & (bits - 1):
            raise ValueError(f"bits must be a power of two of 8 or more, got {bits}")
        self.mask = bits - 1
        self.array = bytearray(bits // 8)
        self.added = 0

    @property
    def capacity(self) -> int:
        """How many digests it holds before a "maybe" is wrong more often than about 1 %."""
        return (self.mask + 1) // BITS_PER_URL

    @property
    def full(self) -> bool:
        return self.added > self.capacity

    def add(self, digest: bytes) -> None:
        position, step = _halves(digest)
        array, mask = self.array, self.mask
        for _ in range(HASHES):
            bit = position & mask
            array[bit >> 3] |= 1 << (bit & 7)
            position += step
        self.added += 1

    def __contains__(self, digest: bytes) -> bool:
        position, step = _halves(digest)
        array, mask = self.array, self.mask
        for _ in range(HASHES):
            bit = position & mask
            if not array[bit >> 3] & (1 << (bit & 7)):
                return False
            position += step
        return True


_TWO_WORDS = struct.Struct("<QQ")


def _halves(digest: bytes) -> tuple[int, int]:
    """The start and the (odd, so never zero) step of a digest's bit positions."""
    position, step = _TWO_WORDS.unpack(digest)
    return position, step | 1
