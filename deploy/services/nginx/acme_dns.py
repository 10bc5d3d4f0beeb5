"""DNS-01 answers as TXT records, added and removed by RFC 2136 dynamic updates.

RFC 2136 with a TSIG key is what BIND, Knot, PowerDNS and Windows DNS all accept, so one
client serves any authoritative server an operator runs (the same mechanism as certbot's
``dns-rfc2136`` plugin). The key needs only the right to change TXT records under
``_acme-challenge`` in the zone (BIND: ``update-policy { grant KEY wildcard
*.ZONE TXT; };``).

After an update, the record is read back from the same server before the CA is told to
look: an update the server accepted but did not apply would otherwise fail as a confusing
"incorrect TXT record". ``propagation_seconds`` then waits for secondaries the CA may ask
instead (0 when the server that takes updates is the only one the CA queries).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from .acme import AcmeError

TTL = 60
ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512")


@dataclass
class Rfc2136Publisher:
    server: str
    port: int
    zone: str
    key_name: str
    secret: str
    algorithm: str = "hmac-sha256"
    propagation_seconds: float = 0.0
    timeout: float = 10.0
    #: What this publisher added, record name → TXT values, so unpublish removes only ours.
    added: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise AcmeError(f"unsupported TSIG algorithm {self.algorithm!r}")
        try:
            self._origin = dns.name.from_text(self.zone)
            self._keyring = dns.tsigkeyring.from_text({self.key_name: self.secret})
        except (dns.exception.DNSException, ValueError) as exc:
            raise AcmeError(f"invalid DNS update settings: {exc}") from exc

    def _relative(self, record: str) -> dns.name.Name:
        name = dns.name.from_text(record)
        if not name.is_subdomain(self._origin):
            raise AcmeError(f"{record} is outside the DNS zone {self.zone}")
        return name.relativize(self._origin)

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        try:
            response = dns.query.tcp(update, self.server, port=self.port, timeout=self.timeout)
        except (dns.exception.DNSException, OSError) as exc:
            raise AcmeError(
                f"the DNS server {self.server}:{self.port} did not take the update: {exc}"
            ) from exc
        code = response.rcode()
        if code != dns.rcode.NOERROR:
            raise AcmeError(
                f"the DNS server refused to {what}: {dns.rcode.to_text(code)} "
                "(check the zone and the TSIG key's rights)"
            )

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            self._origin,
            keyring=self._keyring,
            keyname=dns.name.from_text(self.key_name),
            keyalgorithm=dns.name.from_text(self.algorithm),
        )

    def publish(self, record: str, value: str) -> None:
        update = self._update()
        update.add(self._relative(record), TTL, "TXT", f'"{value}"')
        self._send(update, f"add the TXT record {record}")
        self.added.setdefault(record, []).append(value)
        self._wait_visible(record, value)
        if self.propagation_seconds:
            time.sleep(self.propagation_seconds)

    def unpublish(self, record: str) -> None:
        values = self.added.pop(record, [])
        if not values:
            return
        update = self._update()
        for value in values:
            update.delete(self._relative(record), "TXT", f'"{value}"')
        self._send(update, f"remove the TXT record {record}")

    def txt(self, record: str) -> set[str]:
        """The TXT texts the server answers for ``record`` now."""
        query = dns.message.make_query(record, dns.rdatatype.TXT)
        try:
            response = dns.query.tcp(query, self.server, port=self.port, timeout=self.timeout)
        except (dns.exception.DNSException, OSError) as exc:
            raise AcmeError(f"cannot read {record} back from {self.server}: {exc}") from exc
        return {
            b"".join(rdata.strings).decode()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        }

    def _wait_visible(self, record: str, value: str, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while value not in self.txt(record):
            if time.monotonic() > deadline:
                raise AcmeError(f"the DNS server accepted {record} but does not serve it")
            time.sleep(0.2)
