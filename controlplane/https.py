"""What a request that arrived over HTTPS gets: a Secure session cookie and HSTS.

"Arrived over HTTPS" is Flask's `request.is_secure`: gunicorn serving TLS itself
(MODELPLANE_HTTP_CERT_FILE), or a proxy in MODELPLANE_HTTP_FORWARDED_ALLOW_IPS saying so with
X-Forwarded-Proto. `MODELPLANE_SECURE_COOKIES` still forces Secure for setups that hide it.
"""

from __future__ import annotations

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

# One year, the usual HSTS lifetime; subdomains are left to the operator's own policy.
HSTS = "max-age=31536000"


class HttpsAwareSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure whenever the request itself came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


def init_app(app: Flask) -> None:
    app.session_interface = HttpsAwareSessions()
    app.after_request(_strict_transport_security)


def _strict_transport_security(response: Response) -> Response:
    """Browsers that reached us over HTTPS once never fall back to plain HTTP."""
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response
