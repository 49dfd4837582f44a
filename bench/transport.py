"""CPU per POST of the gateway client's HTTP path, beside plain ``requests`` and urllib3.

A loopback HTTP/1.1 server (threaded, keep-alive, TCP_NODELAY: it writes headers and body
separately, which Nagle's algorithm would hold back) runs in a child process and answers every
POST with a gateway-sized JSON body at once. This process POSTs a form of a signed query's size
through each client in turn and prints, per client, the median over ``--rounds`` runs of its
own CPU time (every thread) per POST:

- ``hsq_refunds``: ``post_form`` through a session of ``make_session`` (the client's path,
  with its retries and its deadline);
- ``requests``: ``requests.Session().post``;
- ``requests (trust_env=False)``: the same without the environment look-ups of each request;
- ``urllib3``: ``urllib3.PoolManager().request``.

    .venv/bin/python bench/transport.py [--posts 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import os
import socket
import statistics
import time
from collections.abc import Callable
from urllib.parse import urlencode

import requests
import urllib3
from _common import figure, machine, print_machine, print_summary

from hsq_refunds.gateway.transport import make_session, post_form

FORM = {
    "method": "POLYMERIZE_REFUND_QUERY",
    "version": "1.0",
    "format": "JSON",
    "merchantNo": "888000000001",
    "signType": "RSA2",
    "signContent": '{"transNo":"RF20240101000001"}',
    "sign": "A" * 344,  # a base64 SHA256withRSA signature with a 2048-bit key
}
ANSWER = b'{"success":true,"result":"' + b"x" * 300 + b'","sign":"' + b"B" * 172 + b'"}'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(port: multiprocessing.Queue) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port.put(server.server_address[1])
    server.serve_forever()


def clients(url: str) -> dict[str, Callable[[], object]]:
    own = make_session(url, retries=2, backoff_factor=0.5, pool_maxsize=1)
    plain = requests.Session()
    untrusting = requests.Session()
    untrusting.trust_env = False
    pool = urllib3.PoolManager()
    body = urlencode(FORM).encode("ascii")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return {
        "hsq_refunds": lambda: post_form(own, url, FORM, timeout=(5, 15), deadline=60, resend=True),
        "requests": lambda: plain.post(url, data=FORM).content,
        "requests (trust_env=False)": lambda: untrusting.post(url, data=FORM).content,
        "urllib3": lambda: pool.request("POST", url, body=body, headers=headers).data,
    }


def cpu_us_per_post(post: Callable[[], object], posts: int, rounds: int) -> float:
    """Median over ``rounds`` of this process's CPU microseconds per POST."""
    for _ in range(100):  # connections made, caches warm
        post()
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(posts):
            post()
        samples.append((time.process_time() - start) * 1e6 / posts)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    port: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port.get(timeout=10)}/api/acquiring"
    figures = {}
    try:
        print(f"CPU per POST, median of {args.rounds} runs of {args.posts} POSTs:")
        for name, post in clients(url).items():
            figures[name] = cpu_us_per_post(post, args.posts, args.rounds)
            figure(name, f"{figures[name]:.0f} us")
    finally:
        server.terminate()
        server.join()
    load_end = os.getloadavg()[0]
    print(f"load average {info['load_1min']:.1f} at the start, {load_end:.1f} at the end")
    print_summary(
        {
            "benchmark": "transport",
            "cpu_us_per_post": figures,
            **info,
            "load_1min_end": load_end,
            "posts": args.posts,
            "rounds": args.rounds,
        }
    )


if __name__ == "__main__":
    main()
