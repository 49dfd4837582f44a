"""The widths of the columns that hold the gateway's text, and making that text storable.

The models declare their columns with these constants and the rules cut the gateway's text to
them, so a width is written once. Text from the gateway is untrusted: :func:`storable` turns any
of it into something every supported database accepts (PostgreSQL refuses NUL in text, and no
database can encode a lone surrogate as UTF-8) before it is written.
"""

from __future__ import annotations

import re

from .gateway import MERCHANT_NO_MAX_LENGTH, TRANS_NO_MAX_LENGTH

__all__ = [
    "CODE_LENGTH",
    "ERROR_CODE_LENGTH",
    "ERROR_MESSAGE_LENGTH",
    "ERROR_TYPE_LENGTH",
    "MERCHANT_NO_LENGTH",
    "REASON_LENGTH",
    "RESP_MSG_LENGTH",
    "STATUS_LENGTH",
    "TOKEN_LENGTH",
    "TRADE_NO_LENGTH",
    "TRANS_NO_LENGTH",
    "storable",
]

MERCHANT_NO_LENGTH = MERCHANT_NO_MAX_LENGTH
TRANS_NO_LENGTH = TRANS_NO_MAX_LENGTH
TRADE_NO_LENGTH = 64
#: ``respCode``.
CODE_LENGTH = 16
#: ``respMsg``.
RESP_MSG_LENGTH = 255
#: A status, an outcome, an error type or an attention reason (short names of the app's own).
STATUS_LENGTH = 16
REASON_LENGTH = 32
ERROR_TYPE_LENGTH = 32
#: A gateway error code (``errorCode``).
ERROR_CODE_LENGTH = 64
#: Error messages and other long gateway text kept on a row (a text column, cut to this).
ERROR_MESSAGE_LENGTH = 2000
#: A sync run's claim token (``uuid4().hex``).
TOKEN_LENGTH = 32

#: NUL, and UTF-16 surrogates standing alone (``json.loads('"\\ud83d"')`` makes them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str, max_length: int | None = None) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD, cut to ``max_length``."""
    text = _UNSTORABLE.sub("\ufffd", text)
    return text if max_length is None else text[:max_length]
