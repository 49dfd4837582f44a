"""``make serve``: the example project for a person: admin, sandbox gateway and django-q2 cluster.

It migrates, starts the sandbox gateway in this process (``127.0.0.1:8765``, or
``$HSQ_SANDBOX_PORT``), tracks a few refunds applied for elsewhere (only into an empty
database), installs the scheduled sync, creates the superuser ``admin`` and runs two child
processes: ``manage.py runserver`` (``127.0.0.1:8000``, or ``$EXAMPLE_PORT``) and ``manage.py
qcluster``, which runs the scheduled sync every minute. Once runserver answers, it applies for a
mix of refunds through the app (``Refund.objects.apply``, into an empty database only) with
``NOTIFY_URL`` at runserver's notification view, so that HSQ's notifications (the sandbox's)
turn the balance refunds green within a minute, with nobody pressing anything.

The admin password is ``$DEMO_ADMIN_PASSWORD``, or a new random one printed at every start.
With ``HSQ_MERCHANT_NO`` and the other ``HSQ_*`` variables set, the project talks to that
merchant account at HSQ instead: no sandbox, no made-up refunds.

Ctrl-C (SIGINT), SIGTERM or SIGHUP stops everything it started: each child runs in its own
process group, which is stopped as a whole, so no runserver or qcluster worker outlives it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from django.core.management import CommandError

from example_project import environment
from example_project.console import Style

__all__ = ["main"]

_MANAGE = environment.PACKAGE_DIR / "manage.py"
_ADMIN_USERNAME = "admin"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds a child process group gets to stop after SIGTERM before it is killed.
_STOP_GRACE = 10.0
#: Seconds runserver gets to answer before the banner is printed anyway.
_READY_TIMEOUT = 60.0


class _Stop(BaseException):
    """Raised by the signal handler to leave whatever the main thread is doing.

    A ``BaseException``, like ``KeyboardInterrupt``, so that code which turns any ``Exception``
    into its own error (key loading does) lets it through.
    """


@dataclass
class _Child:
    """A child process that leads its own process group."""

    name: str
    process: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def main(argv: Sequence[str] | None = None) -> int:
    """Run until interrupted; return the exit status."""
    args = _parser().parse_args(argv)
    style = Style()
    os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    signals = _Signals()
    sandbox = None
    children: list[_Child] = []
    try:
        signals.install()
        _check_port_free(args.port)
        if environment.uses_sandbox():
            sandbox = _start_sandbox(args.sandbox_port)
            # Every process reads it in its settings: HSQ's notifications go to runserver.
            os.environ["HSQ_NOTIFY_URL"] = environment.notify_url(args.port)
        with signals.deferred():
            seed = _prepare(sandbox, style)
            password = _admin_password()
            _start_children(args.port, children)
        _wait_until_ready(args.port, children)
        if seed is not None and all(child.alive for child in children):
            with signals.deferred():
                seed.apply(style)
        _banner(args.port, password, sandbox, style)
        return _supervise(children, signals.stopping, style)
    except _Stop:
        return 0
    except (_StartError, CommandError) as exc:  # CommandError: e.g. failed system checks
        print(style.red(f"error: {exc}"), file=sys.stderr)
        return 1
    finally:
        signals.ignore()
        _stop_children(children, style)
        if sandbox is not None:
            sandbox.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m example_project.serve",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=_port(os.environ.get("EXAMPLE_PORT") or "8000"),
        help="runserver's port on 127.0.0.1 [EXAMPLE_PORT, 8000]",
    )
    parser.add_argument(
        "--sandbox-port",
        type=_port,
        default=None,
        help=f"the sandbox gateway's port [HSQ_SANDBOX_PORT, {environment.DEFAULT_SANDBOX_PORT}]",
    )
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return port


class _StartError(Exception):
    """Something the person can fix before starting again (a port in use, ...)."""


# --------------------------------------------------------------------------- signals


class _Signals:
    """SIGINT, SIGTERM and SIGHUP all mean "stop everything, cleanly".

    The handler raises :class:`_Stop` to leave whatever the main thread is doing, except
    inside :meth:`deferred`, where the stop waits for the end of the block: a child must never
    be started without being recorded, nor the database left half-seeded.
    """

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._defer = False

    def install(self) -> None:
        """Handle the stop signals, but leave ignored what the starter ignores (``nohup``)."""
        for signum in _STOP_SIGNALS:
            if signum == signal.SIGTERM or signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._handle)

    @staticmethod
    def ignore() -> None:
        """While cleaning up, a second Ctrl-C must not cut the cleanup short."""
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            print(f"\nStopping on {signal.Signals(signum).name}...", file=sys.stderr, flush=True)
        if not self._defer:
            raise _Stop

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.stopping.is_set():
            raise _Stop


# --------------------------------------------------------------------------- setting up


def _check_port_free(port: int) -> None:
    """Fail early and clearly, rather than with runserver's error among the start-up output."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As runserver binds: connections of an earlier run in TIME_WAIT do not count (on
        # stopping, runserver closes its keep-alive connections, the sandbox's notifier's too).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise _StartError(
                f"port {port} on 127.0.0.1 is in use (another `make serve`?); "
                "choose another with --port or EXAMPLE_PORT"
            ) from None


