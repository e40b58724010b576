"""End-to-end tests of refusals on a TLS port. A peer that --deny (or --allow) refuses is closed
at accept, before any TLS byte: it reads nothing, gets no certificate and costs no handshake
(issue 21, A10). Every other refusal (server full, too many from one address) is told inside TLS,
so the server runs a short handshake with it (3 s at most) before it can be told; in fork mode that
happens in the PARENT, which also accepts everyone else. These tests cross that path from the
outside: many refused connections that open a ClientHello and never finish it must not stall the
parent's loop (an honest TLS client still gets in at once), the refusals in flight are capped
(past 64 a refused client is closed at once, with nothing written: never a plaintext line on a
TLS port), and each stalled handshake is closed at its deadline, after which refusals are told
inside TLS again. 127.0.0.2 stands for the attacker's machine."""

import shutil
import socket
import ssl
import tempfile
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
# What the upload held open from 127.0.0.2 declares: far more than it ever sends.
HELD_SIZE = 64 << 20


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


def client_hello():
    """A complete, real ClientHello (Python's ssl, as any TLS client would open)."""
    context = ssl.create_default_context(cafile=test_tls.PKI.ca)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass  # it now waits for the ServerHello
    return outgoing.read()


def bytes_until_closed(sock, timeout=muxtest.DEFAULT_TIMEOUT):
    """Everything the peer sends until it closes (EOF or reset); fails if it stays open."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"connection not closed within {timeout}s; have {data!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):  # a reset after our FIN-acked bytes
            return data
        if not chunk:
            return data
        data += chunk


class StalledRefusalsCases:
    """Drives the in-TLS refusal with the per-address cap: 127.0.0.2 holds its one connection
    (authenticated), so every further one from it is refused inside TLS."""
    SUBCOMMAND = None
    SERVE = None

    def server_flags(self):
        return ()

    def hold_the_address(self, server):
        """Opens one authenticated connection from 127.0.0.2 and returns it."""
        raise NotImplementedError

    def honest_client_gets_in(self, server):
        raise NotImplementedError

    def refusal_line(self):
        raise NotImplementedError

    def test_stalled_refusals_do_not_stall_the_parent(self):
        with Server(self.SUBCOMMAND, "--serve", self.SERVE, *test_tls.PKI.server_flags(),
                    "--max-per-address", "1", *self.server_flags()) as server:
            holder = self.hold_the_address(server)
            self.addCleanup(holder.close)
            opened = time.monotonic()
            stalled = [stalled_from("127.0.0.2", server.port)
                       for _ in range(MAX_REFUSING + EXTRA)]
            for sock in stalled:
                self.addCleanup(sock.close)
            # A parent blocked in each refusal's handshake would take 64 x 3 s to get here.
            self.honest_client_gets_in(server)
            server.wait_for_log(r"refused 127\.0\.0\.2:\d+: too many connections from this "
                                r"address \(1\)")
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
            holder.close()  # before the server stops: its shutdown would wait for the upload


class ChatForkTests(StalledRefusalsCases, unittest.TestCase):
    SUBCOMMAND = "chat-server"
    SERVE = "fork"

    def hold_the_address(self, server):
        holder = test_tls.tls_connect(server.port, source="127.0.0.2")
        self.assertRegex(LineReader(holder).line(), test_tls.WELCOME)
        return holder

    def honest_client_gets_in(self, server):
        with test_tls.tls_connect(server.port) as honest:
            self.assertRegex(LineReader(honest).line(), test_tls.WELCOME)

    def refusal_line(self):
        return "* server full: too many connections from your address\n"


class ChatSingleTests(ChatForkTests):
    SERVE = "single"


class UploadForkTests(StalledRefusalsCases, unittest.TestCase):
    SUBCOMMAND = "upload-server"
    SERVE = "fork"
    PAYLOAD = b"honest bytes\n" * 1000

    def server_flags(self):
        output = tempfile.mkdtemp(prefix="mux-tls-refusals-")
        self.addCleanup(shutil.rmtree, output, ignore_errors=True)
        # --min-rate 0: the held upload may stay as slow as it likes.
        return ("--output-dir", output, "--min-rate", "0")

    def hold_the_address(self, server):
        # An upload whose header is complete (fork mode: it has its child) and whose body never
        # comes: it keeps 127.0.0.2's one slot for the whole test.
        holder = test_tls.tls_connect(server.port, source="127.0.0.2")
        # Its slot is counted from the accept, which the finished handshake proves.
        holder.sendall(f"MUXUP/1 {HELD_SIZE} held.bin\n".encode() + b"held" * 256)
        return holder

    def honest_client_gets_in(self, server):
        with test_tls.tls_connect(server.port) as honest:
            honest.sendall(f"MUXUP/1 {len(self.PAYLOAD)} honest.bin\n".encode() + self.PAYLOAD)
            # (An optional field may follow the hash: the saved name.)
            self.assertRegex(LineReader(honest).line(),
                             rf"^OK {len(self.PAYLOAD)} [0-9a-f]{{32}}(?: |$)")

    def refusal_line(self):
        return "ERR server busy: too many connections from your address\n"


class UploadSingleTests(UploadForkTests):
    SERVE = "single"


class DeniedBeforeHandshakeCases:
    """A --deny'd peer on a TLS port: closed at accept with nothing written, so it never gets a
    ServerHello or the certificate, and the server logs the refusal (issue 21, A10)."""
    SUBCOMMAND = None
    SERVE = None

    def server_flags(self):
        return ()

    def honest_client_gets_in(self, server):
        raise NotImplementedError

    def test_denied_peer_reads_no_tls_byte(self):
        with Server(self.SUBCOMMAND, "--serve", self.SERVE, *test_tls.PKI.server_flags(),
                    "--deny", "127.0.0.2", *self.server_flags()) as server:
            hello = client_hello()
            with muxtest.connect_from("127.0.0.2", server.port) as denied:
                try:
                    denied.sendall(hello)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed before the ClientHello was all sent: as good
                self.assertEqual(bytes_until_closed(denied), b"")
            server.wait_for_log(r"refused 127\.0\.0\.2:\d+: address not allowed")
            # A real TLS client from there fails its handshake at once, without a certificate.
            with self.assertRaises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                test_tls.tls_connect(server.port, source="127.0.0.2").close()
            # Anyone else still gets in through the same listener.
            self.honest_client_gets_in(server)


class DeniedChatForkTests(DeniedBeforeHandshakeCases, unittest.TestCase):
    SUBCOMMAND = "chat-server"
    SERVE = "fork"
    honest_client_gets_in = ChatForkTests.honest_client_gets_in


class DeniedChatSingleTests(DeniedChatForkTests):
    SERVE = "single"


class DeniedUploadForkTests(DeniedBeforeHandshakeCases, unittest.TestCase):
    SUBCOMMAND = "upload-server"
    SERVE = "fork"
    PAYLOAD = UploadForkTests.PAYLOAD
    server_flags = UploadForkTests.server_flags
    honest_client_gets_in = UploadForkTests.honest_client_gets_in


class DeniedUploadSingleTests(DeniedUploadForkTests):
    SERVE = "single"


if __name__ == "__main__":
    muxtest.main()
