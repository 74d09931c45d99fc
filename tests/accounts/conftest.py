"""A real OpenID Connect provider (oidc-provider-mock) on loopback, for sign-in tests."""

from collections.abc import Iterator
from dataclasses import dataclass
from threading import Thread

import pytest
import requests
import werkzeug.serving
from oidc_provider_mock import app as oidc_provider_app


@dataclass(frozen=True)
class OidcProvider:
    """The running provider. It accepts any client id and secret, and any redirect URI."""

    url: str

    def set_user(self, sub: str, claims: dict) -> None:
        """Set the claims the provider returns (ID token and userinfo) for ``sub``."""
        response = requests.put(f"{self.url}/users/{sub}", json=claims, timeout=5)
        response.raise_for_status()


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    # Port 0: the OS picks a free port. Bound to 127.0.0.1 explicitly (the library's own
    # run_server_in_thread binds "localhost", which may resolve to ::1).
    server = werkzeug.serving.make_server("127.0.0.1", 0, oidc_provider_app(), threaded=True)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield OidcProvider(url=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
