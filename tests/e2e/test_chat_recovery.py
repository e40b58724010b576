"""End-to-end tests of chat that survives disconnects (issue 23): no line lost on the way in (a
piped chat-client against a Redis-shared room delivers its lines under the right name and exits
0 only once the server has handled them), an honest exit against ports that are not a chat
server, message ids and replay (/cap ids, /since, /history), and chat-client's reconnect: kill -9
and restart of the server (both modes, plain and TLS), a flapping relay (every line exactly once,
in order), --reconnect-timeout, --no-reconnect, long lines split at the server's --max-line.
Real redis-server and mux servers on free loopback ports."""

import os
import random
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import muxtest
import test_tls
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
CAP = re.compile(r"^\* cap ids epoch=([0-9a-f]{16}) last=(\d+) max-line=(\d+) secret=([0-9a-f]{32})$")


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
        epoch, last, secret = cap.group(1), int(cap.group(2)), cap.group(4)
        self.assertEqual((last, cap.group(3)), (0, "4096"))
        self.assertEqual(capable.line(), f"* online (3): {plain.name}, {capable.name}, {sender.name}")
        sender.send("".join(f"line {i}\n" for i in range(1, 7)))
        self.assertEqual([plain.line() for _ in range(6)],
                         [f"[{sender.name}]: line {i}" for i in range(1, 7)])
        self.assertEqual([capable.line() for _ in range(6)],
                         [f"@{i} [{sender.name}]: line {i}" for i in range(1, 7)])
        # Back after id 4: 5 and 6, once each, in order (after the answer /cap ids gets).
        answer = [f"* cap ids epoch={epoch} last=6 max-line=4096 secret={secret}",
                  f"* online (3): {plain.name}, {capable.name}, {sender.name}"]
        capable.send(f"/since {epoch} 4\n")
        self.assertEqual([capable.line() for _ in range(4)],
                         answer + [f"@{i} [{sender.name}]: line {i}" for i in (5, 6)])
        # Older than the history kept (ids 3 to 6): says how many may be missing.
        capable.send(f"/since {epoch} 0\n")
        self.assertEqual([capable.line() for _ in range(7)],
                         answer + ["* 2 lines may have been missed",
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
                    client.line(), client.line()  # the answer as to /cap ids
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


def setUpModule():
    test_tls.setUpModule()


def tearDownModule():
    test_tls.tearDownModule()


class PipeLines:
    """Collects a process's stdout or stderr lines in a thread; waits for one that matches."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, pattern, timeout=SLOW, start=0):
        regex = re.compile(pattern)
        with self.cond:
            ok = self.cond.wait_for(lambda: any(regex.search(line) for line in self.lines[start:]),
                                    timeout)
            if not ok:
                raise AssertionError(f"no line matching {pattern!r}; have {self.lines[-20:]!r}")


class PipedClient:
    """`mux chat-client` with stdin kept open: a person (or a script) still typing."""

    def __init__(self, port, *args):
        self.proc = muxtest.track(subprocess.Popen(
            [muxtest.MUX, "chat-client", "--port", str(port), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        self.out = PipeLines(self.proc.stdout)
        self.err = PipeLines(self.proc.stderr)

    def type(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self):
        """Ends its input; returns the exit status."""
        self.proc.stdin.close()
        code = self.proc.wait(SLOW)
        self.out.thread.join(SLOW)
        self.err.thread.join(SLOW)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


def restart(server, *args):
    """kill -9 of `server`, then a new one with `args` on the same port."""
    server.proc.kill()
    server.wait()
    return Server("chat-server", *args, "--port", str(server.port))


class Reconnect(unittest.TestCase):
    """chat-client reconnects by itself (issue 23): one notice each way, its nick kept, lines
    typed while away sent, what it missed said."""

    LOST = r"^mux: connection to \S+:\d+ lost \(.*\); reconnecting$"
    BACK = r"^mux: reconnected to \S+:\d+ after \d+\.\d s$"

    def test_kill_9_and_restart_plain_and_tls_both_modes(self):
        for mode in ("single", "fork"):
            for tls in (False, True):
                with self.subTest(serve=mode, tls=tls):
                    server_args = test_tls.PKI.server_flags() if tls else []
                    client_args = ["--tls-ca", test_tls.PKI.ca, "--host", "localhost"] if tls else []
                    server = Server("chat-server", "--serve", mode, *server_args)
                    try:
                        alice = PipedClient(server.port, "--nick", "alice", *client_args)
                        try:
                            alice.out.wait_for(r"^\* Client 1 is now alice$")
                            # kill -9; the line is typed while no server runs at all.
                            server.proc.kill()
                            server.wait()
                            alice.err.wait_for(self.LOST)
                            alice.type("typed while away")
                            server = Server("chat-server", "--serve", mode, *server_args,
                                            "--history", "10", "--port", str(server.port))
                            # A watcher on the new server: alice comes back as alice and says it
                            # (live, or in the history a newcomer gets when alice was faster).
                            watcher = test_tls.tls_connect(server.port) if tls else server.connect()
                            reader = LineReader(watcher)
                            self.assertRegex(reader.line(SLOW), WELCOME)
                            while not (line := reader.line(SLOW)).endswith(
                                    "] [alice]: typed while away") and line != \
                                    "[alice]: typed while away":
                                self.assertFalse(line.startswith("["), line)
                            alice.err.wait_for(self.BACK)
                            watcher.sendall(b"hello again\n")
                            alice.out.wait_for(r"^\[Client \d\]: hello again$")
                            self.assertEqual(alice.finish(), 0)
                            # Its history was lost with the server: said once, not hidden.
                            self.assertEqual(alice.out.lines.count(
                                "* lines may have been missed: the room's history was lost (a "
                                "server restart)"), 1)
                            self.assertEqual(len(alice.err.lines), 2, alice.err.lines)
                            watcher.close()
                        finally:
                            alice.kill()
                    finally:
                        server.stop()

    def test_gives_up_after_reconnect_timeout_and_counts_unsent_lines(self):
        server = Server("chat-server")
        alice = PipedClient(server.port, "--reconnect-timeout", "1s")
        self.addCleanup(alice.kill)
        alice.type("/who")  # answered once the client is through its start
        alice.out.wait_for(r"^\* online \(1\)")
        server.proc.kill()
        server.wait()
        alice.err.wait_for(self.LOST)
        alice.type("never sent")
        self.assertEqual(alice.proc.wait(SLOW), 1)
        alice.err.thread.join(SLOW)
        self.assertRegex(alice.err.lines[-1],
                         r"^mux: error: could not reconnect to 127\.0\.0\.1:\d+ within 1 s \(last: "
                         r"connect to 127\.0\.0\.1:\d+: Connection refused\); 1 typed line not sent$")

    def test_no_reconnect_exits_at_once(self):
        server = Server("chat-server")
        alice = PipedClient(server.port, "--no-reconnect")
        self.addCleanup(alice.kill)
        alice.type("/who")
        alice.out.wait_for(r"^\* online \(1\)")
        server.proc.kill()
        server.wait()
        self.assertEqual(alice.proc.wait(SLOW), 1)

    def test_a_drop_after_the_end_of_input_is_not_papered_over(self):
        """A mux-like server that reads the script's lines and its end, then resets: the lines
        cannot be confirmed, so no reconnect and exit 0, but exit 1 saying so."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((muxtest.HOST, 0))
        listener.listen()

        def serve():
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(SLOW)
                conn.sendall(b"* welcome, you are Client 1 (type /help for commands)\n")
                data = b""
                while b"/cap ids\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(b"* cap ids epoch=00000000000000ff last=0 max-line=4096\n"
                             b"* online (1): Client 1\n")
                while conn.recv(4096):
                    pass
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        result = chat_client(port, b"deploy done\n")
        thread.join(SLOW)
        self.assertEqual(result.returncode, 1)
        # (It never acknowledged the line, as a mux server asked for /cap acks does.)
        self.assertEqual(result.stderr.decode().splitlines()[-1],
                         f"mux: error: 1 line sent to 127.0.0.1:{port} just before a connection "
                         "dropped was not confirmed and may not have been delivered")

    def test_long_lines_are_split_at_the_servers_max_line(self):
        with Server("chat-server", "--max-line", "100") as server:
            watcher = server.connect()
            reader = LineReader(watcher)
            reader.line()
            line = "é" * 120  # 240 bytes: never cut inside a character
            result = chat_client(server.port, (line + "\n").encode())
            self.assertEqual((result.returncode, result.stderr.decode()),
                             (0, "mux: lines longer than the server's 100 bytes are sent as "
                                 "several lines\n"))
            reader.line()  # joined
            got = [reader.line() for _ in range(3)]
            self.assertEqual(got, ["[Client 2]: " + "é" * 50, "[Client 2]: " + "é" * 50,
                                   "[Client 2]: " + "é" * 20])
            watcher.close()


@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class RedisRoomRestarts(unittest.TestCase):
    """Two servers share a room through Redis; the one alice uses is killed and restarted."""

    def test_kill_9_of_alices_server_with_redis(self):
        redis = Redis()
        self.addCleanup(redis.close)
        args = ["--redis", redis.url, "--room", "r", "--history", "50"]
        a = Server("chat-server", *args)
        servers = [a]
        self.addCleanup(lambda: [s.stop() for s in servers])
        b = Server("chat-server", *args)
        servers.append(b)
        for server in (a, b):
            server.wait_for_log(r"redis: connected to", timeout=SLOW)
        bob = Raw(b)
        self.addCleanup(bob.sock.close)
        alice = PipedClient(a.port, "--nick", "alice")
        self.addCleanup(alice.kill)
        alice.out.wait_for(r"^\* .* is now alice$")
        # Through its start (the answers to its /cap: its ids, for the /since after the kill).
        alice.type("/who")
        alice.out.wait_for(r"^\* online \(")
        a.proc.kill()
        a.wait()
        alice.err.wait_for(Reconnect.LOST)
        alice.type("said while away")
        bob.send("while a was down\n")
        servers.append(Server("chat-server", *args, "--port", str(a.port)))
        # Its ghost holds "alice" in Redis until the killed server's presence expires (~5 s):
        # the client asks again, and its line waits to go out as alice.
        while (line := bob.line()) != "[alice]: said while away":
            self.assertFalse(line.startswith("["), line)
        alice.err.wait_for(Reconnect.BACK)
        bob.send("after\n")
        alice.out.wait_for(rf"^\[{re.escape(bob.name)}\]: after$")
        self.assertEqual(alice.finish(), 0)
        self.assertEqual(len(alice.err.lines), 2, alice.err.lines)
        # The room's ids come from Redis, so the restarted server (whose memory is empty)
        # replays what bob said meanwhile from the Redis stream: exactly once, nothing missed.
        self.assertEqual(alice.out.lines.count(f"[{bob.name}]: while a was down"), 1,
                         alice.out.lines)
        self.assertFalse([line for line in alice.out.lines if "missed" in line], alice.out.lines)


def alices_lines(lines):
    return [line[len("[alice]: "):] for line in lines if line.startswith("[alice]: ")]


class ResendExactlyOnce(unittest.TestCase):
    """A piped chat-client sends again what a dropped connection left unconfirmed, exactly once
    and in order (issue 23, /cap acks WRITER): the server says how many of the client's lines it
    stored, and a resend whose first copy still arrives is not relayed twice."""

    LINES = 200

    def test_kill_9_of_the_server_at_a_random_line_both_modes(self):
        for mode in ("single", "fork"):
            with self.subTest(serve=mode):
                self.kill_9_at_a_random_line(mode, [], [])

    def test_the_same_over_tls_both_modes(self):
        for mode in ("single", "fork"):
            with self.subTest(serve=mode):
                self.kill_9_at_a_random_line(mode, test_tls.PKI.server_flags(),
                                             ["--tls-ca", test_tls.PKI.ca, "--host", "localhost"])

    def kill_9_at_a_random_line(self, mode, server_flags, client_flags):
        seed = random.randrange(1 << 30)
        kill_at = random.Random(seed).randrange(10, self.LINES - 10)
        args = ["--serve", mode, "--history", "1000", *server_flags]
        servers = [Server("chat-server", *args)]
        try:
            reader = PipedClient(servers[0].port, "--nick", "reader", *client_flags)
            alice = PipedClient(servers[0].port, "--nick", "alice", *client_flags)
            try:
                reader.out.wait_for(r"^\* .* is now reader$")
                alice.out.wait_for(r"^\* .* is now alice$")
                for i in range(self.LINES):
                    alice.type(f"line {i}")
                    if i == kill_at:
                        servers.append(restart(servers[-1], *args))
                    time.sleep(0.002)  # a script writing as it goes
                alice.type("the end")
                reader.out.wait_for(r"^\[alice\]: the end$")
                self.assertEqual(alice.finish(), 0, (seed, alice.err.lines))
                said = [f"line {i}" for i in range(self.LINES)] + ["the end"]
                got = alices_lines(reader.out.lines)
                # Once each, in order. The kill -9 may take lines the server had confirmed to
                # alice but not yet written to the reader (more likely over TLS): the restarted
                # server's room has no memory of them, and the reader is told so on its way
                # back; never silently.
                self.assertEqual(got, [line for line in said if line in set(got)], seed)
                self.assertEqual(len(got), len(set(got)), seed)
                if got != said:
                    self.assertIn("* lines may have been missed: the room's history was lost (a "
                                  "server restart)", reader.out.lines, seed)
            finally:
                alice.kill()
                reader.kill()
        finally:
            for server in servers:
                server.stop()


class ManyAtOnce(unittest.TestCase):
    """A restart drops many clients at once: they come back spread out (jitter), every one of
    them, under its nick, and hear the room again."""

    CLIENTS = 30

    def test_every_client_comes_back_after_a_restart(self):
        server = Server("chat-server", "--history", "100")
        servers = [server]
        self.addCleanup(lambda: servers[-1].stop())
        clients = []
        for i in range(self.CLIENTS):
            client = PipedClient(server.port, "--nick", f"c{i}")
            self.addCleanup(client.kill)
            clients.append(client)
        for i, client in enumerate(clients):
            client.type("/who")
            client.out.wait_for(r"^\* online \(")
        server.proc.kill()
        server.wait()
        for client in clients:
            client.err.wait_for(Reconnect.LOST)
        servers.append(Server("chat-server", "--history", "100", "--port", str(server.port)))
        waits = []
        for client in clients:
            client.err.wait_for(Reconnect.BACK)
            waits.append(float(re.search(r"after (\d+\.\d) s", client.err.lines[-1]).group(1)))
        servers[-1].wait_for_log(rf"c{self.CLIENTS - 1}|is now c", timeout=SLOW)
        watcher = Raw(servers[-1])
        self.addCleanup(watcher.sock.close)
        watcher.send("/who\n")
        while not (line := watcher.line()).startswith("* online ("):
            pass
        names = line.split(": ", 1)[1].split(", ")
        self.assertEqual(sorted(n for n in names if n.startswith("c")),
                         sorted(f"c{i}" for i in range(self.CLIENTS)))
        watcher.send("back?\n")
        for client in clients:
            client.out.wait_for(rf"^\[{watcher.name}\]: back\?$")
        for client in clients:
            self.assertEqual(client.finish(), 0)
        # Not all in the same instant: the waits differ (backoff drawn from a range).
        self.assertGreater(len(set(waits)), 1, waits)
        # Backoff caps at 5 s; a sanitizer build starts the new server more slowly.
        self.assertLess(max(waits), 18 if muxtest.built_with_sanitizers() else 6, waits)


class Relay:
    """A TCP relay in front of a server that can cut every connection through it, and refuse new
    ones for a while: a flapping link."""

    def __init__(self, port):
        self.target = port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((muxtest.HOST, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.pairs = []
        self.ghosts = []  # server-side sockets left open after their client's side went
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                conn.close()
                continue
            upstream = socket.create_connection((muxtest.HOST, self.target))
            with self.lock:
                self.pairs.append((conn, upstream))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            # A cut or a reset: both ways end.
            for sock in (a, b):
                if sock in self.ghosts:
                    continue
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if a not in self.ghosts:
                a.close()  # each socket is read by exactly one of the two threads
            return
        # An end of input goes on as a half-close, as TCP's would: the other way keeps going
        # (a client that ended its input still reads the server's last answers).
        if b not in self.ghosts:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def orphan(self):
        """Drops the client side of every connection but keeps the server side open: the server
        keeps a ghost of each client, as when a cable is cut without a reset."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
            self.ghosts += [upstream for _, upstream in pairs]
        for conn, _ in pairs:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.cut()
        self.listener.close()
        for ghost in self.ghosts:
            ghost.close()


class FlappingLink(muxtest.ServerCases):
    """Through a relay that drops every connection again and again, a chat-client sees every
    line the room said exactly once, in order, and every line it typed reaches the room once."""

    CYCLES = 4

    def test_every_line_exactly_once_in_order(self):
        server = self.start("--history", "100")
        relay = Relay(server.port)
        self.addCleanup(relay.close)
        alice = PipedClient(relay.port, "--nick", "alice")
        self.addCleanup(alice.kill)
        bob = Raw(server)
        self.addCleanup(bob.sock.close)
        alice.out.wait_for(r"^\* .* is now alice$")
        said, typed = [], []
        for cycle in range(self.CYCLES):
            said.append(f"live {cycle}")
            bob.send(said[-1] + "\n")
            alice.out.wait_for(rf"^\[{bob.name}\]: live {cycle}$")
            relay.up = False
            relay.cut()
            alice.err.wait_for(Reconnect.LOST, start=len(alice.err.lines) - 1 if cycle else 0)
            server.wait_for_log(r"alice left", start=0)
            for i in range(3):
                said.append(f"missed {cycle}.{i}")
                bob.send(said[-1] + "\n")
            typed.append(f"away {cycle}")
            alice.type(typed[-1])
            relay.up = True
            # Back: alice says what it typed while away (once), bob's lines reach it (once).
            while (line := bob.line()) != f"[alice]: away {cycle}":
                self.assertFalse(line.startswith("[alice]"), line)
            alice.out.wait_for(rf"^\[{bob.name}\]: missed {cycle}\.2$")
        self.assertEqual(alice.finish(), 0, alice.err.lines)
        relayed = [line.split(": ", 1)[1] for line in alice.out.lines
                   if line.startswith(f"[{bob.name}]: ")]
        self.assertEqual(relayed, said)
        self.assertEqual(len([l for l in alice.err.lines if "reconnecting" in l]), self.CYCLES)
        self.assertFalse([l for l in alice.out.lines if "missed" in l and l.startswith("* ")])


    def test_piped_lines_cross_the_cuts_exactly_once(self):
        """Cut while a script pipes lines: what each cut left unconfirmed is sent again on the
        next connection, and only what the server did not already have."""
        server = self.start("--history", "100")
        relay = Relay(server.port)
        self.addCleanup(relay.close)
        alice = PipedClient(relay.port, "--nick", "alice")
        self.addCleanup(alice.kill)
        bob = Raw(server)
        self.addCleanup(bob.sock.close)
        alice.out.wait_for(r"^\* .* is now alice$")
        lines = [f"line {i}" for i in range(200)]
        for i, line in enumerate(lines):
            alice.type(line)
            if i % 50 == 25:
                relay.cut()
            time.sleep(0.002)
        alice.type("the end")
        got = []
        while (line := bob.line()) != "[alice]: the end":
            if line.startswith("[alice]: "):
                got.append(line[len("[alice]: "):])
        self.assertEqual(got, lines)
        self.assertEqual(alice.finish(), 0, alice.err.lines)


class ReconnectSecret(muxtest.ServerCases):
    """/reclaim NICK SECRET: the session that held a nick takes it back from its ghost at once
    with the secret the server gave it; a forged or old secret is refused as /nick would be."""

    def test_forged_refused_right_one_reclaims_old_one_refused(self):
        server = self.start()
        ghost = Raw(server)
        self.addCleanup(ghost.sock.close)
        ghost.send("/nick alice\n/cap ids\n")
        self.assertEqual(ghost.line(), f"* {ghost.name} is now alice")
        secret = CAP.match(ghost.line()).group(4)
        ghost.line()  # who is here
        back = Raw(server)
        self.addCleanup(back.sock.close)
        ghost.line()  # its join
        forged = "%032x" % (int(secret, 16) ^ 1)
        back.send(f"/reclaim alice {forged}\n/reclaim alice\n/who\n")
        self.assertEqual([back.line() for _ in range(3)],
                         ["* nick alice is taken", "* usage: /reclaim NICK SECRET",
                          f"* online (2): alice, {back.name}"])
        back.send(f"/reclaim alice {secret}\n")
        self.assertEqual(ghost.line(), "* replaced by a new connection with this session's secret")
        with self.assertRaises(EOFError):  # and closed
            ghost.reader.line(SLOW)
        self.assertEqual([back.line(), back.line()], ["* alice left", f"* {back.name} is now alice"])
        server.wait_for_log(rf"^.*{back.name} takes back alice from its previous connection$")
        # The old session's secret died with it.
        thief = Raw(server)
        self.addCleanup(thief.sock.close)
        thief.send(f"/reclaim alice {secret}\n")
        self.assertEqual(thief.line(), "* nick alice is taken")
        # The server never logs a secret.
        self.assertFalse([line for line in server.stdout_lines if secret in line])

    def test_chat_client_takes_its_nick_back_from_a_live_ghost(self):
        """The cable is cut without a reset: the server still holds alice's old connection when
        the client is back, and the secret hands the nick over at once (without it, the client
        would ask for 10 s and give up, as that ghost never goes away by itself)."""
        server = self.start("--history", "10")
        relay = Relay(server.port)
        self.addCleanup(relay.close)
        alice = PipedClient(relay.port, "--nick", "alice")
        self.addCleanup(alice.kill)
        bob = Raw(server)
        self.addCleanup(bob.sock.close)
        alice.out.wait_for(r"^\* .* is now alice$")
        alice.type("/who")
        alice.out.wait_for(r"^\* online \(2\): ")  # both are in
        relay.orphan()
        alice.err.wait_for(Reconnect.LOST)
        alice.type("typed while away")
        while (line := bob.line()) != "[alice]: typed while away":
            self.assertFalse(line.startswith("["), line)
        server.wait_for_log(r"takes back alice from its previous connection$")
        server.wait_for_log(r"alice left \(replaced by its reconnect\)$")
        alice.err.wait_for(Reconnect.BACK)
        bob.send("welcome back\n")
        alice.out.wait_for(rf"^\[{bob.name}\]: welcome back$")
        self.assertEqual(alice.finish(), 0)
        self.assertEqual(len(alice.err.lines), 2, alice.err.lines)


class ReconnectSecretSingle(ReconnectSecret, unittest.TestCase):
    MODE = "single"


class ReconnectSecretFork(ReconnectSecret, unittest.TestCase):
    MODE = "fork"


class FlappingLinkSingle(FlappingLink, unittest.TestCase):
    MODE = "single"


class FlappingLinkFork(FlappingLink, unittest.TestCase):
    MODE = "fork"


if __name__ == "__main__":
    muxtest.main()
