#!/usr/bin/env bash
# A real SMTP server for the notification tests (tests/e2e/notify.rs):
# aiosmtpd from PyPI in its own venv. The tests start it themselves
# (`python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`)
# and read the Maildir it writes. Idempotent; `.ci/run` calls it.
set -euo pipefail
VENV=${LATTICE_SMTP_VENV:-/var/cache/lattice/smtp-venv}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2'
fi
"$VENV/bin/python" -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)'
