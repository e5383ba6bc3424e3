"""`SectionStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

from store.seq import check_section_size


class MemorySectionStore:
    """In-memory `SectionStore`: the embedded mode's, and the twin in the contract tests."""

    def __init__(self) -> None:
        self._max: dict[str, int] = {}

    async def reserve(self, timeline: str, size: int) -> int:
        """Raise the reserved maximum by `size`; return the new maximum."""
        check_section_size(size)
        new_max = self._max.get(timeline, 0) + size
        self._max[timeline] = new_max
        return new_max

    async def reserved(self, timeline: str) -> int:
        """The highest reserved seq (0 if none)."""
        return self._max.get(timeline, 0)
