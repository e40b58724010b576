"""End-to-end tests of refusals on a TLS port under attack. A refused client (--deny, the
per-address cap, server full) is told why inside TLS, so the server runs a short handshake with it
(3 s at most) before it can be told; in fork mode that happens in the PARENT, which also accepts
everyone else. These tests cross that path from the outside: many refused connections that open a
ClientHello and never finish it must not stall the parent's loop (an honest TLS client still gets
in at once), the refusals in flight are capped (past 64 a refused client is closed at once, with
nothing written: never a plaintext line on a TLS port), and each stalled handshake is closed at
its deadline, after which refusals are told inside TLS again. 127.0.0.2 stands for the attacker's
machine."""

import socket
import time
import unittest

import muxtest
import test_tls
from muxtest import LineReader, Server

MAX_REFUSING = 64  # Listener::kMaxRefusing
EXTRA = 16  # stalled refusals past the cap: closed at once
HANDSHAKE_DEADLINE = 3.0  # kRefusalHandshakeTimeout in src/core/loop/listener.cpp
# A TLS record header announcing a 512-byte handshake message: the server waits for the rest.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"


def setUpModule():
    test_tls.setUpModule()


def tearDownModule():
    test_tls.tearDownModule()


def stalled_from(source, port):
    sock = socket.create_connection((muxtest.HOST, port), timeout=muxtest.DEFAULT_TIMEOUT,
                                    source_address=(source, 0))
    sock.sendall(PARTIAL_CLIENT_HELLO)
    return sock


def closed_now(sock):
    """True when the peer has closed `sock` (EOF or reset), False while it is still open."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(muxtest.DEFAULT_TIMEOUT)


class StalledRefusalsCases:
    SUBCOMMAND = None
    SERVE = None

    def honest_client_gets_in(self, server):
        raise NotImplementedError

    def refusal_line(self):
        raise NotImplementedError

    def test_stalled_refusals_do_not_stall_the_parent(self):
        with Server(self.SUBCOMMAND, "--serve", self.SERVE, *test_tls.PKI.server_flags(),
                    "--deny", "127.0.0.2") as server:
            opened = time.monotonic()
            stalled = [stalled_from("127.0.0.2", server.port)
                       for _ in range(MAX_REFUSING + EXTRA)]
            for sock in stalled:
                self.addCleanup(sock.close)
            # A parent blocked in each refusal's handshake would take 64 x 3 s to get here.
            self.honest_client_gets_in(server)
            server.wait_for_log(r"refused 127\.0\.0\.2:\d+: address not allowed")
            # Past the cap the refusals were closed at once; the others wait for their deadline.
            # (Only checkable while that deadline has not passed: on a very slow machine it may.)
            if time.monotonic() - opened < HANDSHAKE_DEADLINE - 0.5:
                still_open = [sock for sock in stalled if not closed_now(sock)]
                self.assertEqual(len(still_open), MAX_REFUSING)
            # Every stalled handshake is closed by its deadline, and nothing was written in the
            # clear on the TLS port.
            for sock in stalled:
                self.assertEqual(LineReader(sock).expect_eof(), b"")
            # The slots are free again: a refusal is told inside TLS.
            refused = test_tls.tls_connect(server.port, source="127.0.0.2")
            self.assertEqual(LineReader(refused).expect_eof().decode(), self.refusal_line())
            refused.close()


class ChatForkTests(StalledRefusalsCases, unittest.TestCase):
    SUBCOMMAND = "chat-server"
    SERVE = "fork"

    def honest_client_gets_in(self, server):
        honest = test_tls.tls_connect(server.port)
        self.addCleanup(honest.close)
        self.assertRegex(LineReader(honest).line(), test_tls.WELCOME)

    def refusal_line(self):
        return "* not allowed\n"


class ChatSingleTests(ChatForkTests):
    SERVE = "single"


class UploadForkTests(StalledRefusalsCases, unittest.TestCase):
    SUBCOMMAND = "upload-server"
    SERVE = "fork"
    PAYLOAD = b"honest bytes\n" * 1000

    def honest_client_gets_in(self, server):
        honest = test_tls.tls_connect(server.port)
        self.addCleanup(honest.close)
        honest.sendall(f"MUXUP/1 {len(self.PAYLOAD)} honest.bin\n".encode() + self.PAYLOAD)
        # (An optional field may follow the hash: the saved name.)
        self.assertRegex(LineReader(honest).line(),
                         rf"^OK {len(self.PAYLOAD)} [0-9a-f]{{32}}(?: |$)")

    def refusal_line(self):
        return "ERR refused: address not allowed\n"


if __name__ == "__main__":
    muxtest.main()
