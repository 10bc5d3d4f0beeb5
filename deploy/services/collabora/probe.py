"""The office node's post-flight probe: WOPI discovery, capabilities and a real PDF export.

Run on the office node itself (loopback is always in ``net.post_allow``) with the
standard library only, the same program against a real coolwsd: it fetches
``/hosting/discovery`` (WOPI discovery XML, must list an ``edit`` action for ``odt``),
``/hosting/capabilities`` (JSON, ``convert-to`` available) and converts a small
OpenDocument text built on the spot through the conversion API
(``POST /cool/convert-to/pdf``, multipart field ``data``); the answer must start with
``%PDF``. One line says what it saw; exit 0 only when all three passed.
"""

from __future__ import annotations

from deploy.connector.base import Connector

from .. import probes
from ..base import DesiredState

#: Seconds the probe keeps retrying: a restarted coolwsd needs a few to pre-spawn its kit.
PROBE_SECONDS = 30

# argv: host, port, seconds.
PDF_PROBE = (
    r"""
import http.client, io, json, sys, time, uuid, zipfile
import xml.etree.ElementTree as ET
host, port = sys.argv[1], int(sys.argv[2])

def odt():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        z.writestr("META-INF/manifest.xml", '<?xml version="1.0" encoding="UTF-8"?>'
            '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"'
            ' manifest:version="1.2"><manifest:file-entry manifest:full-path="/"'
            ' manifest:media-type="application/vnd.oasis.opendocument.text"/>'
            '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
            '</manifest:manifest>', zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", '<?xml version="1.0" encoding="UTF-8"?>'
            '<office:document-content'
            ' xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
            ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
            '<office:body><office:text><text:p>UMS office probe</text:p></office:text>'
            '</office:body></office:document-content>', zipfile.ZIP_DEFLATED)
    return buffer.getvalue()

def request(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data

def attempt():
    try:
        status, body = request("GET", "/hosting/discovery")
        if status != 200:
            return False, "discovery: HTTP %d" % status
        root = ET.fromstring(body)
        edits = [a for a in root.iter("action")
                 if a.get("ext") == "odt" and a.get("name") == "edit"]
        if root.tag != "wopi-discovery" or not edits:
            return False, "discovery: no edit action for odt"
        status, body = request("GET", "/hosting/capabilities")
        caps = json.loads(body) if status == 200 else {}
        if not (caps.get("convert-to") or {}).get("available"):
            return False, "capabilities: HTTP %d, convert-to not available" % status
        boundary = uuid.uuid4().hex
        payload = (("--%s\r\nContent-Disposition: form-data; name=\"data\"; "
                    "filename=\"probe.odt\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                   % boundary).encode() + odt() + ("\r\n--%s--\r\n" % boundary).encode()
        status, pdf = request("POST", "/cool/convert-to/pdf", payload,
                              {"Content-Type": "multipart/form-data; boundary=" + boundary})
        if status != 200 or not pdf.startswith(b"%PDF"):
            return False, "convert-to/pdf: HTTP %d, %r" % (status, pdf[:60])
        version = pdf[:8].decode(errors="replace")
        return True, "discovery: %d actions; convert-to/pdf: %s, %d bytes (%s)" % (
            len(list(root.iter("action"))), version, len(pdf), caps.get("productName", "?"))
    except (OSError, ValueError, ET.ParseError, http.client.HTTPException) as exc:
        return False, "%s:%d: %s" % (host, port, exc or type(exc).__name__)
"""
    + probes._RETRY
)


def export_pdf(
    conn: Connector, state: DesiredState, port: int, seconds: int = PROBE_SECONDS
) -> str:
    """Run the probe on the node; its line, or :class:`~deploy.services.base.ProbeFailed`."""
    return probes.run(conn, state, "collabora", PDF_PROBE, "127.0.0.1", str(port), str(seconds))
