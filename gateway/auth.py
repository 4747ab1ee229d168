"""Access control: API tokens with a read or a write scope, and the annotation page's sign-in session.

    make token NAME=laptop SCOPE=write       # prints the token once; the store keeps its SHA-256 only
    curl -H "Authorization: Bearer tg_..." 'http://host:7777/imginfo?id_name=tuscany'
    make revoke NAME=laptop                  # refused at once, on every replica

``GATEWAY_AUTH`` says when a token is asked for:
- ``auto`` (the default): for requests from other machines. A request is local when its peer and every address
  a proxy names for it (``X-Real-IP``, which our nginx sets, and ``X-Forwarded-For``) are loopback, its ``Host``
  is a loopback name (a page that rebound its own name to 127.0.0.1 is not local) and the gateway listens on a
  loopback address, so ``make serve`` and ``make serve-cluster`` on loopback need no login. A forwarder on this
  machine that adds no ``X-Real-IP`` (``ssh -L``, socat) looks local: expose the gateway through one only with
  ``required``.
- ``required``: for every request (what ``make serve-cluster --listen`` beyond loopback sets).
- ``off``: never (a gateway behind a proxy of yours that authenticates).

The read scope covers ``/imginfo``, ``/photos`` and what the annotation page reads; the write scope (which includes
read) uploads, deletes, labels and starts retrain and deploy jobs. Public: ``/healthz``, ``/readyz``,
``/openapi.json``, the page's HTML and static files, and ``/session`` (sign in, out, and who is signed in). A
request without a usable token is 401 (``WWW-Authenticate: Bearer``); one whose token lacks the scope, 403.
The session cookie is HttpOnly and SameSite=Strict, and state-changing requests keep the same-origin check.
Tokens are never written to a log: they travel only in the Authorization header and the sign-in body.
"""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify, request

from gateway.same_origin import SAFE
from tagger.net import host_name, is_ip, is_loopback

MODES = ("auto", "required", "off")
COOKIE = "tagger_session"
PUBLIC = frozenset({"static", "api.healthz", "api.readyz", "api.openapi", "annotation_ui.page",
                    "annotation_ui.static", "auth.session_view", "auth.sign_in", "auth.sign_out"})
READ_POSTS = frozenset({"api.imginfo"})  # a lookup, also accepted as a form POST
UNKNOWN_TOKEN = ("the token is unknown or revoked: ask the operator for a new one "
                 "(make token NAME=... SCOPE=read|write)")

bp = Blueprint("auth", __name__)


def needed_scope(endpoint: str | None, method: str) -> str | None:
    """The scope a request needs: None (public, or no such route: its 404/405 says so), "read" or "write"."""
    if endpoint is None or endpoint in PUBLIC:
        return None
    return "read" if method in SAFE or endpoint in READ_POSTS else "write"


def grants(scope: str, need: str) -> bool:
    return scope == "write" or scope == need


def is_local(remote_addr: str | None, real_ip: str | None, forwarded_for: str | None, *, host: str = "localhost",
             listen: str | None = None) -> bool:
    """Whether the peer and every address its proxies name are loopback (a header can only make it less local),
    the ``Host`` the client asked for is a loopback name, and the address the request arrived on (``listen``,
    gunicorn's ``SERVER_NAME``; ignored unless it is an IP address) is loopback. No peer address is a Unix socket's
    peer (gunicorn bound to one), on this machine too."""
    named = ([remote_addr] if remote_addr else []) + ([real_ip] if real_ip is not None else []) \
        + (forwarded_for.split(",") if forwarded_for is not None else [])
    if listen and is_ip(listen) and not is_loopback(listen):  # bound to 0.0.0.0 or a LAN address
        return False
    return is_loopback(host_name(host)) and all(is_loopback(a) for a in named)


def token_required(mode: str) -> bool:
    if mode == "required":
        return True
    if mode == "off":
        return False
    return not is_local(request.remote_addr, request.headers.get("X-Real-IP"),
                        request.headers.get("X-Forwarded-For"), host=request.host,
                        listen=request.environ.get("SERVER_NAME"))