def _start_sandbox(port: int | None) -> Any:
    """Start the sandbox gateway in this process; its port goes to the children's settings."""
    from hsq_refunds.sandbox import SandboxServer

    if port is None:
        try:
            port = environment.sandbox_port()
        except ValueError as exc:
            raise _StartError(str(exc)) from None
    os.environ["HSQ_SANDBOX_PORT"] = str(port)
    credentials = environment.sandbox_credentials(environment.var_dir())
    server = SandboxServer(credentials, "127.0.0.1", port)
    try:
        return server.start()
    except OSError:
        raise _StartError(
            f"the sandbox gateway cannot listen on 127.0.0.1:{port} (in use?); choose another "
            "port with --sandbox-port or HSQ_SANDBOX_PORT"
        ) from None


def _prepare(sandbox: Any, style: Style) -> _Seed | None:
    """Migrate, seed (sandbox only), and install the scheduled sync; returns the applications
    still to make, if the database was empty."""
    import django

    django.setup()
    from django.core.management import call_command

    print(style.bold("Migrating the database..."), flush=True)
    call_command("migrate", verbosity=0, interactive=False)
    seed = _seed(sandbox, style) if sandbox is not None else None
    call_command("hsq_refunds_schedule")
    return seed


def _seed(sandbox: Any, style: Style) -> _Seed | None:
    """Give the sandbox its refunds and orders: the stored ones, or for an empty database a
    fresh mix (the tracked ones now, the applications once runserver answers)."""
    from django.utils import timezone

    from example_project.scenario import (
        SLOW,
        SandboxBook,
        declare_orders,
        make_refunds,
        order_specs,
        place_at_gateway,
        track,
    )
    from hsq_refunds.conf import get_settings
    from hsq_refunds.models import Refund

    sandbox.configure_apply(**SLOW.apply_settings())  # also for refunds applied from the admin
    book = SandboxBook(environment.var_dir() / "serve-sandbox.json")
    merchant_no = sandbox.credentials.merchant_no
    if Refund.objects.filter(merchant_no=merchant_no).exists():
        specs, orders = book.load(), book.load_orders()
        if specs:
            sandbox.add_refunds(specs)
            if orders:
                sandbox.add_orders(orders)
            print(f"The sandbox knows the {len(specs)} refunds it was given in earlier runs.")
        else:
            warning = (
                f"{book.path} is missing: the sandbox knows none of the refunds in the "
                "database, which will be flagged as not found. Delete the database to start afresh."
            )
            print(style.yellow(warning))
        return None
    now = timezone.now()
    refunds = make_refunds(now, SLOW, not_found_grace=get_settings().NOT_FOUND_GRACE)
    declare_orders(sandbox, refunds, SLOW)
    place_at_gateway(sandbox, refunds)
    specs = SandboxBook.stamped(refunds, now)
    orders = order_specs(refunds)
    book.save(specs, orders)
    track(refunds)
    tracked = sum(1 for refund in refunds if not refund.applied_here)
    print(style.bold(f"Tracked {tracked} refunds applied for elsewhere."))
    return _Seed(book, refunds, specs, orders)


@dataclass
class _Seed:
    """The applications of a fresh seed, made once runserver can receive their notifications."""

    book: Any
    refunds: Sequence[Any]
    specs: list[dict[str, Any]]
    orders: list[dict[str, Any]]

    def apply(self, style: Style) -> None:
        from example_project.scenario import SLOW, SandboxBook, apply

        results = apply(self.refunds)
        self.book.save([*self.specs, *SandboxBook.applied(results, SLOW)], self.orders)
        accepted = sum(1 for result in results if result.row is not None)
        print(
            style.bold(f"Applied for {accepted} refunds through the app")
            + " (balance ones finish within a minute, by HSQ's notification; bank-card ones "
            "stay PROCESSING for days)."
        )
        for result in results:
            if result.refused is not None:
                print(style.yellow(f"Refused by the app: {result.refused}"))


