"""Task ids and public references, drawn together from the OS random generator."""

from __future__ import annotations

import secrets
import string

REFERENCE_ALPHABET = string.ascii_uppercase + string.digits
REFERENCE_LENGTH = 11


def new_reference() -> str:
    """An 11-character public reference such as `HD6EKSD8DO9`, uniform over [A-Z0-9]."""
    return new_ids(1)[0][1]


def new_ids(count: int) -> list[tuple[str, str]]:
    """`count` pairs of (random UUID4 string, reference), from one draw of the OS generator
    (a system call per id was a tenth of the enqueue cost).

    A reference takes 16 random bytes, drops those of 252 and above (252 = 7 * 36) and maps
    the rest to `byte % 36`: uniform over [A-Z0-9], all of it in C (`bytes.translate`).
    Fewer than 11 survive about once in 10**13 draws; that pair is drawn again.
    """
    pool = secrets.token_bytes(32 * count)
    out: list[tuple[str, str]] = []
    for start in range(0, 32 * count, 32):
        raw = bytearray(pool[start : start + 16])
        raw[6] = raw[6] & 0x0F | 0x40  # version 4
        raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
        h = raw.hex()
        chars = pool[start + 16 : start + 32].translate(_REFERENCE_TABLE, _REFERENCE_DROP)
        if len(chars) < REFERENCE_LENGTH:
            out.extend(new_ids(1))
            continue
        reference = chars[:REFERENCE_LENGTH].decode()
        out.append((f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", reference))
    return out


_REFERENCE_TABLE = bytes(ord(REFERENCE_ALPHABET[b % 36]) for b in range(256))
_REFERENCE_DROP = bytes(range(252, 256))
