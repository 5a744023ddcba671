"""Task ids and public references: random UUID4s, references uniform over [A-Z0-9]."""

from __future__ import annotations

import uuid
from collections import Counter

from schedule.ids import REFERENCE_ALPHABET, new_ids, new_reference


def test_new_ids_are_random_uuid4_and_references() -> None:
    pairs = new_ids(2000)
    ids = [uuid.UUID(i) for i, _ in pairs]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in ids)
    assert [str(u) for u in ids] == [i for i, _ in pairs]  # canonical lower-case form
    assert len(set(ids)) == 2000 and len({r for _, r in pairs}) == 2000
    assert all(len(r) == 11 and set(r) <= set(REFERENCE_ALPHABET) for _, r in pairs)


def test_references_use_the_whole_alphabet_evenly() -> None:
    draws = "".join(r for _, r in new_ids(2000)) + "".join(new_reference() for _ in range(2000))
    counts = Counter(draws)
    assert set(counts) == set(REFERENCE_ALPHABET)
    expected = len(draws) / len(REFERENCE_ALPHABET)
    # each count is binomial (n=44000, p=1/36): sd ~ 34.5, so 6 sd never fails by chance
    assert all(abs(n - expected) < 6 * 34.5 for n in counts.values()), counts
