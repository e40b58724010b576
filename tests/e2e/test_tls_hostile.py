"""TLS before anything (issue 21, A1): a connection joins the chat room, and is announced, only
once its TLS handshake has completed. Clients that speak no TLS, or a handshake that fails, are
one log line each and never a `joined`/`left` notice, in both serve modes, with and without mutual
TLS. 127.0.0.2 stands for the attacker's machine."""

import re
import socket
import time
import unittest

import muxtest
import test_tls
from muxtest import LineReader

ATTEMPTS = 40


def setUpModule():
    test_tls.setUpModule()


def tearDownModule():
    test_tls.tearDownModule()


def no_tls_burst(port, count):
    """`count` connections from 127.0.0.2 that send a plaintext line at once and hang up: most
    are accepted with their bytes already there, so the handshake fails as the connection is
    made."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection((muxtest.HOST, port), timeout=muxtest.DEFAULT_TIMEOUT,
                                        source_address=("127.0.0.2", 0))
        sock.sendall(b"hello, no TLS here\r\n\r\n")
        socks.append(sock)
    for sock in socks:
        LineReader(sock).expect_eof()
        sock.close()


class FailedHandshakeCases(muxtest.ServerCases):
    def check_failed_handshakes_are_not_members(self, *flags, cert=None):
        server = self.start(*test_tls.PKI.server_flags(), *flags)
        watcher = test_tls.tls_connect(server.port, cert=cert)
        self.addCleanup(watcher.close)
        lines = LineReader(watcher)
        self.assertRegex(lines.line(), test_tls.WELCOME)
        no_tls_burst(server.port, ATTEMPTS)  # returns once the server closed every one
        # The watcher heard nothing of them: the next line it reads answers its own /who.
        watcher.sendall(b"/who\n")
        self.assertRegex(lines.line(), r"^\* online \(1\): Client \d+$")
        server.wait_for_log(r"127\.0\.0\.2:\d+.*handshake failed")
        # One log line each at most (repeats are summed up by the logger), and none says joined.
        self.assertEqual(server.log_count(r"joined from 127\.0\.0\.2"), 0, server.stdout_lines[-10:])
        self.assertEqual(server.log_count(r"Client \d+ left"), 0, server.stdout_lines[-10:])

    def test_no_tls_clients_never_join(self):
        self.check_failed_handshakes_are_not_members()

    def test_no_tls_clients_never_join_mutual_tls(self):
        self.check_failed_handshakes_are_not_members(
            "--tls-client-ca", test_tls.PKI.ca, cert="client")


class Single(FailedHandshakeCases, unittest.TestCase):
    MODE = "single"


class Fork(FailedHandshakeCases, unittest.TestCase):
    MODE = "fork"


if __name__ == "__main__":
    muxtest.main()
