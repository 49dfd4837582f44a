"""The known answer of PROTOCOL.md, with HSQ's public test-merchant files read in place."""

from __future__ import annotations

import pytest

from hsq_refunds.gateway import HsqClient, TransportError, load_platform_key, load_private_key
from hsq_refunds.gateway.signing import encode_sign_content, request_sign_string, sign, verify

MERCHANT_NO = "814000473149"
SIGN_KEY = "86a8eec5ae958e9948b7450439cc57e2"
TRANS_NO = "DD20210812103012841"
SIGN_STRING = (
    "method=POLYMERIZE_REFUND_QUERY&version=1.0&format=JSON&merchantNo=814000473149"
    '&signType=RSA2&signContent={"transNo":"DD20210812103012841"}'
    "&key=86a8eec5ae958e9948b7450439cc57e2"
)
SIGNATURE = (
    "94872cee610f77b7c18c8981527cd9926ab8e6aa8ed96d54f0e760b3a28473b5bcda27a6fec7ae4a227aee17"
    "833191e6054427d1f6275d7f3b93221717a66c32a2aabc3093e38278aca73df0e60353b105cd77a719d1bb08"
    "5c764468ed94e653185c032afc2d2703619178f7f75e9717c642f3929c3cde62e59b41ae36062700"
)


def test_sign_string_matches_the_documented_one():
    fields = {
        "method": "POLYMERIZE_REFUND_QUERY",
        "version": "1.0",
        "format": "JSON",
        "merchantNo": MERCHANT_NO,
        "signType": "RSA2",
        "signContent": encode_sign_content({"transNo": TRANS_NO}),
    }
    assert request_sign_string(fields, SIGN_KEY) == SIGN_STRING


def test_signature_with_the_legacy_pfx_matches_and_verifies(demo_dir):
    private = load_private_key(demo_dir / "814000473149_pri.pfx", "123456")
    assert sign(private, SIGN_STRING) == SIGNATURE
    merchant_public = load_platform_key(demo_dir / "814000473149_pub.cer")
    assert verify(merchant_public, SIGN_STRING, SIGNATURE)
    assert verify(merchant_public, SIGN_STRING, SIGNATURE.upper())
    assert not verify(merchant_public, SIGN_STRING.replace("841", "842"), SIGNATURE)


def test_pfx_given_as_text_path_loads(demo_dir):
    private = load_private_key(str(demo_dir / "814000473149_pri.pfx"), b"123456")
    assert private.key_size == 1024


def test_platform_certificate_loads(demo_dir):
    assert load_platform_key(demo_dir / "MANDAO_814000473149_pub.cer").key_size == 1024


def test_client_sends_the_known_answer_on_the_wire(demo_dir, recording_gateway):
    recording_gateway.answer(503)
    client = HsqClient(
        merchant_no=MERCHANT_NO,
        sign_key=SIGN_KEY,
        private_key=demo_dir / "814000473149_pri.pfx",
        private_key_password="123456",
        platform_key=demo_dir / "MANDAO_814000473149_pub.cer",
        base_url=recording_gateway.url,
        retries=0,
    )
    with client, pytest.raises(TransportError) as caught:
        client.query_refund(TRANS_NO)
    assert caught.value.status_code == 503

    (request,) = recording_gateway.requests
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "method": "POLYMERIZE_REFUND_QUERY",
        "version": "1.0",
        "format": "JSON",
        "merchantNo": MERCHANT_NO,
        "signType": "RSA2",
        "signContent": '{"transNo":"DD20210812103012841"}',
        "sign": SIGNATURE,
    }
    assert SIGN_KEY.encode() not in request.body
