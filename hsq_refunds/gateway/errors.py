"""Typed errors raised by the HSQ gateway client.

Every failure the client can meet is one of these, so callers never have to catch a
``requests`` or ``cryptography`` exception. Messages never contain key material.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "GatewayError",
    "HsqError",
    "InvalidRequestError",
    "ResponseError",
    "SignatureError",
    "TransportError",
]


class HsqError(Exception):
    """Base class of every error raised by :mod:`hsq_refunds.gateway`."""

    #: Short machine-readable name, stored on refunds and shown in the admin.
    kind: str = "error"
    #: Distinct exit status of ``python -m hsq_refunds query-refund`` for this class.
    exit_code: int = 10

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        """The gateway's own error code, where there is one."""
        return ""

    def __str__(self) -> str:
        return self.message


class ConfigurationError(HsqError):
    """Settings or key material are missing, unreadable or of the wrong kind."""

    kind = "configuration"
    exit_code = 2


class TransportError(HsqError):
    """The gateway could not be reached or did not answer with a usable HSQ envelope.

    Timeouts, connection errors, non-2xx statuses, bodies that are not JSON and
    Spring-style error bodies all land here. Status is unknown: ask again later.
    """

    kind = "transport"
    exit_code = 3

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class GatewayError(HsqError):
    """The gateway answered ``success=false`` with an error code and message.

    ``signed`` says whether the answer carried a signature that verified. An unsigned
    failure is unauthenticated: it must never change what is recorded about a refund.
    """

    kind = "gateway"
    exit_code = 4

    def __init__(self, error_code: str, error_msg: str, *, signed: bool) -> None:
        self.error_code = error_code or ""
        self.error_msg = error_msg or ""
        self.signed = signed
        state = "signed" if signed else "unsigned"
        super().__init__(f"gateway error {self.error_code}: {self.error_msg} ({state})")

    @property
    def code(self) -> str:
        return self.error_code


class SignatureError(HsqError):
    """A response's signature is missing or does not verify against the platform key."""

    kind = "signature"
    exit_code = 5


class ResponseError(HsqError):
    """A response that is not a well-formed HSQ answer about what was asked.

    An envelope whose ``success`` is neither true nor false, a ``result`` that is not a JSON
    object, or a verified result about another refund or merchant, or with values outside
    the documented ones. Status is unknown: nothing may be recorded from it.
    """

    kind = "response"
    exit_code = 6


class InvalidRequestError(HsqError, ValueError):
    """The caller asked something that cannot be sent (for example an empty ``transNo``).

    Raised before anything goes on the wire. Also a :class:`ValueError`, as the mistake is
    the caller's argument.
    """

    kind = "invalid_request"
    exit_code = 7
