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

Layers, each usable alone: :mod:`.keys` (loading keys), :mod:`.signing` (sign strings and
signatures), :mod:`.validation` (the value rules), :mod:`.response` (reading and verifying
answers), :mod:`.methods` (the typed requests), :mod:`.notification` (HSQ's refund
notification), :mod:`.transport` (HTTP, retries, the deadline) and :mod:`.client`. The protocol
as implemented is described in ``docs/protocol.md``.
"""

from .client import (
    ENVIRONMENTS,
    REFUND_APPLY_METHOD,
    REFUND_QUERY_METHOD,
    HsqClient,
    RateLimiter,
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
from .methods import READ_ONLY_METHODS, RefundApplyRequest, RefundQueryRequest, new_trans_no
from .notification import (
    notification_merchant_no,
    verify_notification,
    verify_notification_signature,
)
from .response import parse_refund_query_response, parse_signed_response, verify_result
from .results import RefundApplyResult, RefundQueryResult, RefundStatus, RespCode, SignedResult
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
    "READ_ONLY_METHODS",
    "REFUND_APPLY_METHOD",
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
    "RefundApplyRequest",
    "RefundApplyResult",
    "RefundQueryRequest",
    "RefundQueryResult",
    "RefundStatus",
    "RespCode",
    "ResponseError",
    "SignatureError",
    "SignedResult",
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
    "new_trans_no",
    "notification_merchant_no",
    "parse_refund_query_response",
    "parse_signed_response",
    "query_deadline",
    "resolve_base_url",
    "verify_notification",
    "verify_notification_signature",
    "verify_result",
]
