"""The example project's own site on a loopback port, in a thread: where the demo's sandbox
gateway delivers HSQ's refund notifications (``NOTIFY_URL``, the view
``hsq_refunds:refund_notify``).

It is Django's development server (``runserver``'s, threaded: one thread per connection, each
closing its database connections when done), serving the project's WSGI application
(``WSGI_APPLICATION``). The socket is bound at construction, before Django is set up, so that
the URL is known when the settings are read; requests that arrive before :meth:`start` wait in
the listen queue.
"""

from __future__ import annotations

import socketserver
import threading
from typing import Any

from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

from example_project import environment

__all__ = ["NotificationReceiver"]


class _Server(ThreadedWSGIServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    """No access log: the demo reports each notification from the database instead."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class NotificationReceiver:
    """The project's WSGI application on ``host:port`` (``port=0``: any free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _Server((host, port), _QuietHandler)
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"NotificationReceiver({self.url})"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The notification view's address: the ``NOTIFY_URL`` to configure."""
        return environment.notify_url(self.port, str(self._httpd.server_address[0]))

    def start(self) -> NotificationReceiver:
        """Serve in a daemon thread (Django must be set up); returns ``self``."""
        from django.core.servers.basehttp import get_internal_wsgi_application

        if self._thread is not None:
            raise RuntimeError("the notification receiver is already running")
        self._httpd.set_app(get_internal_wsgi_application())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"example-notify-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (also when never started)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
