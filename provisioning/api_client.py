"""The CLI's way to the REST API: one small HTTP client that turns problems into errors."""

from __future__ import annotations

from typing import Any

import httpx
import jwt

from provisioning.errors import ConfigurationError, ProvisioningError

PREFIX = "/api/v1/provisioning"


class ApiError(ProvisioningError):
    """The API answered with a problem document (or not at all)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, base_url: str, token: str | None, tenant_id: str | None = None,
                 timeout_s: float = 30.0) -> None:
        if not token:
            raise ConfigurationError(
                "no API token: set PROVISIONING_API_TOKEN or pass --token "
                "(`provisioning token --subject S --tenant T` prints one for the local setup)")
        self._base_url = base_url.rstrip("/")
        # The tenant header defaults to the token's own tenant; the API checks it anyway.
        tenant_id = tenant_id or _tenant_of(token)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if tenant_id:
            headers["X-Tenant-ID"] = tenant_id
        self._http = httpx.Client(base_url=self._base_url, headers=headers, timeout=timeout_s)

    def submit(self, workflow: str, body: dict[str, Any], wait_s: float = 0) -> dict[str, Any]:
        params = {"wait": wait_s} if wait_s else None
        return self._call("POST", f"{PREFIX}/{workflow}", json=body, params=params,
                          read_timeout=wait_s)

    def status(self, request_id: str) -> dict[str, Any]:
        return self._call("GET", f"{PREFIX}/{request_id}/status")

    def events(self, request_id: str) -> dict[str, Any]:
        return self._call("GET", f"{PREFIX}/{request_id}/events")

    def retry(self, request_id: str) -> dict[str, Any]:
        return self._call("POST", f"{PREFIX}/{request_id}/retry")

    def operate(self, request_id: str, action: str, reason: str | None,
                step: str | None = None) -> dict[str, Any]:
        """An operator's cancel, resume, recompensate or resolve (the last two name the
        uncompensated step; all need the provisioning:operate permission)."""
        body: dict[str, str] = {"reason": reason} if reason else {}
        if step is not None:
            body["step"] = step
        return self._call("POST", f"{PREFIX}/{request_id}/{action}", json=body or None)

    def _call(self, method: str, path: str, read_timeout: float = 0, **kwargs: Any
              ) -> dict[str, Any]:
        timeout = httpx.Timeout(self._http.timeout.read + read_timeout, connect=5.0)
        try:
            response = self._http.request(method, path, timeout=timeout, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the API at {self._base_url} ({exc}); "
                           "is `provisioning api` running?") from None
        if response.is_success:
            return response.json()
        raise ApiError(_problem_text(response), response.status_code)


def _problem_text(response: httpx.Response) -> str:
    try:
        problem = response.json()
        return f"{response.status_code} {problem.get('title', '')}: {problem.get('detail', '')}"
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"


def _tenant_of(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    tenant = claims.get("tenant_id")
    return tenant if isinstance(tenant, str) else None

