"""
A minimal SIP user agent (RFC 3261 over UDP, no authentication) for
calling the lab's Asterisk like a desk phone: INVITE with an SDP offer of
PCMU, ACK the 200, answer a BYE, send a BYE.  The lab's PJSIP endpoint
``lab`` is identified by source address, so no registration or digest is
needed.  Media is :class:`xlbridge.tools.phone.Phone` on the port offered.
"""

from __future__ import annotations

import random
import re
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

ASTERISK = ("127.0.0.1", 5160)


def _rand() -> str:
    return "%08x" % random.getrandbits(32)


class SIPCaller(DatagramProtocol):
    """
    One call from a phone of the lab.

    :ivar hung_up_by_peer: Asterisk sent BYE (and got its 200).
    """

    def __init__(self, user: str = "lab") -> None:
        self.user = user
        self.call_id = _rand() + "@lab"
        self.tag = _rand()
        self.to_tag: Optional[str] = None
        self.cseq = 1
        self.hung_up_by_peer = False
        self.ended: Deferred[None] = Deferred()
        self._answered: Optional[Deferred[tuple[str, int]]] = None
        self._bye: Optional[Deferred[None]] = None
        self._service = ""

    @property
    def local(self) -> str:
        assert self.transport is not None
        return f"127.0.0.1:{self.transport.getHost().port}"

    def _request(self, method: str, cseq: int, body: str = "", branch: Optional[str] = None) -> bytes:
        to = f"<sip:{self._service}@127.0.0.1>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"{method} sip:{self._service}@{ASTERISK[0]}:{ASTERISK[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local};branch=z9hG4bK{branch or _rand()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@127.0.0.1>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{self.local}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def call(self, service: str, rtp_port: int) -> "Deferred[tuple[str, int]]":
        """
        INVITE ``service`` offering PCMU on ``rtp_port``; fires with
        Asterisk's RTP address from the 200's SDP, after the ACK.
        """
        self._service = service
        sdp = "\r\n".join([
            "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=lab", "c=IN IP4 127.0.0.1", "t=0 0",
            f"m=audio {rtp_port} RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "a=ptime:20", "a=sendrecv", "",
        ])
        self._answered = Deferred()
        assert self.transport is not None
        self.transport.write(self._request("INVITE", 1, sdp), ASTERISK)
        return self._answered

    def hangup(self) -> "Deferred[None]":
        """
        BYE; fires on its 200 (at once if Asterisk hung up first).
        """
        if self.hung_up_by_peer:
            return Deferred.fromCoroutine(_none())
        self.cseq += 1
        self._bye = Deferred()
        assert self.transport is not None
        self.transport.write(self._request("BYE", self.cseq), ASTERISK)
        return self._bye

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        text = data.decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        first = head.split("\r\n", 1)[0]
        headers = head.split("\r\n")[1:]
        if first.startswith("SIP/2.0"):
            self._response(int(first.split()[1]), headers, body)
        elif first.startswith("BYE"):
            self.hung_up_by_peer = True
            reply = ["SIP/2.0 200 OK"] + [
                h for h in headers if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
            ] + ["Content-Length: 0"]
            assert self.transport is not None
            self.transport.write(("\r\n".join(reply) + "\r\n\r\n").encode(), addr)
            if not self.ended.called:
                self.ended.callback(None)

    def _response(self, code: int, headers: list[str], body: str) -> None:
        cseq = next((h for h in headers if h.lower().startswith("cseq:")), "")
        if "INVITE" in cseq and code >= 200 and self._answered is not None:
            d, self._answered = self._answered, None
            if code >= 300:
                d.errback(RuntimeError(f"INVITE refused: {code}"))
                return
            to = next(h for h in headers if h.lower().startswith("to:"))
            m = re.search(r";tag=([^;>\s]+)", to)
            self.to_tag = m.group(1) if m else None
            assert self.transport is not None
            self.transport.write(self._request("ACK", 1), ASTERISK)
            host = re.search(r"^c=IN IP4 (\S+)", body, re.M)
            port = re.search(r"^m=audio (\d+)", body, re.M)
            if not host or not port:
                d.errback(RuntimeError(f"no SDP answer: {body!r}"))
                return
            d.callback((host.group(1), int(port.group(1))))
        elif "BYE" in cseq and code >= 200 and self._bye is not None:
            d2, self._bye = self._bye, None
            d2.callback(None)
            if not self.ended.called:
                self.ended.callback(None)


async def _none() -> None:
    return None
