"""``python -m hsq_refunds.sandbox``: see :mod:`hsq_refunds.sandbox.cli`."""

import sys

from .cli import main

sys.exit(main())
