"""The Nudge-Signature scheme (service/signatures.py) shared by outgoing event webhooks and the
incoming payment webhook."""

from __future__ import annotations

import pytest

from service.signatures import SignatureError, sign, verify

BODY = b'{"id":"evt_1","type":"payment_received"}'
T = 1_700_000_000
# Computed outside Python, so the test does not check the code against itself:
#   printf '%s' '1700000000.{"id":"evt_1","type":"payment_received"}' \
#     | openssl dgst -sha256 -hmac whsec_test
VECTOR = "d6d261dd63eeb84670ffaba54b2e733bfb4da107047ec0fe5300969fa05e7943"
VECTOR_NEW = "26576dfedc4da29df7bc8a617fa23ef8fbc84fc46df1817cea3bb52bdc322a8f"  # whsec_new


def test_sign_matches_the_hand_computed_vector():
    assert sign("whsec_test", BODY, T) == f"t={T},v1={VECTOR}"
    assert sign(b"whsec_test", BODY, T + 0.9) == f"t={T},v1={VECTOR}"  # whole seconds


def test_verify_accepts_the_vector_and_our_own_signatures():
    verify("whsec_test", f"t={T},v1={VECTOR}", BODY, now=T)
    verify("whsec_test", f" t={T} , v1={VECTOR} ", BODY, now=T + 299)  # spaces, near the edge
    verify("s3cret", sign("s3cret", b"", now=T), b"", now=T)


@pytest.mark.parametrize("header, reason", [
    (None, "missing"),
    ("", "missing"),
    ("v1=" + VECTOR, "malformed: no t="),
    (f"t={T}", "malformed: no v1="),
    (f"t=abc,v1={VECTOR}", "malformed: t="),
    (f"t={T},t={T},v1={VECTOR}", "malformed: more than one t="),
    (f"t={T},v1=xyz", "malformed: v1="),
    (f"t={T},v1={VECTOR.upper()}", "malformed: v1="),
    (f"t={T};v1={VECTOR}", "malformed"),
    ("t=" + "1" * 5000, "malformed: header longer"),
])
def test_malformed_or_missing_headers_say_so(header, reason):
    with pytest.raises(SignatureError, match=reason):
        verify("whsec_test", header, BODY, now=T)


def test_time_tolerance_both_ways():
    with pytest.raises(SignatureError, match="too old: signed 301 s ago"):
        verify("whsec_test", f"t={T},v1={VECTOR}", BODY, now=T + 301)
    with pytest.raises(SignatureError, match="in the future"):
        verify("whsec_test", f"t={T},v1={VECTOR}", BODY, now=T - 301)
    verify("whsec_test", f"t={T},v1={VECTOR}", BODY, now=T + 900, tolerance=1000)


@pytest.mark.parametrize("secret, body, stamp", [
    ("whsec_test", BODY + b" ", T),   # the body changed
    ("other", BODY, T),               # another secret
    ("whsec_test", BODY, T + 1),      # the timestamp changed
])
def test_mismatch_on_another_body_secret_or_timestamp(secret, body, stamp):
    with pytest.raises(SignatureError, match="mismatch"):
        verify(secret, f"t={stamp},v1={VECTOR}", body, now=T)


def test_rotation_several_v1_values_and_several_secrets():
    both = sign(["whsec_test", "whsec_new"], BODY, T)
    assert both == f"t={T},v1={VECTOR},v1={VECTOR_NEW}"
    verify("whsec_test", both, BODY, now=T)      # a receiver still on the old secret
    verify("whsec_new", both, BODY, now=T)       # one already on the new
    verify(["whsec_new", "whsec_test"], f"t={T},v1={VECTOR}", BODY, now=T)  # receiver holds both
    # an unknown scheme beside v1 is ignored, not an error
    verify("whsec_test", f"t={T},v0=abc,v1={VECTOR}", BODY, now=T)


def test_no_secret_refuses_everything_and_cannot_sign():
    with pytest.raises(SignatureError, match="no signing secret"):
        verify("", f"t={T},v1={VECTOR}", BODY, now=T)
    with pytest.raises(SignatureError, match="no signing secret"):
        verify(None, f"t={T},v1={VECTOR}", BODY, now=T)
    with pytest.raises(ValueError):
        sign("", BODY, T)


def test_error_messages_never_carry_the_body_or_secret():
    with pytest.raises(SignatureError) as caught:
        verify("whsec_test", f"t={T},v1={'0' * 64}", BODY, now=T)
    assert "evt_1" not in str(caught.value) and "whsec" not in str(caught.value)
