"""End-to-end tests of access tokens (--token-file) on both servers and both clients, in both
serve modes: a chat client joins only after a good "/token SECRET" first line (no join notice, not
in /who before), a wrong or missing token reads "* unauthorized" / "ERR unauthorized" and is
closed, raw uploads are refused, failures are logged with the address and answered later with
each repeat from one address; and refusals on a TLS port travel inside TLS (openssl s_client).
Other loopback addresses (127.0.0.2, ...) stand for other machines."""

import os
import re
import select
import socket
import subprocess
import tempfile
import time
import unittest

import muxtest
import test_tls
from muxtest import LineReader, Server

WELCOME = test_tls.WELCOME
TOKENS = None  # a directory with the token files


def setUpModule():
    global TOKENS
    test_tls.setUpModule()
    TOKENS = tempfile.mkdtemp(prefix="mux-tokens-")
    for name, text, mode in (("tokens", "# team\nalpha-0123456789ab\n\nbeta-0123456789abc\n", 0o600),
                             ("wrong", "not-a-token-0123456\n", 0o600),
                             ("open", "alpha-0123456789ab\n", 0o644),
                             ("short", "alpha-0123456789ab\nabcdefghijklmno\n", 0o600)):
        path = os.path.join(TOKENS, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)


def tearDownModule():
    test_tls.tearDownModule()
    for name in os.listdir(TOKENS):
        os.unlink(os.path.join(TOKENS, name))
    os.rmdir(TOKENS)


def token_file(name="tokens"):
    return os.path.join(TOKENS, name)


