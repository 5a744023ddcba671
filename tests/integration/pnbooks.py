"""Helpers shared by the partnumber-book tests: source rows and a hand-driven clock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from schedule.models import (
    lot_partnumbers,
    qt_lot_bundle_items,
    qt_lot_bundles,
    qt_partnumber_book_items,
    qt_partnumber_books,
    qt_vendor_partnumber_seen,
)


def mapping(
    partnumber: str,
    lot_name: str | None,
    vendor: str = "",
    description: str | None = None,
    primary: bool = True,
) -> dict[str, Any]:
    """A `lot_partnumbers` row."""
    return {
        "vendor": vendor,
        "partnumber": partnumber,
        "lot_name": lot_name,
        "description": description,
        "is_primary_pn": primary,
    }


def seen(partnumber: str, ignored: bool = True, pattern: bool = False) -> dict[str, Any]:
    """A `qt_vendor_partnumber_seen` row."""
    return {
        "partnumber": partnumber,
        "vendor": "",
        "is_ignored": ignored,
        "is_pattern": pattern,
        "source_type": "test",
    }


async def load(
    db: AsyncEngine,
    mappings: list[dict[str, Any]],
    bundles: dict[str, list[tuple[str, int]]] | None = None,
    seen_rows: list[dict[str, Any]] | None = None,
    loose_bundle_items: list[tuple[str, str, int]] | None = None,
) -> None:
    """Replace the source tables' content."""
    async with db.begin() as conn:
        for table in (
            lot_partnumbers,
            qt_lot_bundles,
            qt_lot_bundle_items,
            qt_vendor_partnumber_seen,
        ):
            await conn.execute(delete(table))
        if mappings:
            await conn.execute(insert(lot_partnumbers), mappings)
        for name, parts in (bundles or {}).items():
            await conn.execute(insert(qt_lot_bundles).values(bundle_lot_name=name))
            for lot, qty in parts:
                await conn.execute(
                    insert(qt_lot_bundle_items).values(bundle_lot_name=name, lot_name=lot, qty=qty)
                )
        for bundle, lot, qty in loose_bundle_items or []:
            await conn.execute(
                insert(qt_lot_bundle_items).values(bundle_lot_name=bundle, lot_name=lot, qty=qty)
            )
        if seen_rows:
            await conn.execute(insert(qt_vendor_partnumber_seen), seen_rows)


async def clear_books(db: AsyncEngine) -> None:
    """Remove every book."""
    async with db.begin() as conn:
        await conn.execute(delete(qt_partnumber_book_items))
        await conn.execute(delete(qt_partnumber_books))