def _refuse(status: int, error: str | None, message: str):
    response = jsonify(error=message)
    response.status_code = status
    # RFC 6750: no error code when the request sent no credentials at all
    response.headers["WWW-Authenticate"] = 'Bearer realm="tagger"' + (f', error="{error}"' if error else "")
    return response


def bearer(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def grant_of_request(store) -> tuple[dict | None, tuple | None]:
    """(what the request's token or session grants, None) or (None, the 401 answer's arguments)."""
    header = request.headers.get("Authorization")
    if header is not None:
        token = bearer(header)
        if token is None:
            return None, ("invalid_request", "send the token as 'Authorization: Bearer TOKEN'")
        grant = store.token_grant(token)
        if grant is None:
            return None, ("invalid_token", UNKNOWN_TOKEN)
        return grant, None
    cookie = request.cookies.get(COOKIE)
    if cookie:
        grant = store.session_grant(cookie)
        if grant is None:
            return None, ("invalid_token", "the sign-in has ended (expired, signed out or its token revoked): "
                                           "sign in again with a token")
        return grant, None
    return None, (None, "this gateway needs a token: send 'Authorization: Bearer TOKEN' (make token "
                        "NAME=... SCOPE=read|write), or sign in on the annotation page")


def install(app: Flask) -> None:
    mode = str(app.config["GATEWAY_AUTH"]).strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"GATEWAY_AUTH={app.config['GATEWAY_AUTH']!r}: use auto (tokens for other machines), "
                         "required or off")
    app.config["GATEWAY_AUTH"] = mode
    app.register_blueprint(bp)

    @app.before_request
    def _authorize():
        need = needed_scope(request.endpoint, request.method)
        if need is None or not token_required(mode):
            return None
        grant, refusal = grant_of_request(app.extensions["store"])
        if refusal:
            return _refuse(401, *refusal)
        if not grants(grant["scope"], need):
            return _refuse(403, "insufficient_scope", f"token {grant['id']} ({grant['name']}) has the "
                           f"{grant['scope']} scope; {request.method} {request.path} needs a {need} token")
        return None


def _session_answer(grant: dict | None):
    return {"auth": "required" if token_required(current_app.config["GATEWAY_AUTH"]) else "off",
            "signed_in": grant is not None, **({"name": grant["name"], "scope": grant["scope"]} if grant else {})}


@bp.get("/session")
def session_view():
    """Whether this client needs a token, and who is signed in (the annotation page asks at start)."""
    cookie = request.cookies.get(COOKIE)
    return jsonify(_session_answer(current_app.extensions["store"].session_grant(cookie) if cookie else None))


@bp.post("/session")
def sign_in():
    """Sign in with a token (JSON ``{"token": "tg_..."}`` or a form field): sets the session cookie."""
    if request.is_json:
        body = request.get_json(silent=True)
        token = body.get("token") if isinstance(body, dict) else None
    else:
        token = request.form.get("token")
    if not isinstance(token, str) or not token:
        return jsonify(error='send the token as JSON {"token": "tg_..."} (make token NAME=... prints one)'), 400
    store = current_app.extensions["store"]
    grant = store.token_grant(token.strip())
    if grant is None:
        return _refuse(401, "invalid_token", UNKNOWN_TOKEN)
    hours = float(current_app.config["SESSION_HOURS"])
    value = store.start_session(grant["id"], hours=hours)
    response = jsonify(_session_answer(grant))
    secure = request.is_secure or (request.headers.get("X-Forwarded-Proto") == "https"
                                   and is_loopback(request.remote_addr or ""))
    response.set_cookie(COOKIE, value, max_age=int(hours * 3600), path="/", httponly=True, samesite="Strict",
                        secure=secure)
    return response


@bp.delete("/session")
def sign_out():
    cookie = request.cookies.get(COOKIE)
    if cookie:
        current_app.extensions["store"].end_session(cookie)
    response = jsonify(_session_answer(None))
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response
