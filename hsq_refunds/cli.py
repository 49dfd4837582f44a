"""The merchant's command line: ``python -m hsq_refunds query-refund TRANS_NO`` and
``python -m hsq_refunds apply-refund --orig-trans-no ... --orig-amount FEN --amount FEN``.

Talks to HSQ without Django: asks about one refund (for checking credentials and looking at a
refund by hand), or applies for one. Settings come from flags or from ``HSQ_*`` environment
variables (flags win); secrets belong in the environment, since a command line is visible to
every user of the machine.

On success one JSON object (the gateway's field names) goes to stdout and the exit status is 0,
or ``EXIT_NOT_FOUND`` when HSQ answered that it does not know the refund. On failure one line
``error: <ErrorClass>: <message>`` goes to stderr and the exit status tells the error class apart
(see ``EXIT_CODES``). Never a traceback, never key material. An application whose outcome is
unknown (no verified answer) names its ``transNo`` in that line: query it before applying again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TextIO

from hsq_refunds.gateway import (
    ENVIRONMENTS,
    MAX_AMOUNT_FEN,
    ConfigurationError,
    GatewayError,
    HsqClient,
    HsqError,
    InvalidRequestError,
    RespCode,
    ResponseError,
    SignatureError,
    TransportError,
    new_trans_no,
)
from hsq_refunds.gateway.text import printable

__all__ = ["EXIT_CODES", "EXIT_NOT_FOUND", "EXIT_USAGE", "main"]

#: ``sysexits.h``'s EX_USAGE: argparse's own 2 is taken by ConfigurationError.
EXIT_USAGE = 64
#: ``query-refund`` of a refund HSQ does not know (respCode 200004 or 200009): its verified
#: answer is printed all the same.
EXIT_NOT_FOUND = 8
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

#: Exit status per error class.
EXIT_CODES: Mapping[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        ConfigurationError,
        TransportError,
        GatewayError,
        SignatureError,
        ResponseError,
        InvalidRequestError,
    )
}

#: (argparse dest, flag, environment variable, what it is) for every setting.
_SETTINGS = (
    ("merchant_no", "--merchant-no", "HSQ_MERCHANT_NO", "merchant number (merchantNo)"),
    ("sign_key", "--sign-key", "HSQ_SIGN_KEY", "sign key (签名混淆KEY)"),
    ("private_key", "--private-key", "HSQ_PRIVATE_KEY", "merchant private key"),
    (
        "private_key_password",
        "--private-key-password",
        "HSQ_PRIVATE_KEY_PASSWORD",
        "private key password",
    ),
    ("platform_cert", "--platform-cert", "HSQ_PLATFORM_CERT", "platform certificate"),
    ("base_url", "--base-url", "HSQ_BASE_URL", "gateway URL"),
    ("environment", "--environment", "HSQ_ENVIRONMENT", "environment"),
    ("timeout", "--timeout", "HSQ_TIMEOUT", "timeout"),
)
_REQUIRED = ("merchant_no", "sign_key", "private_key", "platform_cert")
_MAX_CONNECT_TIMEOUT = 5.0


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with 64 (EX_USAGE), so they are told apart from the HSQ errors."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


#: Whole fen as typed: digits only (no sign, separator or decimal point), at most as many as
#: the largest amount has, so that a typo cannot become a huge number.
_FEN = re.compile(f"[0-9]{{1,{len(str(MAX_AMOUNT_FEN))}}}")
_WHOLE_NUMBER = re.compile("[0-9]{1,10}")


def _fen(text: str) -> int:
    if not _FEN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a whole number of fen (分): {text!r}")
    return int(text)


def _whole_number(text: str) -> int:
    if not _WHOLE_NUMBER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


_SETTING_HELPS = {
    "merchant_no": "merchant number [HSQ_MERCHANT_NO]",
    "sign_key": "sign key; prefer HSQ_SIGN_KEY, a command line is visible to others",
    "private_key": "merchant private key: a path (.pfx, .pem, ...) or the key text "
    "[HSQ_PRIVATE_KEY]",
    "private_key_password": "password of the private key; prefer HSQ_PRIVATE_KEY_PASSWORD",
    "platform_cert": "platform certificate or public key: a path or the text [HSQ_PLATFORM_CERT]",
    "base_url": "gateway URL, overriding the environment [HSQ_BASE_URL]",
    "environment": "HSQ environment (default production) [HSQ_ENVIRONMENT]",
    "timeout": "read timeout in seconds (default 15) [HSQ_TIMEOUT]",
}


def _add_settings(command: argparse.ArgumentParser) -> None:
    for dest, flag, _env, _what in _SETTINGS:
        extra: dict[str, Any] = {}
        if dest == "environment":
            extra["choices"] = sorted(ENVIRONMENTS)
        if dest == "timeout":
            extra["type"] = _positive_seconds
            extra["metavar"] = "SECONDS"
        command.add_argument(flag, dest=dest, help=_SETTING_HELPS[dest], **extra)
    command.add_argument(
        "-v", "--verbose", action="store_true", help="log the request's outcome to stderr"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m hsq_refunds",
        description="Talk to 慧收钱 (HSQ) from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    query = commands.add_parser(
        "query-refund",
        help="ask HSQ about one refund (POLYMERIZE_REFUND_QUERY)",
        description=(
            "Ask HSQ about one refund and print the verified result as JSON; the exit status "
            f"is {EXIT_NOT_FOUND} when HSQ does not know the refund. Each option defaults to its "
            "environment variable; keep secrets in the environment."
        ),
    )
    query.add_argument("trans_no", metavar="TRANS_NO", help="the refund's merchant order number")
    _add_settings(query)

    apply = commands.add_parser(
        "apply-refund",
        help="apply to HSQ for a refund (POLYMERIZE_REFUND)",
        description=(
            "Apply to HSQ for a refund of part or all of a paid order and print the verified "
            "answer as JSON. The application is sent once; when its outcome is unknown, "
            "query its transNo before applying again. Each setting defaults to its "
            "environment variable; keep secrets in the environment."
        ),
    )
    apply.add_argument(
        "--orig-trans-no", required=True, help="the paid order's merchant order number"
    )
    apply.add_argument(
        "--orig-amount", required=True, type=_fen, metavar="FEN", help="what the order was paid"
    )
    apply.add_argument(
        "--amount", required=True, type=_fen, metavar="FEN", help="the amount to refund"
    )
    apply.add_argument(
        "--trans-no",
        help="the refund's own merchant order number (default: a new one, RF + Beijing time "
        "+ random digits)",
    )
    apply.add_argument("--reason", default="", help="refundReason, free text")
    apply.add_argument(
        "--refund-type",
        type=_whole_number,
        default=2,
        metavar="N",
        help="refundType (default 2; the gateway's meaning of it is not public)",
    )
    apply.add_argument("--return-url", metavar="URL", help="where HSQ notifies the outcome")
    apply.add_argument("--extend", default="", metavar="TEXT", help="passthrough field")
    _add_settings(apply)
    return parser


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """Each setting from its flag, else from its environment variable (empty means unset)."""
    values: dict[str, Any] = {}
    for dest, flag, env, what in _SETTINGS:
        value = getattr(args, dest)
        if value is None:
            value = environ.get(env) or None
        if value is None and dest in _REQUIRED:
            raise ConfigurationError(f"{what} is missing: pass {flag} or set {env}")
        values[dest] = value
    if isinstance(values["timeout"], str):
        try:
            values["timeout"] = _positive_seconds(values["timeout"])
        except argparse.ArgumentTypeError:
            raise ConfigurationError("HSQ_TIMEOUT: must be a positive number of seconds") from None
    return values


def _client(settings: Mapping[str, Any]) -> HsqClient:
    timeout = settings["timeout"]
    timeouts = (
        {}
        if timeout is None
        else {
            "read_timeout": timeout,
            "connect_timeout": min(timeout, _MAX_CONNECT_TIMEOUT),
        }
    )
    return HsqClient(
        merchant_no=settings["merchant_no"],
        sign_key=settings["sign_key"],
        private_key=settings["private_key"],
        private_key_password=settings["private_key_password"],
        platform_key=settings["platform_cert"],
        base_url=settings["base_url"],
        environment=settings["environment"] or "production",
        **timeouts,
    )


def _query_refund(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    with _client(_settings(args, environ)) as client:
        result = client.query_refund(args.trans_no)
    _write_json(result.as_gateway_dict(), out)
    return EXIT_NOT_FOUND if result.resp_code in RespCode.NOT_FOUND_CODES else 0


def _apply_refund(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO) -> int:
    settings = _settings(args, environ)
    if args.trans_no is None:
        args.trans_no = new_trans_no()
    with _client(settings) as client:
        result = client.apply_refund(
            trans_no=args.trans_no,
            orig_trans_no=args.orig_trans_no,
            orig_amount=args.orig_amount,
            amount=args.amount,
            reason=args.reason,
            refund_type=args.refund_type,
            return_url=args.return_url,
            extend=args.extend,
        )
    _write_json(result.as_gateway_dict(), out)
    return 0


_COMMANDS = {"query-refund": _query_refund, "apply-refund": _apply_refund}


def _write_json(data: Mapping[str, Any], out: TextIO) -> None:
    try:
        out.write(json.dumps(data, ensure_ascii=False) + "\n")
    except UnicodeEncodeError:  # a terminal that cannot show Chinese: still valid JSON
        out.write(json.dumps(data) + "\n")
    out.flush()


def _enable_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("hsq_refunds")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        _enable_logging()
    try:
        return _COMMANDS[args.command](args, os.environ if environ is None else environ, sys.stdout)
    except HsqError as exc:
        print(f"error: {type(exc).__name__}: {printable(_describe(exc, args))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"error: interrupted{printable(_unsettled(args))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # never a traceback: it could show settings
        print(
            f"error: unexpected {type(exc).__name__}{printable(_unsettled(args))}", file=sys.stderr
        )
        return EXIT_INTERNAL


def _describe(exc: HsqError, args: argparse.Namespace) -> str:
    """The error's message; for an application that may have been sent, with its transNo and
    whether its outcome is known."""
    if isinstance(exc, ConfigurationError | InvalidRequestError):
        return str(exc)  # nothing was sent
    if isinstance(exc, GatewayError) and exc.signed and args.command == "apply-refund":
        return f"{exc} [transNo {args.trans_no}: refused]"
    return f"{exc}{_unsettled(args)}"


def _unsettled(args: argparse.Namespace) -> str:
    """For an application that may have been sent: its transNo, and what to do about it."""
    if args.command != "apply-refund" or args.trans_no is None:
        return ""
    return f" [transNo {args.trans_no}: outcome unknown; query it before applying again]"
