"""Command line of the sandbox gateway.

``init DIR`` writes a merchant's sandbox credentials (as HSQ issues them); ``serve --keys DIR``
runs the gateway in the foreground, logging one line per query, application and notification
attempt, until SIGINT or SIGTERM.
Secrets (the sign key, the key password) are printed only with ``init --show-secrets``.
"""

from __future__ import annotations

import argparse
import logging
import pprint
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .credentials import Credentials, CredentialsError, create_credentials
from .server import SandboxServer

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hsq_refunds.sandbox",
        description="A fake HSQ (慧收钱) gateway speaking the real protocol with its own keys.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="write sandbox credentials into a directory")
    init.add_argument("directory", metavar="DIR", type=Path)
    init.add_argument("--merchant-no", default="888000000001")
    init.add_argument("--key-size", type=int, default=2048, help="merchant RSA key size")
    init.add_argument("--platform-key-size", type=int, default=2048, help="platform key size")
    init.add_argument("--force", action="store_true", help="overwrite existing credentials")
    init.add_argument(
        "--print-settings",
        metavar="URL",
        help="print the HSQ_REFUNDS setting for a sandbox served at URL, ready for settings.py "
        "(it holds the sandbox's own sign key and key password)",
    )
    init.add_argument(
        "--show-secrets", action="store_true", help="also print the sign key and key password"
    )
    init.set_defaults(run=_init)

    serve = commands.add_parser("serve", help="run the sandbox gateway in the foreground")
    serve.add_argument("--keys", required=True, type=Path, metavar="DIR", help="from `init`")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="refunds, orders, faults, apply and notify settings (JSON)",
    )
    serve.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="answer each request this long after it arrived",
    )
    serve.set_defaults(run=_serve)
    return parser


def _init(args: argparse.Namespace) -> int:
    try:
        credentials = create_credentials(
            args.directory,
            merchant_no=args.merchant_no,
            key_size=args.key_size,
            platform_key_size=args.platform_key_size,
            overwrite=args.force,
        )
    except (FileExistsError, CredentialsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Sandbox credentials for merchant {credentials.merchant_no} in {credentials.directory}:")
    print(f"  merchant private key (PKCS#12): {credentials.private_key}")
    print(f"  merchant certificate:           {credentials.merchant_cert}")
    print(f"  platform certificate:           {credentials.platform_cert}")
    print(f"  platform private key (sandbox): {credentials.platform_private_key}")
    print(f"  sign key and key password:      {Path(credentials.directory, 'credentials.json')}")
    if args.show_secrets:
        print(f"  sign key:                       {credentials.sign_key}")
        print(f"  private key password:           {credentials.private_key_password}")
    print(f"Serve them with: python -m hsq_refunds.sandbox serve --keys {credentials.directory}")
    if args.print_settings:
        print()
        print("HSQ_REFUNDS = " + pprint.pformat(credentials.settings_dict(args.print_settings)))
    return 0


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        credentials = Credentials.load(args.keys)
        server = SandboxServer(
            credentials, args.host, args.port, scenario=args.scenario, latency=args.latency
        )
        server.start()
    except (CredentialsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logging.getLogger("hsq_refunds.sandbox").info("stopping on %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(
        f"HSQ sandbox for merchant {credentials.merchant_no}: gateway {server.url}, "
        f"control {server.control_url}",
        flush=True,
    )
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        server.stop()
    return 0
