"""The ``busctl`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Control a running busd (not yet implemented)."""
    print("busctl: not yet implemented", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
