"""``python -m lelog``: the same as the ``lelog`` command."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