def _admin_password() -> str:
    """Create the superuser ``admin`` or reset its password; return the password."""
    from django.contrib.auth import get_user_model

    password = os.environ.get("DEMO_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    user_model = get_user_model()
    user = user_model.objects.filter(username=_ADMIN_USERNAME).first()
    if user is None:
        user_model.objects.create_superuser(_ADMIN_USERNAME, "admin@example.com", password)
    else:
        user.set_password(password)
        user.is_active = user.is_staff = user.is_superuser = True
        user.save()
    return password


# --------------------------------------------------------------------------- children


def _start_children(port: int, children: list[_Child]) -> None:
    """Start runserver and qcluster, each leading a new session (so its own process group).

    A new session also keeps the terminal's Ctrl-C away from them: this process stops them,
    in order, rather than every process at once on its own.
    """
    from django.conf import settings

    runserver = [sys.executable, str(_MANAGE), "runserver", f"127.0.0.1:{port}"]
    if not settings.DEBUG:
        runserver.append("--insecure")  # serve the admin's CSS and JS all the same
    # The children show what the sync does (one line per refund queried).
    env = {**os.environ, "EXAMPLE_LOG_LEVEL": os.environ.get("EXAMPLE_LOG_LEVEL", "INFO")}
    for name, command in (
        ("runserver", runserver),
        ("qcluster", [sys.executable, str(_MANAGE), "qcluster"]),
    ):
        process = subprocess.Popen(
            command, cwd=environment.REPO_DIR, env=env, start_new_session=True
        )
        children.append(_Child(name, process))


def _wait_until_ready(port: int, children: Sequence[_Child]) -> None:
    """Until runserver accepts connections, so the banner comes after its start-up output."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if not all(child.alive for child in children):
            return  # _supervise reports it
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)


def _banner(port: int, password: str, sandbox: Any, style: Style) -> None:
    url = f"http://127.0.0.1:{port}/admin/"
    lines = [
        "",
        style.bold("hsq_refunds example project is running"),
        f"  Admin      {style.cyan(url)}",
        f"  Log in as  {_ADMIN_USERNAME} / {password}",
    ]
    if sandbox is not None:
        lines.append(
            f"  Gateway    {sandbox.url}  (sandbox, merchant {sandbox.credentials.merchant_no})"
        )
    else:
        lines.append("  Gateway    HSQ itself, with the HSQ_* credentials from the environment")
    notify_url = _notify_url()
    if notify_url:
        lines.append(f"  Notified   {notify_url}  (NOTIFY_URL: HSQ pushes each new status here)")
    lines += [
        "  Syncing    qcluster runs the scheduled sync every minute; or select refunds in the "
        "admin and refresh them",
        "  Stop       Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)


def _notify_url() -> str | None:
    from django.conf import settings

    return settings.HSQ_REFUNDS.get("NOTIFY_URL")


def _supervise(children: Sequence[_Child], stopping: threading.Event, style: Style) -> int:
    """Wait for a signal; a child that ends on its own ends everything (exit status 1)."""
    while not stopping.wait(0.5):
        for child in children:
            code = child.process.poll()
            if code is not None:
                print(
                    style.red(f"{child.name} exited with status {code}; stopping."),
                    file=sys.stderr,
                )
                return 1
    return 0


def _stop_children(children: Sequence[_Child], style: Style) -> None:
    """Stop each child's whole process group: gently first, then firmly.

    SIGTERM goes to each group *leader* first: qcluster then stops its own workers cleanly,
    whereas a SIGTERM to all of its processes at once leaves it waiting for workers that are
    gone. What is left after that (runserver's reloaded child) gets SIGTERM as a group, and
    anything still alive after the grace period gets SIGKILL.
    """
    for child in children:
        _signal(child, signal.SIGTERM, group=False)
    deadline = time.monotonic() + _STOP_GRACE
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(max(deadline - time.monotonic(), 0.1))
    for child in children:
        _signal(child, signal.SIGTERM, group=True)
    deadline = time.monotonic() + _STOP_GRACE / 2
    while time.monotonic() < deadline and any(_group_alive(child) for child in children):
        time.sleep(0.1)
    for child in children:
        if _group_alive(child):
            print(style.yellow(f"{child.name} did not stop in time; killing it."), file=sys.stderr)
            _signal(child, signal.SIGKILL, group=True)
        child.process.wait()


def _signal(child: _Child, signum: signal.Signals, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(child.process.pid, signum)
        elif child.process.poll() is None:
            child.process.send_signal(signum)


def _group_alive(child: _Child) -> bool:
    """True while any process of the child's group exists (the leader is reaped by ``wait``)."""
    child.process.poll()
    try:
        os.killpg(child.process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
