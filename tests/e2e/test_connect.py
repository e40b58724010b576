"""End-to-end tests of how both clients reach their server: --connect-timeout against a server
that never answers (a loopback listener whose accept queue is full, so the kernel drops further
SYNs), and the HOST:PORT, [IPv6] and [IPv6]:PORT forms of --host. Loopback only."""

import os
import select
import socket
import tempfile
import time
import unittest

import muxtest
from muxtest import Server


class Unresponsive:
    """A loopback listener that never accepts, with its accept queue filled: the kernel drops
    every further SYN, so a new connect() hangs the way it does against a dead host."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((muxtest.HOST, 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        # Linux queues backlog + 1 connections; connect until one stays unanswered (bounded).
        for _ in range(16):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            self.fillers.append(s)
            s.connect_ex((muxtest.HOST, self.port))
            _, writable, _ = select.select([], [s], [], 0.5)
            if not writable:
                return  # this SYN went unanswered: the queue is full
        raise unittest.SkipTest("could not fill the accept queue of a loopback listener")

    def close(self):
        for s in self.fillers:
            s.close()
        self.listener.close()


class ConnectTimeoutTest(unittest.TestCase):
    def setUp(self):
        self.target = Unresponsive()
        self.addCleanup(self.target.close)
        fd, self.file = tempfile.mkstemp(prefix="mux-connect-")
        os.write(fd, b"payload\n")
        os.close(fd)
        self.addCleanup(os.unlink, self.file)

    def check_timed_out(self, result, started):
        elapsed = time.monotonic() - started
        self.assertEqual(result.returncode, 1, result.stderr)
        address = f"{muxtest.HOST}:{self.target.port}"
        self.assertEqual(result.stderr.decode().strip(),
                         f"mux: error: connect to {address}: timed out after 1 s")
        self.assertEqual(result.stdout, b"")
        self.assertGreaterEqual(elapsed, 0.9)

    def test_chat_client_gives_up_after_connect_timeout(self):
        started = time.monotonic()
        result = muxtest.run_mux("chat-client", "--port", str(self.target.port),
                                 "--connect-timeout", "1", input=b"hello\n", timeout=30)
        self.check_timed_out(result, started)

    def test_upload_client_gives_up_after_connect_timeout(self):
        started = time.monotonic()
        result = muxtest.run_mux("upload-client", "--file", self.file, "--port",
                                 str(self.target.port), "--connect-timeout", "1000ms", timeout=30)
        self.check_timed_out(result, started)

    def test_connect_timeout_below_its_minimum_is_a_usage_error(self):
        result = muxtest.run_mux("chat-client", "--connect-timeout", "10ms", input=b"")
        self.assertEqual(result.returncode, 2)
        self.assertIn("mux: error: --connect-timeout: 10ms is below the minimum of 100ms",
                      result.stderr.decode())


class HostFormsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.chat = Server("chat-server")
        cls.chat6 = Server("chat-server", host="::1")

    @classmethod
    def tearDownClass(cls):
        cls.chat.stop()
        cls.chat6.stop()

    def chat_via(self, *host_args):
        # -v says where it connected on stderr; "/who" proves the session works.
        return muxtest.run_mux("chat-client", "-v", *host_args, input=b"/who\n")

    def assert_connected(self, result, address):
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"* connected to {address} from ", result.stderr.decode())
        self.assertIn(b"* online (1): ", result.stdout)

    def test_host_colon_port_wins_over_port(self):
        result = self.chat_via("--host", f"127.0.0.1:{self.chat.port}", "--port", "1")
        self.assert_connected(result, f"127.0.0.1:{self.chat.port}")

    def test_bracketed_ipv6_with_port(self):
        result = self.chat_via("--host", f"[::1]:{self.chat6.port}")
        self.assert_connected(result, f"[::1]:{self.chat6.port}")

    def test_bracketed_ipv6_without_port(self):
        result = self.chat_via("--host", "[::1]", "--port", str(self.chat6.port))
        self.assert_connected(result, f"[::1]:{self.chat6.port}")

    def test_bare_ipv6(self):
        result = self.chat_via("--host", "::1", "--port", str(self.chat6.port))
        self.assert_connected(result, f"[::1]:{self.chat6.port}")

    def test_upload_client_host_port(self):
        upload = Server("upload-server")
        self.addCleanup(upload.stop)
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"x" * 1000)
            f.flush()
            result = muxtest.run_mux("upload-client", "-q", "--file", f.name, "--host",
                                     f"localhost:{upload.port}")
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_malformed_hosts_are_usage_errors(self):
        cases = {
            "[::1": "expected [IPv6 address] or [IPv6 address]:PORT",
            "[]:5000": "expected [IPv6 address] or [IPv6 address]:PORT",
            "[::1]x": "expected :PORT after ]",
            "127.0.0.1:": "'' is not a port number (0-65535)",
            "127.0.0.1:70000": "'70000' is not a port number (0-65535)",
            ":5000": "no host before :PORT",
        }
        for sub in ("chat-client", "upload-client"):
            for text, why in cases.items():
                with self.subTest(sub=sub, host=text):
                    extra = ["--file", "/dev/null"] if sub == "upload-client" else []
                    result = muxtest.run_mux(sub, *extra, "--host", text, input=b"")
                    self.assertEqual(result.returncode, 2)
                    self.assertEqual(result.stderr.decode().splitlines()[0],
                                     f"mux: error: --host: '{text}': {why}")


if __name__ == "__main__":
    muxtest.main()
