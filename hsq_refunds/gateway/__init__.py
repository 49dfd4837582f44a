"""HSQ's acquiring API, and nothing else: keys, signatures, the HTTP client, typed results.

This package imports no Django, so it can be used and tested on its own::

    from hsq_refunds.gateway import HsqClient

    with HsqClient(
        merchant_no="814000473149",
        sign_key=...,
        private_key="814000473149_pri.pfx",
        private_key_password=...,
        platform_key="MANDAO_814000473149_pub.cer",
        environment="test",
    ) as client:
        result = client.query_refund("DD20210812103012841")
"""

from .client import (
    ENVIRONMENTS,
    REFUND_QUERY_METHOD,
    HsqClient,
    RateLimiter,
    parse_refund_query_response,
)
from .errors import (
    ConfigurationError,
    GatewayError,
    HsqError,
    InvalidRequestError,
    ResponseError,
    SignatureError,
    TransportError,
)
from .keys import KeySource, load_platform_key, load_private_key
from .results import RefundQueryResult, RefundStatus, RespCode
from .validation import (
    EXTEND_MAX_LENGTH,
    MAX_AMOUNT_FEN,
    MERCHANT_NO_MAX_LENGTH,
    REFUND_REASON_MAX_LENGTH,
    REFUND_TYPE_MAX,
    RETRY_AFTER_CAP,
    RETURN_URL_MAX_LENGTH,
    TRANS_NO_MAX_LENGTH,
    check_amount,
    check_base_url,
    check_merchant_no,
    check_refund_type,
    check_return_url,
    check_text,
    check_trans_no,
    query_deadline,
    resolve_base_url,
)

__all__ = [
    "ENVIRONMENTS",
    "EXTEND_MAX_LENGTH",
    "MAX_AMOUNT_FEN",
    "MERCHANT_NO_MAX_LENGTH",
    "REFUND_QUERY_METHOD",
    "REFUND_REASON_MAX_LENGTH",
    "REFUND_TYPE_MAX",
    "RETRY_AFTER_CAP",
    "RETURN_URL_MAX_LENGTH",
    "TRANS_NO_MAX_LENGTH",
    "ConfigurationError",
    "GatewayError",
    "HsqClient",
    "HsqError",
    "InvalidRequestError",
    "KeySource",
    "RateLimiter",
    "RefundQueryResult",
    "RefundStatus",
    "RespCode",
    "ResponseError",
    "SignatureError",
    "TransportError",
    "check_amount",
    "check_base_url",
    "check_merchant_no",
    "check_refund_type",
    "check_return_url",
    "check_text",
    "check_trans_no",
    "load_platform_key",
    "load_private_key",
    "parse_refund_query_response",
    "query_deadline",
    "resolve_base_url",
]
