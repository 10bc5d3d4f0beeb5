"""ACME (RFC 8555) issuance for load balancer names: HTTP-01 answered by the load balancer,
or DNS-01 answered by a TXT record (``acme_dns``: RFC 2136 updates to the zone's server).

Built on certbot's protocol library (``acme`` + ``josepy``): it does the JWS signing,
nonces and polling; this module decides what to do with an order so that a run killed at
any point can be resumed by the next one:

1. the order's URL and the certificate's private key are handed to ``save_order``
   *before* any challenge is answered (the caller persists them);
2. a later run with that :class:`OrderProgress` re-reads the order from the ACME server
   and carries on from its state: ``pending`` (answer the challenges again), ``ready``
   (finalize), ``processing``/``valid`` (download); ``invalid`` or gone starts a new order.

Challenge answers are published by the caller's ``publish(key, value)`` and removed with
``unpublish(key)``. HTTP-01: ``key`` is the token and ``value`` the key authorization (the
controller pushes them to every load balancer, which serves
``/.well-known/acme-challenge/<token>`` on port 80). DNS-01: ``key`` is the record name
(``_acme-challenge.<name>``) and ``value`` the TXT text. DNS-01 needs no load balancer
reachable from the CA, so it also serves names that are not public yet.

No database: the caller persists the account and the order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils.translation import gettext_noop

from .certs import CertificateBundle, valid_cert_name

__all__ = [
    "DNS01",
    "HTTP01",
    "LETS_ENCRYPT",
    "AcmeError",
    "AcmeIssuer",
    "OrderProgress",
    "new_account_key",
]

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
HTTP01 = "http-01"
DNS01 = "dns-01"
CHALLENGES = {HTTP01: challenges.HTTP01, DNS01: challenges.DNS01}
#: How long one run waits for validation and issuance before giving up (the next run
#: resumes the same order).
ORDER_DEADLINE = dt.timedelta(seconds=90)
USER_AGENT = "ums-acme"


class AcmeError(RuntimeError):
    """Issuance failed; the message says why in words an administrator can act on."""


@dataclass(frozen=True)
class OrderProgress:
    """What must survive a crash mid-order: the order URL and the new key it certifies."""

    order_url: str
    key_pem: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def new_account_key() -> str:
    """A fresh ACME account key (P-256, PEM)."""
    return _key_pem(ec.generate_private_key(ec.SECP256R1()))


def _problem(error: object) -> str:
    """The ACME problem document as one sentence."""
    if isinstance(error, messages.Error):
        return error.detail or error.description or str(error.typ)
    return str(error)


def _describe(exc: Exception) -> str:
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            name = authzr.body.identifier.value
            for chall in authzr.body.challenges:
                if chall.error is not None:
                    parts.append(f"{name}: {_problem(chall.error)}")
        return "challenge failed: " + "; ".join(parts or ["no detail from the CA"])
    if isinstance(exc, errors.IssuanceError):
        return f"the CA refused to issue: {_problem(exc.error)}"
    if isinstance(exc, messages.Error):
        return f"the CA answered: {_problem(exc)}"
    if isinstance(exc, errors.TimeoutError):
        return "the CA did not finish validating in time"
    return f"{type(exc).__name__}: {exc}"


class AcmeIssuer:
    """Issues (or resumes issuing) one certificate from an ACME CA.

    ``ca_bundle``: the file of roots that verify the ACME server's HTTPS (a test CA such
    as Pebble's listener); None verifies with certifi's roots, never with the
    ``REQUESTS_CA_BUNDLE`` of the environment, because an explicit value wins in requests.
    """

    def __init__(
        self,
        directory_url: str,
        account_key_pem: str,
        *,
        email: str = "",
        account_url: str = "",
        ca_bundle: str | None = None,
    ) -> None:
        if not directory_url.startswith("https://"):
            raise AcmeError(f"the ACME directory must be an https:// URL: {directory_url!r}")
        self.directory_url = directory_url
        self.email = email
        self.account_url = account_url
        key = serialization.load_pem_private_key(account_key_pem.encode(), password=None)
        self._jwk = jose.JWKEC(key=key)
        self._verify: bool | str = ca_bundle or True
        if ca_bundle is None:
            import certifi

            self._verify = certifi.where()

    def _client(self) -> client.ClientV2:
        net = client.ClientNetwork(
            self._jwk, alg=jose.ES256, verify_ssl=self._verify, user_agent=USER_AGENT
        )
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        if self.account_url:
            net.account = messages.RegistrationResource(
                body=messages.Registration(), uri=self.account_url
            )
        else:
            contact = (f"mailto:{self.email}",) if self.email else ()
            registration = messages.NewRegistration(contact=contact, terms_of_service_agreed=True)
            try:
                self.account_url = acme.new_account(registration).uri or ""
            except errors.ConflictError as exists:  # the key is already registered
                self.account_url = exists.location
                net.account = messages.RegistrationResource(
                    body=messages.Registration(), uri=self.account_url
                )
        return acme

    def _load_order(
        self, acme: client.ClientV2, progress: OrderProgress, names: Sequence[str]
    ) -> messages.OrderResource | None:
        """The saved order as the server sees it now; None if it cannot be continued."""
        try:
            response = acme._post_as_get(progress.order_url)
        except (messages.Error, errors.Error):
            return None
        body = messages.Order.from_json(response.json())
        wanted = {n.lower() for n in names}
        if (
            body.status == messages.STATUS_INVALID
            or {i.value.lower() for i in body.identifiers} != wanted
        ):
            return None
        authzrs = [
            acme._authzr_from_response(acme._post_as_get(url), uri=url)
            for url in body.authorizations
        ]
        csr = crypto_util.make_csr(progress.key_pem.encode(), list(names))
        return messages.OrderResource(
            body=body, uri=progress.order_url, authorizations=authzrs, csr_pem=csr
        )

    def issue(
        self,
        names: Sequence[str],
        *,
        progress: OrderProgress | None,
        save_order: Callable[[OrderProgress], None],
        publish: Callable[[str, str], None],
        unpublish: Callable[[str], None],
        say: Callable[..., None] = lambda *a, **k: None,
        challenge: str = HTTP01,
    ) -> CertificateBundle:
        """The certificate for ``names``; resumes ``progress`` when the server still has it.

        Raises :class:`AcmeError` with the reason on any failure.
        """
        if not names or not all(valid_cert_name(n) for n in names):
            raise AcmeError(f"invalid certificate names: {list(names)!r}")
        kind = CHALLENGES.get(challenge)
        if kind is None:
            raise AcmeError(f"unknown challenge type {challenge!r}")
        published: list[str] = []
        try:
            acme = self._client()
            orderr = self._load_order(acme, progress, names) if progress else None
            if orderr is None:
                key_pem = _key_pem(ec.generate_private_key(ec.SECP256R1()))
                orderr = acme.new_order(crypto_util.make_csr(key_pem.encode(), list(names)))
                progress = OrderProgress(orderr.uri or "", key_pem)
                save_order(progress)
            assert progress is not None
            say(
                gettext_noop("ACME order %(url)s is %(status)s"),
                url=orderr.uri,
                status=orderr.body.status.name,
            )
            for authzr in orderr.authorizations:
                if authzr.body.status != messages.STATUS_PENDING:
                    continue
                name = authzr.body.identifier.value
                challb = next(
                    (c for c in authzr.body.challenges if isinstance(c.chall, kind)), None
                )
                if challb is None:
                    raise AcmeError(f"the CA offers no {challenge} challenge for {name}")
                response, validation = challb.response_and_validation(self._jwk)
                if challenge == DNS01:
                    key = challb.chall.validation_domain_name(name)
                else:
                    key = challb.chall.encode("token")
                publish(key, validation)
                published.append(key)
                acme.answer_challenge(challb, response)
                say(
                    gettext_noop("Answered the %(kind)s challenge for %(name)s"),
                    kind=challenge,
                    name=name,
                )
            deadline = dt.datetime.now() + ORDER_DEADLINE
            orderr = acme.poll_authorizations(orderr, deadline)
            orderr = acme.poll_finalization(orderr, deadline)
            bundle = CertificateBundle(orderr.fullchain_pem, progress.key_pem)
        except AcmeError:
            raise
        except Exception as exc:  # every library and network error becomes a reason
            raise AcmeError(_describe(exc)) from exc
        finally:
            for token in published:
                with contextlib.suppress(Exception):  # a leftover answer file is harmless
                    unpublish(token)
        if not bundle.key_matches:
            raise AcmeError("the CA's certificate does not match the order's key")
        return bundle
