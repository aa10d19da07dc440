"""A request that arrives over HTTPS gets a Secure session cookie and HSTS; plain HTTP does not
(so `make run` on http://127.0.0.1 keeps working)."""

from __future__ import annotations

from controlplane.https import HSTS


def test_https_requests_get_secure_cookies_and_hsts(app):
    client = app.test_client()
    response = client.get("/login", base_url="https://cp.example")
    assert response.headers["Strict-Transport-Security"] == HSTS
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    assert (
        client.get("/healthz", base_url="https://cp.example").headers["Strict-Transport-Security"]
        == HSTS
    )


def test_plain_http_gets_neither(app):
    response = app.test_client().get("/login")
    assert "Strict-Transport-Security" not in response.headers
    assert "Secure" not in response.headers["Set-Cookie"]
