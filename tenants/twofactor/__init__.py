"""Second factors of administrators: TOTP apps, security keys (WebAuthn), recovery codes.

``totp``, ``recovery``, ``webauthn`` and ``qr`` are the mechanisms; ``policy`` says who
must have a second factor; ``session`` says what the current session has proven.
"""
