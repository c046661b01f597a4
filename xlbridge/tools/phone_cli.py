"""
The simulated phone's command line (``xlbridge-phone``,
``python -m xlbridge.tools.phone_cli``): argument parsing, the real reactor, and
the printed summary.  The phone itself is :mod:`xlbridge.tools.phone`.
"""

from __future__ import annotations
import argparse
import socket
import sys
from typing import Any, Optional, Sequence
from twisted.python.failure import Failure
from xlbridge.audio.codecs import CODEC_NAMES, Codec, get_codec, make_decoder, make_encoder  # noqa: F401
from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.audio.wavfile import load_wav, save_wav, tone
from xlbridge.tools.recorder import PhoneReport
from xlbridge.tools.phone import Address, Phone


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 1, not argparse's 2
        raise _UsageError(message)


def _host_port(text: str, option: str, resolve: bool) -> Address:
    host, sep, port_s = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise _UsageError(f"{option}: expected HOST:PORT, got {text!r}")
    try:
        port = int(port_s)
    except ValueError:
        raise _UsageError(f"{option}: {port_s!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise _UsageError(f"{option}: port {port} is outside 0..65535")
    if resolve:
        try:
            host = str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0])
        except (OSError, UnicodeError) as e:
            raise _UsageError(f"{option}: cannot resolve {host!r}: {e}") from None
    return host, port


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="xlbridge-phone",
        description=(
            "Simulated Asterisk ExternalMedia leg: play audio as RTP to HOST:PORT "
            "at real-time pace, record what comes back on the same socket, and "
            "print a summary."
        ),
    )
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="where to send RTP")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--play", metavar="WAV", help="WAV file to send (any rate/channels)")
    src.add_argument("--tone", type=float, metavar="HZ", help="send a sine tone instead")
    p.add_argument("--seconds", type=float, default=3.0, help="tone duration (default 3)")
    p.add_argument("--codec", default="slin16", choices=CODEC_NAMES, help="wire codec (default slin16)")
    p.add_argument("--pt", type=int, metavar="N", help="RTP payload type (default: the codec's)")
    p.add_argument("--record", metavar="OUT.wav", help="write received audio here (16 kHz mono)")
    p.add_argument("--tail", type=float, default=2.0, help="seconds to listen after the last packet (default 2)")
    p.add_argument("--bind", default="127.0.0.1:0", metavar="HOST:PORT", help="local address (default 127.0.0.1:0)")
    p.add_argument(
        "--echo", type=float, metavar="DB",
        help="speakerphone echo: mix what the phone hears back into what it sends, DB quieter (e.g. -10)",
    )
    p.add_argument("--echo-delay", type=int, default=200, metavar="MS", help="echo delay in ms (default 200)")
    return p


def heard_nothing(report: PhoneReport, target: Address) -> Optional[str]:
    """
    The error line for a run that got no packet back, or ``None``.

    The bridge sends every 20 ms from the first packet it receives, silence
    or not, so a phone that heard nothing was not heard: wrong host or port,
    the bridge not running or bound elsewhere, or a firewall between them.
    """
    if report.packets_received:
        return None
    return (
        f"received 0 packets from {target[0]}:{target[1]}: nothing came back "
        "(is xlbridge listening there, on that address, with no firewall between?)"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Command-line entry point.

    :return: exit status: 0 after a run that got audio back; 1 when nothing
        came back (:func:`heard_nothing`), for a bad argument, an unreadable
        WAV, an unbindable port or an unwritable recording.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        target = _host_port(args.to, "--to", resolve=True)
        if target[1] == 0:
            raise _UsageError("--to: port 0 is not a destination")
        bind = _host_port(args.bind, "--bind", resolve=False)
        codec = get_codec(args.codec, args.pt)
        if args.tail < 0:
            raise _UsageError("--tail must be >= 0")
        if args.play is not None:
            audio = load_wav(args.play)
        else:
            audio = tone(args.tone, args.seconds)
    except _UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"xlbridge-phone: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # bad --pt / --tone / --seconds, or an unreadable WAV
        print(f"xlbridge-phone: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"xlbridge-phone: error: cannot read {args.play}: {e.strerror or e}", file=sys.stderr)
        return 1

    from twisted.internet import reactor as _reactor
    from twisted.internet.error import CannotListenError, ReactorNotRunning

    reactor: Any = _reactor
    phone = Phone(
        reactor, audio, codec, target, tail=args.tail, echo_gain_db=args.echo, echo_delay_ms=args.echo_delay
    )
    try:
        port = reactor.listenUDP(bind[1], phone, interface=bind[0])
    except CannotListenError as e:
        print(f"xlbridge-phone: error: cannot bind {bind[0]}:{bind[1]}: {e.socketError}", file=sys.stderr)
        return 1

    status = [0]

    def done(report: PhoneReport) -> None:
        local = port.getHost()
        print(
            f"phone {local.host}:{local.port} -> {target[0]}:{target[1]}, "
            f"{codec.name} (PT {codec.payload_type}), {len(audio) / SAMPLE_RATE:.2f} s of audio"
        )
        print(report.summary())
        silent = heard_nothing(report, target)
        if silent is not None:
            print(f"xlbridge-phone: error: {silent}", file=sys.stderr)
            status[0] = 1
        if args.record:
            try:
                save_wav(args.record, report.audio)
                print(f"recorded to:       {args.record}")
            except OSError as e:
                print(f"xlbridge-phone: error: cannot write {args.record}: {e.strerror or e}", file=sys.stderr)
                status[0] = 1

    def failed(f: Failure) -> None:
        print(f"xlbridge-phone: error: {f.getErrorMessage()}", file=sys.stderr)
        status[0] = 1

    def start() -> None:
        d = phone.play()
        d.addCallbacks(done, failed)
        d.addBoth(lambda _: port.stopListening())
        d.addBoth(lambda _: _stop_reactor())

    def _stop_reactor() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:  # already stopping (Ctrl-C)
            pass

    reactor.callWhenRunning(start)
    # Ctrl-C: report what we have before the reactor goes away.
    reactor.addSystemEventTrigger("before", "shutdown", phone.stop)
    reactor.run()
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
