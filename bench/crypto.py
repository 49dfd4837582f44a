"""Sign and verify cost per operation for 1024- and 2048-bit RSA keys.

Every refund query costs one SHA256withRSA signature with the merchant's key and one
verification with the platform key: this is the CPU floor per refund that the sync engine
cannot go below. Prints medians of several timed rounds (CPU time of this process).

    .venv/bin/python bench/crypto.py [--rounds 7] [--ops 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import rsa

from hsq_refunds.gateway.signing import (
    encode_sign_content,
    request_sign_string,
    sign,
    success_sign_string,
    verify,
)

SIGN_KEY = "0123456789abcdef0123456789abcdef"


def per_op_ms(func, ops: int, rounds: int) -> float:
    """Median over ``rounds`` of the CPU milliseconds one call of ``func`` takes."""
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(ops):
            func()
        samples.append((time.process_time() - start) * 1000 / ops)
    return statistics.median(samples)


def floor_ms(merchant_bits: int = 2048, platform_bits: int = 1024, ops: int = 200, rounds: int = 5):
    """The sign-plus-verify CPU floor per refund in ms (used by bench/sync_throughput.py)."""
    merchant = rsa.generate_private_key(public_exponent=65537, key_size=merchant_bits)
    platform = rsa.generate_private_key(public_exponent=65537, key_size=platform_bits)
    request, response, signature = _messages(platform)
    return per_op_ms(lambda: sign(merchant, request), ops, rounds) + per_op_ms(
        lambda: verify(platform.public_key(), response, signature), ops, rounds
    )


def _messages(platform: rsa.RSAPrivateKey) -> tuple[str, str, str]:
    fields = {
        "method": "POLYMERIZE_REFUND_QUERY",
        "version": "1.0",
        "format": "JSON",
        "merchantNo": "888000000001",
        "signType": "RSA2",
        "signContent": encode_sign_content({"transNo": "RF202612010000000001"}),
    }
    request = request_sign_string(fields, SIGN_KEY)
    result = encode_sign_content(
        {
            "merchantNo": "888000000001",
            "transNo": "RF202612010000000001",
            "orderAmt": "1234",
            "orderStatus": "SUCCESS",
            "respCode": "200007",
            "respMsg": "查询成功",
        }
    )
    response = success_sign_string(result, SIGN_KEY)
    return request, response, sign(platform, response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200)
    args = parser.parse_args()

    print(f"crypto: median CPU ms per operation ({args.rounds} rounds x {args.ops} ops)")
    print(f"{'key':>9} {'sign ms':>9} {'verify ms':>10} {'sign/verify':>12}")
    costs = {}
    for bits in (1024, 2048):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        request, response, signature = _messages(key)
        sign_ms = per_op_ms(
            lambda key=key, request=request: sign(key, request), args.ops, args.rounds
        )
        verify_ms = per_op_ms(
            lambda key=key, response=response, signature=signature: verify(
                key.public_key(), response, signature
            ),
            args.ops,
            args.rounds,
        )
        costs[bits] = (sign_ms, verify_ms)
        print(f"{bits:>5} bit {sign_ms:>9.3f} {verify_ms:>10.4f} {sign_ms / verify_ms:>11.0f}x")
    floor = costs[2048][0] + costs[1024][1]
    print(
        f"floor per refund (sign with a 2048-bit merchant key + verify with a 1024-bit "
        f"platform key, as in HSQ's test environment): {floor:.3f} ms CPU"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
