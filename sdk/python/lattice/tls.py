"""The TLS trust of the SDK, the same as the ``lattice`` CLI's.

Trusted: the system's store (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` replace
it, as for OpenSSL, curl and the CLI) plus the CA certificates in
``LATTICE_CA_FILE`` (a site's private CA). Every HTTPS request and every
``wss://`` stream of the SDK uses :func:`ssl_context`.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Optional

from lattice.errors import NotConfigured

_lock = threading.Lock()
_context: Optional[ssl.SSLContext] = None
_context_key: Optional[tuple] = None


def ssl_context() -> ssl.SSLContext:
    """One verifying context for the current settings (built again when
    ``LATTICE_CA_FILE``, ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` change)."""
    global _context, _context_key
    key = tuple(os.environ.get(name) for name in ("LATTICE_CA_FILE", "SSL_CERT_FILE", "SSL_CERT_DIR"))
    with _lock:
        if _context is not None and _context_key == key:
            return _context
        # create_default_context reads SSL_CERT_FILE / SSL_CERT_DIR through
        # OpenSSL's defaults, and verifies host names.
        context = ssl.create_default_context()
        ca_file = key[0]
        if ca_file:
            try:
                context.load_verify_locations(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise NotConfigured(f"LATTICE_CA_FILE={ca_file}: cannot load CA certificates: {e}") from e
        _context, _context_key = context, key
        return context


def explain(error: BaseException, url: str) -> Optional[str]:
    """A sentence for a certificate failure, or None."""
    current: Optional[BaseException] = error
    while current is not None:
        if isinstance(current, ssl.SSLCertVerificationError):
            reason = current.verify_message or str(current)
            hint = ""
            if "unable to get local issuer" in reason or "self-signed" in reason or "self signed" in reason:
                hint = ": trust the site's CA with LATTICE_CA_FILE=FILE or SSL_CERT_FILE=FILE"
            elif "expired" in reason:
                hint = ": the server's certificate must be renewed (or this machine's clock is wrong)"
            elif "mismatch" in reason or "match" in reason:
                hint = ": use the host name the certificate was issued for"
            return f"the certificate of {url} was refused ({reason}){hint}"
        current = current.__cause__ or current.__context__
    return None
