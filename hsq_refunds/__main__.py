"""``python -m hsq_refunds``: the merchant's command line (see :mod:`hsq_refunds.cli`)."""

from hsq_refunds.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
