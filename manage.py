#!/usr/bin/env python
"""Django's command-line utility for Costline."""

import os
import sys
from pathlib import Path

# `platform/` holds the `costline` package; it is a folder, never an importable package, because a
# package named `platform` would shadow Python's standard `platform` module.
ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costline.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
