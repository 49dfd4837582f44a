"""HSQ's refund notification: the sandbox POSTs it to the returnUrl, signed, and retries.

Every notification is received by a real HTTP server on loopback (tests/sandbox/receiver.py)
that verifies its signature with the platform public key over the received values.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests

from hsq_refunds.sandbox import SandboxControl, SandboxServer
from hsq_refunds.sandbox.notifications import CONTENT_FIELDS
from tests.sandbox.receiver import Receiver, wait_until
from tests.sandbox.wire import application, apply, query, verified_result

FORM_FIELDS = {"method", "version", "format", "merchantNo", "signType", "signContent", "sign"}
RETRY = [0.05, 0.05, 0.05]


@pytest.fixture
def creds(hsq_sandbox_credentials):
    return hsq_sandbox_credentials


@pytest.fixture
def gateway(hsq_sandbox):
    hsq_sandbox.configure_notify(schedule=RETRY)
    return hsq_sandbox


@pytest.fixture
def receiver(creds):
    with Receiver(creds) as server:
        yield server


def apply_notified(gateway, creds, url, trans_no="R1", **kwargs):
    business = application(trans_no, return_url=url, **kwargs)
    return verified_result(apply(gateway.url, creds, business), creds)


def settled(gateway):
    """The notification log once nothing is pending any more."""
    wait_until(lambda: gateway.notifications_pending() == 0, what="no pending notifications")
    return gateway.notification_log()


def test_processing_then_success_reach_the_return_url(gateway, creds, receiver):
    gateway.configure_apply(balance_seconds=0.3)
    extend = "a&b=c+d%25 中"
    answer = apply_notified(gateway, creds, receiver.url, amount=150, extend=extend)
    processing, success = receiver.wait_for(2)
    assert [processing.status, success.status] == ["PROCESSING", "SUCCESS"]
    final = verified_result(query(gateway.url, creds, "R1"), creds)
    for delivery in (processing, success):
        assert delivery.verified
        assert set(delivery.form) == FORM_FIELDS
        assert delivery.content_type.startswith("application/x-www-form-urlencoded")
        form = delivery.form
        assert (form["method"], form["version"], form["format"]) == ("CALLBACK", "1.0.0", "JSON")
        assert (form["merchantNo"], form["signType"]) == (creds.merchant_no, "RSA2")
        assert form["sign"] == form["sign"].lower() and len(form["sign"]) == 256
        assert form["signContent"] == json.dumps(
            delivery.content, ensure_ascii=False, separators=(",", ":")
        )
        content = delivery.content
        assert list(content) == list(CONTENT_FIELDS)
        assert (content["transNo"], content["origTransNo"], content["tradeNo"]) == (
            "R1",
            "P1",
            answer["tradeNo"],
        )
        assert (content["orderAmt"], content["extend"]) == ("150", extend)
    assert processing.content["finishedDate"] == ""
    assert processing.content["respCode"] == "100201"
    assert success.content["finishedDate"] == final["finishedDate"] != ""
    assert (success.content["respCode"], success.content["respMsg"]) == ("200007", "查询成功")
    log = settled(gateway)["R1"]
    assert [(e["order_status"], e["attempt"], e["result"]) for e in log] == [
        ("PROCESSING", 1, "acknowledged"),
        ("SUCCESS", 1, "acknowledged"),
    ]
    assert {(e["http_status"], e["body"], e["retry_in"], e["url"]) for e in log} == {
        (200, "SUCCESS", None, receiver.url)
    }


def test_a_refused_refund_notifies_fail(gateway, creds, receiver):
    gateway.configure_apply(refuse_seconds=0)
    gateway.add_order("P1", 1000, kind="refuse")
    apply_notified(gateway, creds, receiver.url)
    (delivery,) = receiver.wait_for(1)
    assert delivery.verified and delivery.status == "FAIL"
    assert len(delivery.content["finishedDate"]) == 14
    assert settled(gateway)["R1"][0]["result"] == "acknowledged"
    assert len(receiver.deliveries) == 1


def test_without_return_url_nothing_is_sent(gateway, creds):
    gateway.configure_apply(balance_seconds=0)
    verified_result(apply(gateway.url, creds, application("R1")), creds)
    assert gateway.notifications_pending() == 0
    assert gateway.notification_log() == {}


def test_retries_until_the_body_is_exactly_success(gateway, creds):
    gateway.configure_apply(balance_seconds=0)  # PROCESSING lasts no time: one notification
    with Receiver(creds, ["FAIL", "success", "", " SUCCESS \r\n"]) as receiver:
        apply_notified(gateway, creds, receiver.url)
        deliveries = receiver.wait_for(4)
        log = settled(gateway)["R1"]
    assert all(d.verified and d.status == "SUCCESS" for d in deliveries)
    assert len({d.form["sign"] for d in deliveries}) == 1
    assert [(e["attempt"], e["result"], e["retry_in"]) for e in log] == [
        (1, "rejected", 0.05),
        (2, "rejected", 0.05),
        (3, "rejected", 0.05),
        (4, "acknowledged", None),
    ]
    assert [e["body"] for e in log] == ["FAIL", "success", "", " SUCCESS \r\n"]


def test_gives_up_when_the_schedule_is_used_up(gateway, creds):
    gateway.configure_apply(balance_seconds=0)
    gateway.configure_notify(schedule=[0.05, 0.05])
    with Receiver(creds, [(500, "FAIL")] * 10) as receiver:
        apply_notified(gateway, creds, receiver.url)
        log = settled(gateway)["R1"]
        assert len(receiver.deliveries) == 3
    assert [(e["attempt"], e["http_status"], e["result"]) for e in log] == [
        (1, 500, "rejected"),
        (2, 500, "rejected"),
        (3, 500, "rejected"),
    ]
    assert log[-1]["retry_in"] is None


def test_a_long_answer_is_clipped_in_the_log_and_not_taken_for_success(gateway, creds):
    gateway.configure_apply(balance_seconds=0)
    gateway.configure_notify(schedule=[])
    with Receiver(creds, ["SUCCESS" + " " * 5000 + "x"]) as receiver:
        apply_notified(gateway, creds, receiver.url)
        (entry,) = settled(gateway)["R1"]
    assert entry["result"] == "rejected" and len(entry["body"]) == 200


def test_redirects_are_not_followed(gateway, creds):
    gateway.configure_apply(balance_seconds=0)
    with Receiver(creds) as elsewhere:
        with Receiver(creds, [(302, "", {"Location": elsewhere.url})]) as receiver:
            apply_notified(gateway, creds, receiver.url)
            log = settled(gateway)["R1"]
            assert [d.answered[0] for d in receiver.deliveries] == [302, 200]
        assert elsewhere.deliveries == []
    assert [(e["http_status"], e["result"]) for e in log] == [
        (302, "rejected"),
        (200, "acknowledged"),
    ]


def test_an_unreachable_return_url_is_an_error_and_retried(gateway, creds):
    gateway.configure_apply(balance_seconds=0)
    gateway.configure_notify(schedule=[0.05])
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    apply_notified(gateway, creds, f"http://127.0.0.1:{port}/notify")
    log = settled(gateway)["R1"]
    assert [(e["result"], e["error"], e["http_status"]) for e in log] == [
        ("error", "ConnectionError", None),
        ("error", "ConnectionError", None),
    ]


def test_a_silent_receiver_times_out(gateway, creds):
    gateway.configure_apply(balance_seconds=0)
    gateway.configure_notify(schedule=[], read_timeout=0.2)
    with socket.socket() as silent:  # connections complete in its backlog; nothing answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        apply_notified(gateway, creds, f"http://127.0.0.1:{silent.getsockname()[1]}/notify")
        (entry,) = settled(gateway)["R1"]
    assert (entry["result"], entry["error"], entry["retry_in"]) == ("error", "ReadTimeout", None)


def test_method_and_version_are_settable_stand_ins(gateway, creds, receiver):
    settings = gateway.configure_notify()
    assert (settings["method"], settings["version"]) == ("CALLBACK", "1.0.0")
    gateway.configure_notify(method="REFUND_NOTIFY", version="2.0")
    gateway.configure_apply(balance_seconds=0)
    apply_notified(gateway, creds, receiver.url)
    (delivery,) = receiver.wait_for(1)
    assert delivery.verified
    assert (delivery.form["method"], delivery.form["version"]) == ("REFUND_NOTIFY", "2.0")


def test_the_default_schedule(hsq_sandbox):
    assert hsq_sandbox.configure_notify()["schedule"] == [1.0, 2.0, 5.0, 15.0, 60.0]


# ------------------------------------------------------------------------------- faults


def test_notify_duplicate_sends_each_notification_extra_times(gateway, creds, receiver):
    gateway.configure_apply(balance_seconds=0.2)
    gateway.set_fault("notify_duplicate", trans_no="R1", times=2)
    apply_notified(gateway, creds, receiver.url)
    log = settled(gateway)["R1"]
    deliveries = receiver.wait_for(6)
    assert [d.status for d in deliveries] == ["PROCESSING"] * 3 + ["SUCCESS"] * 3
    assert all(d.verified for d in deliveries)
    assert [e["duplicate"] for e in log] == [False, True, True] * 2
    gateway.set_fault("notify_duplicate")  # for every refund, one extra copy (the default)
    apply_notified(gateway, creds, receiver.url, "R2")
    settled(gateway)
    assert [d.status for d in receiver.deliveries[6:]] == ["PROCESSING"] * 2 + ["SUCCESS"] * 2


def test_notify_out_of_order_sends_the_final_status_first(gateway, creds, receiver):
    gateway.configure_apply(balance_seconds=0.2)
    gateway.set_fault("notify_out_of_order", trans_no="R1")
    apply_notified(gateway, creds, receiver.url)
    deliveries = receiver.wait_for(2)
    assert [d.status for d in deliveries] == ["SUCCESS", "PROCESSING"]
    assert all(d.verified for d in deliveries)
    assert [e["order_status"] for e in settled(gateway)["R1"]] == ["SUCCESS", "PROCESSING"]


def test_notify_bad_signature_is_per_attempt(gateway, creds, receiver):
    gateway.configure_apply(balance_seconds=0)
    gateway.set_fault("notify_bad_signature", trans_no="R1", times=1)
    apply_notified(gateway, creds, receiver.url)
    first, second = receiver.wait_for(2)
    assert (first.verified, first.answered) == (False, (200, "FAIL"))
    assert (second.verified, second.answered) == (True, (200, "SUCCESS"))
    assert first.form["signContent"] == second.form["signContent"]
    assert len(first.form["sign"]) == len(second.form["sign"])
    log = settled(gateway)["R1"]
    assert [(e["bad_signature"], e["result"]) for e in log] == [
        (True, "rejected"),
        (False, "acknowledged"),
    ]


def test_notify_delay_lets_a_later_status_overtake(gateway, creds, receiver):
    gateway.configure_apply(balance_seconds=0.2)
    gateway.set_fault("notify_delay", trans_no="R1", times=1, seconds=3600)
    apply_notified(gateway, creds, receiver.url)
    (delivery,) = receiver.wait_for(1)
    assert delivery.status == "SUCCESS"
    # What stays pending is PROCESSING, an hour from now.
    wait_until(lambda: gateway.notifications_pending() == 1, what="SUCCESS to be done")
    assert [e["order_status"] for e in gateway.notification_log()["R1"]] == ["SUCCESS"]


def test_notify_never_withholds_a_notification(gateway, creds, receiver):
    gateway.configure_apply(balance_seconds=0.2)
    gateway.set_fault("notify_never", trans_no="R1", times=1)
    apply_notified(gateway, creds, receiver.url)
    apply_notified(gateway, creds, receiver.url, "R2")
    log = settled(gateway)
    assert [(e["order_status"], e["result"]) for e in log["R1"]] == [
        ("PROCESSING", "never"),
        ("SUCCESS", "acknowledged"),
    ]
    assert [e["result"] for e in log["R2"]] == ["acknowledged", "acknowledged"]
    statuses = sorted((d.content["transNo"], d.status) for d in receiver.deliveries)
    assert statuses == [("R1", "SUCCESS"), ("R2", "PROCESSING"), ("R2", "SUCCESS")]


def test_notify_never_for_every_refund(gateway, creds, receiver):
    gateway.configure_apply(balance_seconds=0)
    gateway.set_fault("notify_never")
    apply_notified(gateway, creds, receiver.url)
    assert [e["result"] for e in settled(gateway)["R1"]] == ["never"]
    assert receiver.deliveries == []


def test_notification_faults_leave_answers_alone(gateway, creds, receiver):
    for name in ("notify_never", "notify_bad_signature", "notify_duplicate"):
        gateway.set_fault(name)
    gateway.configure_apply(balance_seconds=0)
    assert verified_result(query(gateway.url, creds, "R0"), creds)["respCode"] == "200004"
    apply_notified(gateway, creds, receiver.url)  # answered and signed as usual


# ------------------------------------------------------------------ control and lifecycle


def test_the_control_endpoint_drives_notifications(gateway, creds, receiver):
    with SandboxControl(gateway.control_url) as control:
        settings = control.configure_notify(schedule=(0.05,), method="NOTIFY", read_timeout=5)
        assert (settings["schedule"], settings["method"], settings["read_timeout"]) == (
            [0.05],
            "NOTIFY",
            5.0,
        )
        control.configure_apply(balance_seconds=0)
        control.set_fault("notify_bad_signature", trans_no="R1", times=1)
        apply_notified(gateway, creds, receiver.url)
        receiver.wait_for(2)
        wait_until(lambda: control.notifications_pending() == 0, what="delivery")
        log = control.notification_log()
        assert log == gateway.notification_log()
        assert [e["result"] for e in log["R1"]] == ["rejected", "acknowledged"]
        raw = requests.get(gateway.control_url + "/notifications", timeout=10).json()
        assert raw == {"notifications": log, "pending": 0}
        with pytest.raises(ValueError, match="schedule"):
            control.configure_notify(schedule=[-1])
        with pytest.raises(ValueError, match="retries"):
            control.configure_notify(retries=3)
        with pytest.raises(ValueError, match="method"):
            control.configure_notify(method="")
        control.reset()
        assert control.notification_log() == {}
        assert control.configure_notify()["method"] == "CALLBACK"


def test_reset_forgets_scheduled_notifications(gateway, creds, receiver):
    gateway.add_order("P1", 1000, kind="card")
    apply_notified(gateway, creds, receiver.url)
    (delivery,) = receiver.wait_for(1)
    assert delivery.status == "PROCESSING"
    wait_until(lambda: gateway.notifications_pending() == 1, what="the hour-long SUCCESS")
    gateway.reset()
    assert gateway.notifications_pending() == 0
    assert gateway.notification_log() == {}


def test_stop_ends_the_notifier_thread_and_start_brings_it_back(creds):
    def notifier_threads():
        return [t for t in threading.enumerate() if t.name.startswith("hsq-sandbox-notify")]

    before = set(notifier_threads())
    server = SandboxServer(creds, apply={"balance_seconds": 0}, notify={"schedule": []})
    server.start()
    (thread,) = set(notifier_threads()) - before
    assert thread.daemon and thread.name == f"hsq-sandbox-notify-{server.port}"
    server.stop()
    assert not thread.is_alive()
    with Receiver(creds) as receiver, server:
        apply_notified(server, creds, receiver.url)
        assert receiver.wait_for(1)[0].verified
