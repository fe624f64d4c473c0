"""Connection options shared by every Kafka client the service and the tools create."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

from consumer.config import ConfigError, Settings
from consumer.errors import UserError

PREFLIGHT_TIMEOUT_S = 10.0


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL/SASL_SSL, or a ConfigError naming the file setting that is wrong.

    Python's own errors (``[Errno 2]``, ``[X509: NO_CERTIFICATE_OR_CRL_FOUND]``) say neither which
    variable nor what was expected, so every file is checked for itself here.
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    _check_readable("KAFKA_SSL_CAFILE", cafile)
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"KAFKA_SSL_CAFILE: {cafile} holds no PEM CA certificate ({exc.reason or exc})"
        ) from None
    if settings.kafka_ssl_certfile:
        _load_client_certificate(context, settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    elif settings.kafka_ssl_keyfile:
        raise ConfigError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE (mutual TLS needs both)")
    return context


def _check_readable(setting: str, path: Path | None) -> None:
    if path is None:
        return
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


def _load_client_certificate(context: ssl.SSLContext, certfile: Path, keyfile: Path | None) -> None:
    _check_readable("KAFKA_SSL_CERTFILE", certfile)
    _check_readable("KAFKA_SSL_KEYFILE", keyfile)
    try:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    except ssl.SSLError as exc:
        key = keyfile or "the same file"
        raise ConfigError(
            f"KAFKA_SSL_CERTFILE/KAFKA_SSL_KEYFILE: {certfile} and {key} are not a PEM certificate and "
            f"its private key ({exc.reason or exc})"
        ) from None


def bootstrap_addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as pairs; a malformed entry is a ConfigError naming the setting."""
    addresses = []
    for entry in (part.strip() for part in bootstrap_servers.split(",")):
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"KAFKA_BOOTSTRAP_SERVERS: {entry!r} is not host:port (expected host:port[,host:port...])"
            )
        addresses.append((host.strip("[]"), int(port)))
    return addresses


async def any_reachable(addresses: list[tuple[str, int]], timeout_s: float) -> bool:
    """Whether a TCP connection to at least one address opens within ``timeout_s``.

    A cheap check before the Kafka clients start, so an unreachable cluster is one readable line
    instead of aiokafka's error logs and exception text.
    """

    async def opens(host: str, port: int) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                _reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    results = await asyncio.gather(*(opens(host, port) for host, port in addresses))
    return any(results)


async def preflight(
    settings: Settings, bootstrap_servers: str, timeout_s: float = PREFLIGHT_TIMEOUT_S
) -> None:
    """Checks the TLS files and that a broker accepts connections, before anything else starts.

    Both failures are user mistakes with one line each (the same words the tools use), where the
    Kafka clients would otherwise log errors and raise an exception naming socket tuples.
    """
    ssl_context(settings)
    addresses = bootstrap_addresses(bootstrap_servers)
    if not await any_reachable(addresses, timeout_s):
        raise UserError(
            f"cannot reach Kafka at {bootstrap_servers}: no broker accepted a connection "
            "(check KAFKA_BOOTSTRAP_SERVERS)"
        )


def client_options(settings: Settings, bootstrap_servers: str) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer/Producer/AdminClient (secrets stay in memory only)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options
