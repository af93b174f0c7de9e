"""Keep the garbage collector off a big routing table.

A routing table is tens of thousands of small objects (routes, templates, matcher states). None
of them is ever part of a reference cycle (a table is a tree: refcounting frees it, see
``tests/core/test_table_gc.py``), yet CPython's cyclic collector walks every one of them at each
full collection, stalling every thread for tens to hundreds of milliseconds at 10,000-50,000
routes. After the view builds a table from a full listing it calls :func:`freeze_after_build`:
``gc.freeze()`` moves every object alive at that moment to the permanent generation, so later
full collections skip them.

The trade-off (CPython's, documented with ``gc.freeze``): it freezes the whole process, not only
the table. Frozen objects are still freed by reference counting when their last reference goes
(old tables, the app's ordinary objects); only *cyclic garbage* that already exists at that
moment is never collected. A young collection runs first to keep that small. Set
``MESHWARE_GC_FREEZE=0`` to turn it off (an app that manages ``gc`` itself, e.g. freezing before
forking workers, may prefer that); tables under :data:`FREEZE_MIN_ROUTES` are not worth it.
"""

from __future__ import annotations

import gc
import os

FREEZE_MIN_ROUTES = 2_000
"""Tables with fewer route shapes than this are not frozen (their collection is cheap)."""


def freeze_after_build(routes: int, env: dict[str, str] | None = None) -> bool:
    """Freeze what is alive after building a table of ``routes`` route shapes; whether it did."""
    setting = (os.environ if env is None else env).get("MESHWARE_GC_FREEZE", "1").strip()
    if setting == "0" or routes < FREEZE_MIN_ROUTES:
        return False
    gc.collect(1)  # young cyclic garbage goes first: what is frozen is never collected
    gc.freeze()
    return True
