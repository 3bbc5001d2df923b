"""``python -m mpgsam2.training CONFIG ...`` (also under ``torchrun -m mpgsam2.training``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
