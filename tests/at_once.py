"""POST many requests to a live server at the same moment.

Every connection is opened first, one after the other (so that the server's listen backlog
never overflows into reset connections), then one thread per request waits on a barrier and
sends its request on its open connection: the server has them all at once.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    location: str | None


def post_at_once(
    posts: Sequence[tuple[str, Mapping[str, str]]],
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> list[Reply]:
    """POST each ``(url, form)`` (urlencoded) at once; the replies, in the order given."""
    connections = []
    for url, _form in posts:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        connection.connect()
        connections.append(connection)
    forms = [form for _url, form in posts]
    paths = [urlsplit(url).path for url, _form in posts]
    start = threading.Barrier(len(forms))
    replies: list[Reply | BaseException | None] = [None] * len(forms)

    def send(index: int) -> None:
        connection = connections[index]
        try:
            body = urlencode(forms[index])
            start.wait(timeout=timeout)
            connection.request(
                "POST",
                paths[index],
                body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            )
            response = connection.getresponse()
            replies[index] = Reply(
                response.status,
                response.read().decode("utf-8", "replace"),
                response.getheader("Location"),
            )
        except BaseException as exc:
            replies[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(forms))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout * 2)
    failed = [reply for reply in replies if not isinstance(reply, Reply)]
    assert not failed, failed
    return [reply for reply in replies if isinstance(reply, Reply)]