class ChatTokenTest(unittest.TestCase):
    def server(self, serve, *extra):
        server = Server("chat-server", "--serve", serve, "--token-file", token_file(), *extra)
        self.addCleanup(server.stop)
        server.wait_for_log(r"--token-file: 2 token\(s\); clients send /token SECRET first")
        return server

    def joined(self, port, token="alpha-0123456789ab"):
        sock = muxtest.connect(port)
        self.addCleanup(sock.close)
        sock.sendall(f"/token {token}\n".encode())
        lines = LineReader(sock)
        name = WELCOME.match(lines.line()).group(1)
        return sock, lines, name

    def check_joins_only_after_its_token(self, serve):
        server = self.server(serve)
        watcher, watcher_lines, watcher_name = self.joined(server.port)
        newcomer = muxtest.connect(server.port)
        self.addCleanup(newcomer.close)
        newcomer_lines = LineReader(newcomer)
        newcomer_lines.expect_nothing(0.3)  # no welcome before the token
        watcher.sendall(b"/who\n")
        self.assertEqual(watcher_lines.line(), f"* online (1): {watcher_name}")
        newcomer.sendall(b"/token beta-0123456789abc\nhello after the token\n")
        name = WELCOME.match(newcomer_lines.line()).group(1)
        self.assertEqual(watcher_lines.line(), f"* {name} joined")
        self.assertEqual(watcher_lines.line(), f"[{name}]: hello after the token")

    def test_joins_only_after_its_token_single(self):
        self.check_joins_only_after_its_token("single")

    def test_joins_only_after_its_token_fork(self):
        self.check_joins_only_after_its_token("fork")

    def check_refused(self, serve, first_line, reason):
        server = self.server(serve)
        watcher, watcher_lines, _ = self.joined(server.port)
        sock = muxtest.connect_from("127.0.0.2", server.port)
        self.addCleanup(sock.close)
        sock.sendall(first_line)
        self.assertEqual(LineReader(sock).expect_eof(), b"* unauthorized\n")
        server.wait_for_log(rf" 127\.0\.0\.2:\d+ (\(pid \d+\) )?left before joining "
                            rf"\(unauthorized: {re.escape(reason)}\)$")
        watcher_lines.expect_nothing(0.2)  # the room never heard of it
        self.assertEqual(server.log_count(r" joined from 127\.0\.0\.2"), 0)

    def test_wrong_token_single(self):
        self.check_refused("single", b"/token guess\n", "wrong token")

    def test_wrong_token_fork(self):
        self.check_refused("fork", b"/token guess\n", "wrong token")

    def test_no_token_line_single(self):
        self.check_refused("single", b"hello\n", "no /token line first")

    def test_no_token_line_fork(self):
        self.check_refused("fork", b"/who\n", "no /token line first")

    def test_repeated_failures_from_one_address_are_slowed_down(self):
        server = self.server("single")
        for expected_ms in (250, 500, 1000):
            sock = muxtest.connect_from("127.0.0.2", server.port)
            sock.sendall(b"/token guess\n")
            self.assertEqual(LineReader(sock).expect_eof(), b"* unauthorized\n")
            sock.close()
            server.wait_for_log(rf"127\.0\.0\.2:\d+: unauthorized: wrong token; answering in "
                                rf"{expected_ms} ms$")
        # Another address has its own count.
        sock = muxtest.connect_from("127.0.0.3", server.port)
        sock.sendall(b"/token guess\n")
        self.assertEqual(LineReader(sock).expect_eof(), b"* unauthorized\n")
        sock.close()
        server.wait_for_log(r"127\.0\.0\.3:\d+: unauthorized: wrong token; answering in 250 ms$")

    def test_fork_children_share_the_failure_count(self):
        server = self.server("fork")
        elapsed = []
        for _ in range(3):
            sock = muxtest.connect_from("127.0.0.4", server.port)
            started = time.monotonic()
            sock.sendall(b"/token guess\n")
            self.assertEqual(LineReader(sock).expect_eof(), b"* unauthorized\n")
            elapsed.append(time.monotonic() - started)
            sock.close()
        # 250 ms, 500 ms, then 1 s: the third child knew of the two failures before it.
        self.assertGreaterEqual(elapsed[2], 0.95, elapsed)

    def test_mux_chat_client_with_and_without_the_token(self):
        for serve in ("single", "fork"):
            with self.subTest(serve=serve):
                server = self.server(serve)
                result = muxtest.run_mux("chat-client", "--port", str(server.port),
                                         "--token-file", token_file(), input=b"/who\n")
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertRegex(result.stdout.decode(), r"\* online \(1\): Client \d+")
                result = muxtest.run_mux("chat-client", "--port", str(server.port),
                                         "--token-file", token_file("wrong"), input=b"/who\n")
                self.assertEqual(result.returncode, 1)
                self.assertEqual(result.stdout, b"* unauthorized\n")
                self.assertEqual(result.stderr.decode(),
                                 f"mux: error: 127.0.0.1:{server.port} ended the session: "
                                 "unauthorized\n")

    def test_a_token_sent_to_a_server_without_tokens_is_not_relayed(self):
        server = Server("chat-server")
        self.addCleanup(server.stop)
        watcher = muxtest.connect(server.port)
        self.addCleanup(watcher.close)
        lines = LineReader(watcher)
        self.assertRegex(lines.line(), WELCOME)
        result = muxtest.run_mux("chat-client", "--port", str(server.port), "--token-file",
                                 token_file(), input=b"hi\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        name = re.match(r"^\* (Client \d+) joined$", lines.line()).group(1)
        self.assertEqual(lines.line(), f"[{name}]: hi")

    def test_a_token_under_16_characters_is_refused_at_start(self):
        # Issue 21 B1: a 15-character token (the second line) is refused, the server never starts.
        for sub in ("chat-server", "upload-server"):
            with self.subTest(sub=sub):
                result = muxtest.run_mux(sub, "--port", "0", "--token-file", token_file("short"))
                self.assertEqual(result.returncode, 1)
                self.assertEqual(result.stderr.decode(),
                                 f"mux: error: --token-file {token_file('short')}: line 2: shorter "
                                 f"than 16 characters (make one with: openssl rand -hex 16)\n")
                self.assertEqual(result.stdout, b"")

    def test_token_file_readable_by_others_is_refused(self):
        for sub in ("chat-server", "upload-server"):
            with self.subTest(sub=sub):
                result = muxtest.run_mux(sub, "--port", "0", "--token-file", token_file("open"))
                self.assertEqual(result.returncode, 1)
                path = token_file("open")
                self.assertEqual(result.stderr.decode(),
                                 f"mux: error: --token-file {path}: group or others can access "
                                 f"it (mode 0644); run: chmod 600 {path}\n")
        result = muxtest.run_mux("chat-client", "--port", "1", "--token-file", token_file("open"),
                                 input=b"")
        self.assertEqual(result.returncode, 1)
        self.assertIn("group or others can access it", result.stderr.decode())


class UploadTokenTest(unittest.TestCase):
    def setUp(self):
        fd, self.file = tempfile.mkstemp(prefix="mux-token-upload-")
        os.write(fd, os.urandom(200_000))
        os.close(fd)
        self.addCleanup(os.unlink, self.file)

    def upload(self, port, *flags):
        return muxtest.run_mux("upload-client", "-q", "--file", self.file, "--port", str(port),
                               *flags)

    def check_tokens(self, serve):
        server = Server("upload-server", "--serve", serve, "--token-file", token_file())
        self.addCleanup(server.stop)
        result = self.upload(server.port, "--token-file", token_file())
        self.assertEqual(result.returncode, 0, result.stderr)
        server.wait_for_log(r"Received 200000 bytes from ")
        refused = f"mux: error: 127.0.0.1:{server.port} refused the upload: unauthorized\n"
        for flags, why in (((), "no token= in the header"),
                           (("--token-file", token_file("wrong")), "wrong token")):
            result = self.upload(server.port, *flags)
            self.assertEqual(result.returncode, 1)
            self.assertEqual(result.stderr.decode(), refused)
            server.wait_for_log(rf"\[Client \d+\] 127\.0\.0\.1:\d+ unauthorized: {why}; "
                                r"answering in \d+ ms$")
        # A raw upload cannot carry a token: refused while tokens are required.
        sock = muxtest.connect_from("127.0.0.3", server.port)
        self.addCleanup(sock.close)
        sock.sendall(b"raw bytes without a header\n" * 100)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(LineReader(sock).expect_eof(), b"ERR unauthorized\n")
        server.wait_for_log(r"127\.0\.0\.3:\d+ unauthorized: a raw upload, but a token is required")
        self.assertEqual(server.log_count(r"Received \d+ bytes"), 1)

    def test_tokens_single(self):
        self.check_tokens("single")

    def test_tokens_fork(self):
        self.check_tokens("fork")


class TlsRefusalsTest(unittest.TestCase):
    """A refused client on a TLS port is told inside TLS, never in plaintext; a denied address is
    closed before any TLS byte and told nothing (issue 21, A10)."""

    def s_client(self, port, quiet=True):
        return subprocess.run(
            ["openssl", "s_client", *(["-quiet"] if quiet else []), "-verify_return_error",
             "-CAfile", test_tls.PKI.ca, "-verify_hostname", "localhost",
             "-connect", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=muxtest.DEFAULT_TIMEOUT)

    def test_denied_address_on_a_tls_chat_port(self):
        with Server("chat-server", *test_tls.PKI.server_flags(), "--deny", "127.0.0.1") as server:
            # Closed at accept: s_client's handshake fails having read nothing, not even the
            # certificate, and no line follows.
            result = self.s_client(server.port, quiet=False)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(b"\nno peer certificate available\n", result.stdout)
            self.assertIn(b"\nSSL handshake has read 0 bytes ", result.stdout)
            self.assertNotIn(b"not allowed", result.stdout)
            server.wait_for_log(r"refused 127\.0\.0\.1:\d+: address not allowed")
            # A plaintext client from there is closed the same way: no plaintext refusal, and
            # not even the line that tells plaintext clients the port speaks TLS.
            sock = muxtest.connect(server.port)
            try:
                sock.sendall(b"hello\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed before the line was sent: as good
            self.assertEqual(LineReader(sock).expect_eof(), b"")
            sock.close()

    def test_per_address_cap_on_a_tls_upload_port(self):
        with Server("upload-server", *test_tls.PKI.server_flags(), "--max-per-address", "1") \
                as server:
            first = test_tls.tls_connect(server.port)
            self.addCleanup(first.close)
            result = self.s_client(server.port)
            self.assertEqual(result.stdout,
                             b"ERR server busy: too many connections from your address\n")

    def test_server_full_on_a_tls_chat_port(self):
        with Server("chat-server", *test_tls.PKI.server_flags(), "--max-clients", "1") as server:
            first = test_tls.tls_connect(server.port)
            self.addCleanup(first.close)
            self.assertRegex(LineReader(first).line(), WELCOME)
            result = self.s_client(server.port)
            self.assertEqual(result.stdout, b"* server full\n")

    def test_token_over_tls_with_s_client(self):
        with Server("chat-server", *test_tls.PKI.server_flags(), "--token-file",
                    token_file()) as server:
            client = subprocess.Popen(
                ["openssl", "s_client", "-quiet", "-CAfile", test_tls.PKI.ca, "-connect",
                 f"127.0.0.1:{server.port}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.addCleanup(client.wait, muxtest.DEFAULT_TIMEOUT)
            self.addCleanup(client.kill)
            client.stdin.write(b"/token alpha-0123456789ab\n")
            client.stdin.flush()
            # The server's log says when the member joined; then its welcome is on s_client's
            # stdout (read with a deadline: select on the pipe).
            server.wait_for_log(r"Client \d+ joined from 127\.0\.0\.1:")
            ready, _, _ = select.select([client.stdout], [], [], muxtest.DEFAULT_TIMEOUT)
            self.assertTrue(ready, "no welcome from the server through s_client")
            self.assertRegex(client.stdout.readline().decode().rstrip("\n"), WELCOME)
            client.stdin.close()
            client.stdout.close()

    def test_a_token_that_arrives_with_the_handshake_is_read_at_once(self):
        # s_client sends the piped line right behind its Finished; when the server's handshake
        # call reads both (its flight written, the answer already there: common with many
        # clients on 2 cores), the line waits inside OpenSSL where epoll cannot see it. It must
        # still be read now, not when the client closes. Sixteen at once make that case happen.
        for serve in ("single", "fork"):
            with self.subTest(serve=serve), \
                    Server("chat-server", "--serve", serve, *test_tls.PKI.server_flags(),
                           "--token-file", token_file()) as server:
                clients = [subprocess.Popen(
                    ["openssl", "s_client", "-quiet", "-CAfile", test_tls.PKI.ca, "-connect",
                     f"127.0.0.1:{server.port}"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    for _ in range(16)]
                try:
                    for client in clients:
                        client.stdin.write(b"/token alpha-0123456789ab\n")
                        client.stdin.flush()
                    # Every client stays connected: a welcome can only come from reading the
                    # token while the connection is open.
                    deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
                    for client in clients:
                        left = max(0.0, deadline - time.monotonic())
                        ready, _, _ = select.select([client.stdout], [], [], left)
                        self.assertTrue(ready, "a client got no welcome while connected")
                        self.assertRegex(client.stdout.readline().decode().rstrip("\n"), WELCOME)
                    # In fork mode a child's log line may reach the log after its welcome did.
                    joined = r"Client \d+ joined from 127\.0\.0\.1:"
                    deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
                    while server.log_count(joined) < 16 and time.monotonic() < deadline:
                        time.sleep(0.02)
                    self.assertEqual(server.log_count(joined), 16)
                finally:
                    for client in clients:
                        client.kill()
                        client.wait(muxtest.DEFAULT_TIMEOUT)
                        client.stdin.close()
                        client.stdout.close()

if __name__ == "__main__":
    muxtest.main()
