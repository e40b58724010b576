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


WELCOME = re.compile(r"^\* welcome, you are (Client \d+) \(type /help for commands\)$")
CAP = re.compile(r"^\* cap ids epoch=([0-9a-f]{16}) last=(\d+) max-line=(\d+)$")


class Raw:
    """A raw socket chat client (what ncat would see)."""

    def __init__(self, server):
        self.sock = server.connect()
        self.reader = LineReader(self.sock)
        self.name = WELCOME.match(self.reader.line()).group(1)

    def send(self, text):
        self.sock.sendall(text.encode())

    def line(self):
        return self.reader.line()


class MessageIds(muxtest.ServerCases):
    """Ids, epochs and replay (issue 23): plain clients see exactly what they saw before."""

    def test_plain_clients_see_no_ids_and_capable_ones_replay_exactly_once(self):
        server = self.start("--history", "4")
        plain, capable, sender = Raw(server), Raw(server), Raw(server)
        self.addCleanup(plain.sock.close)
        self.addCleanup(capable.sock.close)
        self.addCleanup(sender.sock.close)
        for reader in (plain, capable):
            reader.line()  # the next one's join
        plain.line()
        capable.send("/cap ids\n")
        cap = CAP.match(capable.line())
        self.assertTrue(cap)
        epoch, last = cap.group(1), int(cap.group(2))
        self.assertEqual((last, cap.group(3)), (0, "4096"))
        self.assertEqual(capable.line(), f"* online (3): {plain.name}, {capable.name}, {sender.name}")
        sender.send("".join(f"line {i}\n" for i in range(1, 7)))
        self.assertEqual([plain.line() for _ in range(6)],
                         [f"[{sender.name}]: line {i}" for i in range(1, 7)])
        self.assertEqual([capable.line() for _ in range(6)],
                         [f"@{i} [{sender.name}]: line {i}" for i in range(1, 7)])
        # Back after id 4: 5 and 6, once each, in order.
        capable.send(f"/since {epoch} 4\n")
        self.assertEqual([capable.line() for _ in range(2)],
                         [f"@{i} [{sender.name}]: line {i}" for i in (5, 6)])
        # Older than the history kept (ids 3 to 6): says how many may be missing.
        capable.send(f"/since {epoch} 0\n")
        self.assertEqual([capable.line() for _ in range(5)],
                         ["* 2 lines may have been missed",
                          *[f"@{i} [{sender.name}]: line {i}" for i in range(3, 7)]])
        plain.send("/history 2\n")
        self.assertRegex(plain.line(), r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] \[" + sender.name + r"\]: line 5$")
        self.assertRegex(plain.line(), r"\]: line 6$")
        capable.send("/who\n")  # nothing else was on its way
        self.assertEqual(capable.line(), f"* online (3): {plain.name}, {capable.name}, {sender.name}")

    def test_a_restarted_server_has_a_new_epoch(self):
        epochs = []
        for _ in range(2):
            with Server("chat-server", "--serve", self.MODE, "--history", "4") as server:
                client = Raw(server)
                client.send("/cap ids\n")
                epochs.append(CAP.match(client.line()).group(1))
                client.line()
                if len(epochs) == 2:
                    client.send(f"/since {epochs[0]} 17\n")
                    self.assertEqual(client.line(), "* lines may have been missed: the room's "
                                                    "history was lost (a server restart)")
                client.sock.close()
        self.assertNotEqual(epochs[0], epochs[1])


class MessageIdsSingle(MessageIds, unittest.TestCase):
    MODE = "single"


class MessageIdsFork(MessageIds, unittest.TestCase):
    MODE = "fork"


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
