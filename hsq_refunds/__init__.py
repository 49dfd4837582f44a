"""hsq_refunds: refunds at 慧收钱 (Huishouqian, HSQ) in a Django project."""

__version__ = "0.2.0"
