"""Who uses the console: the bearer token an operator pasted, kept in a session cookie.

The cookie holds the token itself (the same JWT the API takes), HttpOnly (no script reads it),
SameSite=Strict (no other site's page makes the browser send it), Path=/console (the API never
sees it: the API takes bearer headers only), Secure when the console is reached over HTTPS. It
is verified on every request like a bearer header, so any API replica serves any session, an
expired or forged token ends the session, and nothing is stored on the server. It carries no
Max-Age: it ends with the browser, at the token's expiry, or at sign-out.

Requests that change something (every POST) are checked twice against cross-site forgery:
the browser must not say the request came from another site (`Sec-Fetch-Site`, `Origin`), and
the form must carry the session's CSRF token, an HMAC of the session's bearer token that only a
page of the console can read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import OPERATE, READ, Caller, KeysUnavailable, Unauthenticated

COOKIE = "provisioning_console"
PATH = "/console"
# Browsers keep a cookie of at most 4096 bytes (name, value and attributes): a longer token
# would be dropped silently, and sign-in would loop.
MAX_TOKEN_BYTES = 3800


class ConsoleError(Exception):
    """Answered with an HTML page (`pages.error_page`)."""

    def __init__(self, status: int, message: str, *, sign_in: bool = False,
                 clear_session: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.sign_in = sign_in  # a page (GET) then sends the browser to the sign-in page
        self.clear_session = clear_session


class Session:
    """A signed-in viewer: who the token names, and the token's CSRF value."""

    def __init__(self, caller: Caller, token: str) -> None:
        self.caller = caller
        self.csrf = csrf_token(token)

    @property
    def operator(self) -> bool:
        return self.caller.may(OPERATE)

    @property
    def tenant_scope(self) -> str | None:
        """The one tenant a tenant's session sees; None for an operator (every tenant)."""
        return None if self.operator else self.caller.tenant_id


def csrf_token(bearer_token: str) -> str:
    digest = hmac.new(bearer_token.encode(), b"provisioning-console-csrf", hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


async def verify(request: Request, token: str) -> Caller:
    """The caller a token names, as the API would take it. Raises ConsoleError."""
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise ConsoleError(401, f"The token is over {MAX_TOKEN_BYTES} bytes: too long to keep "
                                "in a browser's cookie.")
    try:
        caller = await run_in_threadpool(request.app.state.verifier.verify, token)
    except Unauthenticated as exc:
        raise ConsoleError(401, f"The token was refused: {exc}.", sign_in=True,
                           clear_session=True) from None
    except KeysUnavailable as exc:
        raise ConsoleError(503, f"The token could not be checked: {exc}") from None
    if not caller.may(READ):
        raise ConsoleError(403, f"The token lacks the {READ} permission the console needs.",
                           sign_in=True, clear_session=True)
    return caller


async def current_session(request: Request) -> Session:
    """The session of this request's cookie. Raises ConsoleError (sign in again)."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise ConsoleError(401, "Sign in to use the console.", sign_in=True)
    return Session(await verify(request, token), token)


def start(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, path=PATH, httponly=True, samesite="strict",
                        secure=_over_https(request))


def end(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict",
                           secure=_over_https(request))


def check_same_site(request: Request) -> None:
    """Refuse a request another site's page made the browser send (before any form field is
    read). Browsers send Sec-Fetch-Site; Origin covers older ones; a request with neither did
    not come from a browser page, and still needs the CSRF token."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise ConsoleError(403, f"Refused: the request came from another site ({site}).")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise ConsoleError(403, "Refused: the request came from another origin.")


def check_csrf(session: Session, submitted: object) -> None:
    if not isinstance(submitted, str) or not hmac.compare_digest(submitted, session.csrf):
        raise ConsoleError(403, "Refused: the form did not carry this session's CSRF token. "
                                "Reload the page and try again.")


def _over_https(request: Request) -> bool:
    # Behind a TLS-terminating Ingress the request arrives over HTTP; the proxy says how the
    # browser came. Trusting it only ever adds Secure (at worst the cookie is not sent).
    return (request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").lower() == "https")
