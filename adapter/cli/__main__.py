"""`python -m adapter.cli`: the same as the `axiom-cds` console script (worker processes re-import this)."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    main()
