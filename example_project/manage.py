#!/usr/bin/env python
"""Django's command line for the example project.

Works from anywhere: ``python example_project/manage.py ...``, or from the repository root
``python -m django --settings example_project.settings ...``.
"""

import os
import sys
from pathlib import Path


def main() -> None:
    # Run as a script, Python puts this folder on sys.path, not the one holding the package.
    repo = str(Path(__file__).resolve().parent.parent)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
