"""The known answers of docs/protocol.md (a query and an application), with HSQ's public
test-merchant files read in place."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from hsq_refunds.gateway import (
    HsqClient,
    RefundApplyRequest,
    TransportError,
    load_platform_key,
    load_private_key,
)
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

#: The second known answer: an application, with non-ASCII text (it checks UTF-8).
APPLY_ARGUMENTS = {
    "trans_no": "RF20240101120000001",
    "orig_trans_no": "DD20240101115900001",
    "orig_amount": 100,
    "amount": 100,
    "reason": "退款",
    "refund_type": 1,
    "request_date": datetime(2024, 1, 1, 12, 0, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
    "return_url": "https://example.com/hsq/refund-notify",
}
APPLY_SIGN_CONTENT = (
    '{"transNo":"RF20240101120000001","refundType":1,"origTransNo":"DD20240101115900001",'
    '"origOrderAmt":100,"orderAmt":100,"requestDate":"20240101120000","refundReason":"退款",'
    '"returnUrl":"https://example.com/hsq/refund-notify"}'
)
APPLY_SIGN_STRING = (
    "method=POLYMERIZE_REFUND&version=1.0&format=JSON&merchantNo=814000473149&signType=RSA2"
    f"&signContent={APPLY_SIGN_CONTENT}&key=86a8eec5ae958e9948b7450439cc57e2"
)
APPLY_SIGNATURE = (
    "2cb8f52138e7018e2db8845cb2668f97b087327a3030223f26e185e2d9fd02588b0a0f158ea789612bb3637d"
    "634b106fa7d03364afb5e277b61def8a26a79291048063489a09fd7c574f422a1fdefdf79849c56555bb7dac"
    "e7644507a62be30476ab06638ecf54348e2e09f37f0ec63e5b5a61c4a3b2e925b79365727a83e298"
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


def _demo_client(demo_dir, url):
    return HsqClient(
        merchant_no=MERCHANT_NO,
        sign_key=SIGN_KEY,
        private_key=demo_dir / "814000473149_pri.pfx",
        private_key_password="123456",
        platform_key=demo_dir / "MANDAO_814000473149_pub.cer",
        base_url=url,
        retries=0,
    )


def test_application_sign_string_matches_the_documented_one():
    business = RefundApplyRequest(**APPLY_ARGUMENTS).business()
    assert encode_sign_content(business) == APPLY_SIGN_CONTENT
    fields = {
        "method": "POLYMERIZE_REFUND",
        "version": "1.0",
        "format": "JSON",
        "merchantNo": MERCHANT_NO,
        "signType": "RSA2",
        "signContent": encode_sign_content(business),
    }
    assert request_sign_string(fields, SIGN_KEY) == APPLY_SIGN_STRING


def test_application_signature_with_the_legacy_pfx_matches(demo_dir):
    private = load_private_key(demo_dir / "814000473149_pri.pfx", "123456")
    assert sign(private, APPLY_SIGN_STRING) == APPLY_SIGNATURE
    merchant_public = load_platform_key(demo_dir / "814000473149_pub.cer")
    assert verify(merchant_public, APPLY_SIGN_STRING, APPLY_SIGNATURE)
    # UTF-8, not another encoding: the same text with the reason's bytes read as Latin-1
    # does not verify.
    mangled = APPLY_SIGN_STRING.replace("退款", "退款".encode().decode("latin-1"))
    assert not verify(merchant_public, mangled, APPLY_SIGNATURE)


def test_client_sends_the_application_known_answer_on_the_wire(demo_dir, recording_gateway):
    recording_gateway.answer(503)
    with _demo_client(demo_dir, recording_gateway.url) as client:
        with pytest.raises(TransportError):
            client.apply_refund(**APPLY_ARGUMENTS)
    (request,) = recording_gateway.requests
    assert request.form == {
        "method": "POLYMERIZE_REFUND",
        "version": "1.0",
        "format": "JSON",
        "merchantNo": MERCHANT_NO,
        "signType": "RSA2",
        "signContent": APPLY_SIGN_CONTENT,
        "sign": APPLY_SIGNATURE,
    }
    assert SIGN_KEY.encode() not in request.body
