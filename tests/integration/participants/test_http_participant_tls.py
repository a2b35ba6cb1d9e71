"""The http adapter over TLS against a real loopback server that requires a client certificate:
the route's certificate gets in, no certificate or a stranger's does not, and a server the
configured CA did not sign is not trusted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr
from tls_certs import TlsFiles, make_tls_files, server_context

from consumer.participants.base import Action, Outcome, StepCall
from consumer.participants.http import HttpParticipant
from consumer.routing import HttpCredentials, Route, read_http_auth

seen: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        peer = self.connection.getpeercert() or {}  # type: ignore[attr-defined]
        subject = dict(pair[0] for pair in peer.get("subject", ()))
        seen.append({"client": subject.get("commonName"), "action": body["action"],
                     "authorization": self.headers.get("Authorization")})
        payload = json.dumps({"output": {"adminUserId": "u-tls"}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_url(tls: TlsFiles) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context(tls).wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/steps"
    server.shutdown()
    server.server_close()


def _call(action: Action = Action.EXECUTE) -> StepCall:
    return StepCall(request_id="r-1", run=1, workflow_type="tenant", tenant_id=None,
                    step="create-admin-role", action=action, attempt=1,
                    idempotency_key="r-1:1:create-admin-role", params={"entityId": "e-1"})


def _participant(url: str, **files: Path) -> HttpParticipant:
    route = Route("http", url, credentials=HttpCredentials(**files))
    auth = read_http_auth("tenant", "create-admin-role", route)
    return HttpParticipant(url, bearer_token=auth.bearer_token or SecretStr("tls-token"),
                           tls=auth.tls)


def test_the_routes_client_certificate_is_presented_on_every_call(
    https_url: str, tls: TlsFiles,
) -> None:
    seen.clear()
    participant = _participant(https_url, client_cert_file=tls.client_cert,
                               client_key_file=tls.client_key, ca_file=tls.ca_cert)
    done = participant.call(_call())
    undone = participant.call(_call(Action.COMPENSATE))
    assert (done.outcome, dict(done.output)) == (Outcome.SUCCEEDED, {"adminUserId": "u-tls"})
    assert undone.outcome is Outcome.SUCCEEDED
    assert seen == [
        {"client": "provisioning-worker", "action": "EXECUTE", "authorization": "Bearer tls-token"},
        {"client": "provisioning-worker", "action": "COMPENSATE",
         "authorization": "Bearer tls-token"},
    ]


@pytest.mark.parametrize("who, alert", [
    ("no certificate", "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
    ("a stranger's certificate", "TLSV1_ALERT_UNKNOWN_CA"),
])
def test_without_an_accepted_certificate_the_call_fails_transiently_saying_so(
    https_url: str, tls: TlsFiles, who: str, alert: str,
) -> None:
    seen.clear()
    files = ({"ca_file": tls.ca_cert} if who == "no certificate" else
             {"ca_file": tls.ca_cert, "client_cert_file": tls.other_client_cert,
              "client_key_file": tls.other_client_key})
    result = _participant(https_url, **files).call(_call())
    assert result.outcome is Outcome.TRANSIENT_FAILURE
    assert (result.reason or "").startswith(f"cannot reach {https_url}: ")
    assert (result.reason or "").endswith(f"(TLS: {alert})")  # what the server refused
    assert seen == []  # the server never saw the request
    assert "tls-token" not in (result.reason or "")


def test_a_server_the_configured_ca_did_not_sign_is_not_trusted(
    https_url: str, tls: TlsFiles,
) -> None:
    seen.clear()
    result = _participant(https_url, client_cert_file=tls.client_cert,
                          client_key_file=tls.client_key, ca_file=tls.other_ca_cert).call(_call())
    assert result.outcome is Outcome.TRANSIENT_FAILURE
    assert result.reason == (f"cannot reach {https_url}: ConnectError "
                             "(TLS: CERTIFICATE_VERIFY_FAILED)")
    assert seen == []
