"""End-to-end tests of chat that survives disconnects (issue 23): no line lost on the way in (a
piped chat-client against a Redis-shared room delivers its lines under the right name and exits
0 only once the server has handled them), an honest exit against ports that are not a chat
server. Real redis-server and mux servers on free loopback ports."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

import muxtest
from muxtest import LineReader, Server
from test_redis import REDIS_SERVER, SLOW, Client, Redis, chat_server


def chat_client(port, data, *args, timeout=SLOW):
    return muxtest.run_mux("chat-client", "--port", str(port), *args, input=data, timeout=timeout)


@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class NoLineLostOnTheWayIn(unittest.TestCase):
    """Issue 23: `printf 'deploy done\\n' | mux chat-client` against a Redis-shared server lost its
    line ("a client left while joining") or sent it as `[Client N]` despite --nick, and exited
    0 either way."""

    RUNS = 8

    def setUp(self):
        self.redis = Redis()
        self.addCleanup(self.redis.close)

    def servers(self, mode):
        a = chat_server(self.redis.url, "--serve", mode, *muxtest.CHAT_UNLIMITED)
        self.addCleanup(a.stop)
        b = chat_server(self.redis.url, "--serve", mode, *muxtest.CHAT_UNLIMITED)
        self.addCleanup(b.stop)
        watcher = Client(b)
        self.addCleanup(watcher.close)
        return a, watcher

    def test_a_piped_line_arrives_under_its_nick_every_time(self):
        for mode in ("single", "fork"):
            with self.subTest(serve=mode):
                a, watcher = self.servers(mode)
                for run in range(self.RUNS):
                    nick = f"erin{run}"
                    result = chat_client(a.port, b"deploy done\n", "--nick", nick)
                    self.assertEqual((result.returncode, result.stderr), (0, b""))
                    # The line was handled before the server closed (the client's proof): the
                    # watcher sees the rename, the line under the nick, and the leave.
                    seen = []
                    while (line := watcher.line()) != f"* {nick} left":
                        seen.append(line)
                    self.assertEqual(seen[-2:], [f"* {seen[0][2:-7]} is now {nick}",
                                                 f"[{nick}]: deploy done"], seen)

    def test_lines_without_a_nick_arrive_in_order(self):
        a, watcher = self.servers("single")
        for run in range(self.RUNS):
            lines = [f"run {run} line {i}" for i in range(20)]
            result = chat_client(a.port, "".join(line + "\n" for line in lines).encode())
            self.assertEqual((result.returncode, result.stderr), (0, b""))
            joined = re.match(r"^\* (Client \d+) joined$", watcher.line())
            self.assertTrue(joined)
            name = joined.group(1)
            self.assertEqual([watcher.line() for _ in lines], [f"[{name}]: {line}" for line in lines])
            watcher.expect(f"* {name} left")

    def test_a_burst_held_behind_a_nick_claim_keeps_every_line_in_order(self):
        a, watcher = self.servers("single")
        lines = [f"line {i} " + "x" * 200 for i in range(3000)]  # ~600 KiB, many reads
        result = chat_client(a.port, "".join(line + "\n" for line in lines).encode(), "--nick", "bulk")
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        watcher.skip_to(f"* {watcher.line()[2:-7]} is now bulk")
        got = [watcher.line() for _ in lines]
        self.assertEqual(got, [f"[bulk]: {line}" for line in lines])
        watcher.expect("* bulk left")


class HonestExit(unittest.TestCase):
    """A piped chat-client aimed at something that is not a chat server sends nothing and exits 1
    with one line (issue 23: a TLS port exited 0, an upload port saved the line as a file)."""

    NO_WELCOME = (r"^mux: error: 127\.0\.0\.1:{port} sent no chat welcome within 1 s, so nothing "
                  r"was sent: not a chat server \(an upload-server, or a TLS port without --tls\?\)\n$")

    def assert_refused(self, port, result):
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stdout, b"")
        self.assertRegex(result.stderr.decode(), self.NO_WELCOME.format(port=port))

    def test_tls_ports_and_upload_ports(self):
        out = tempfile.mkdtemp(prefix="mux-recovery-")
        self.addCleanup(shutil.rmtree, out, True)
        for args in (["chat-server", "--tls"], ["upload-server", "--output-dir", out],
                     ["upload-server", "--tls", "--output-dir", out]):
            for mode in ("single", "fork"):
                with self.subTest(server=args, serve=mode), Server(*args, "--serve", mode) as server:
                    result = chat_client(server.port, b"x\n", "--connect-timeout", "1s")
                    self.assert_refused(server.port, result)
        self.assertEqual(os.listdir(out), [])  # the line was never saved as an upload

    def test_a_silent_port(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((muxtest.HOST, 0))
        listener.listen()
        received = []

        def take():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(SLOW)
                try:
                    while chunk := conn.recv(4096):
                        received.append(chunk)
                except OSError:
                    pass

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        self.assert_refused(port, chat_client(port, b"x\n", "--connect-timeout", "1s"))
        thread.join(SLOW)
        self.assertEqual(received, [])

    def test_a_close_before_the_welcome(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((muxtest.HOST, 0))
        listener.listen()

        def close_at_once():
            conn, _ = listener.accept()
            conn.close()

        thread = threading.Thread(target=close_at_once, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        result = chat_client(port, b"x\n")
        thread.join(SLOW)
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr.decode(),
                         rf"^mux: error: (connection to 127\.0\.0\.1:{port} closed by the server "
                         r"before any chat welcome, so nothing was sent|connection to "
                         rf"127\.0\.0\.1:{port}: Connection reset by peer)\n$")


if __name__ == "__main__":
    muxtest.main()
