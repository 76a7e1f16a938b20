"""Where a process serves its /metrics: `SOPHIA_METRICS_ADDR` (host:port, `:0` for a free
port, `off` to serve none)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

ADDRESS_ENV = "SOPHIA_METRICS_ADDR"
DEFAULT_ADDRESS = "127.0.0.1:9464"


class MetricsAddressError(ValueError):
    pass


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def metrics_address(text: str | None = None) -> Address | None:
    """The address to serve on, None when `off`. A bad value names the variable and the form."""
    text = (os.environ.get(ADDRESS_ENV, DEFAULT_ADDRESS) if text is None else text).strip()
    if text.lower() in ("off", ""):
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not sep or not port.isdigit() or int(port) > 65535:
        raise MetricsAddressError(
            f"{ADDRESS_ENV}={text!r} is not host:port; set it like {DEFAULT_ADDRESS}, "
            "':0' for any free port, or 'off'"
        )
    return Address(host, int(port))


def serve_metrics(registry: CollectorRegistry, address: Address) -> Address:
    """Serves the registry on a daemon thread; the address it listens on (the port chosen when
    asked for 0). A port in use is an error that says which variable moves it."""
    try:
        server, _thread = start_http_server(address.port, address.host, registry=registry)
    except OSError as err:
        raise MetricsAddressError(
            f"cannot serve metrics on {address} ({err.strerror or err}); set {ADDRESS_ENV} "
            "to a free host:port, or 'off'"
        ) from err
    return Address(address.host, server.server_address[1])
