"""End-to-end tests of one big room over several chat-servers through a real redis-server
(issue 25), scaled down from bench/run --only scale: every client welcomed under a unique name,
/who counting the whole room, every line delivered to every client, and a killed server's
members leaving the others' lists within the presence expiry. Also the flags that make a huge
room behave (--announce-up-to) and the fd-ceiling warning. Skipped only when redis-server is
not installed."""

import re
import resource
import selectors
import socket
import time
import unittest

import muxtest
from muxtest import LineReader, Server
from test_redis import REDIS_SERVER, SLOW, Redis, chat_server

WELCOME = re.compile(r"^\* welcome, you are (Client (\d+)) \(type /help for commands\)$")
ONLINE = re.compile(r"^\* online \((\d+)")
# 3 x 500 clients (3 x 150 under the sanitizers: each client costs the slower binary more).
PER_SERVER = 150 if muxtest.built_with_sanitizers() else 500


class Crowd:
    """Many raw clients read together: their welcome names and the lines they receive."""

    def __init__(self, ports, count):
        self.selector = selectors.DefaultSelector()
        self.socks, self.buffers, self.names, self.lines = [], [], [], []
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", ports[index % len(ports)]),
                                            timeout=SLOW)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, index)
            self.socks.append(sock)
            self.buffers.append(b"")
            self.names.append(None)
            self.lines.append([])

    def pump(self, until, timeout):
        """Reads until `until()` holds or `timeout` passes; returns whether it held."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self.selector.select(min(left, 0.5)):
                index = key.data
                try:
                    chunk = self.socks[index].recv(65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.selector.unregister(self.socks[index])
                    continue
                self.buffers[index] += chunk
                *complete, self.buffers[index] = self.buffers[index].split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace")
                    match = WELCOME.match(line)
                    if match and self.names[index] is None:
                        self.names[index] = match.group(1)
                    elif line.startswith("[") and "|" in line:
                        self.lines[index].append(line.split("|", 1)[1])
        return True

    def close(self):
        for sock in self.socks:
            sock.close()
        self.selector.close()


@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class BigRoom(unittest.TestCase):
    def setUp(self):
        muxtest.raise_fd_limit(4 * PER_SERVER + 256)
        self.redis = Redis()
        self.servers, self.crowd, self.speaker = [], None, None

    def tearDown(self):
        try:
            if self.crowd:
                self.crowd.close()
            if self.speaker:
                self.speaker.close()
        finally:
            try:
                for server in self.servers:
                    server.stop()
            finally:
                self.redis.close()

    def who_count(self, reader, want, timeout):
        """Asks /who until it counts `want` (the mirrors follow the events and heartbeats)."""
        deadline = time.monotonic() + timeout
        while True:
            self.speaker.sendall(b"/who\n")
            line = reader.line(SLOW)
            while not line.startswith("* online ("):
                line = reader.line(SLOW)
            count = int(ONLINE.match(line).group(1))
            if count == want or time.monotonic() > deadline:
                return count
            time.sleep(0.2)

    def test_three_servers_one_room_every_line_unique_names_and_a_killed_server(self):
        for _ in range(3):  # each in the list at once, so tearDown stops it
            self.servers.append(chat_server(self.redis.url, "--max-per-address", "0"))
        ports = [server.port for server in self.servers]
        total = 3 * PER_SERVER
        self.crowd = Crowd(ports, total)
        self.assertTrue(self.crowd.pump(lambda: all(self.crowd.names), 4 * SLOW),
                        f"{sum(1 for n in self.crowd.names if n)} of {total} welcomed")
        self.assertEqual(len(set(self.crowd.names)), total)  # one counter, blocks or not
        self.speaker = self.servers[0].connect()
        reader = LineReader(self.speaker)
        speaker_name = WELCOME.match(reader.line(SLOW)).group(1)
        self.assertNotIn(speaker_name, self.crowd.names)
        self.assertEqual(self.who_count(reader, total + 1, SLOW), total + 1)
        # Past 100 members /who names the first 100 and counts everyone.
        self.speaker.sendall(b"/who\n")
        line = reader.line(SLOW)
        while not line.startswith("* online ("):
            line = reader.line(SLOW)
        self.assertTrue(line.startswith(f"* online ({total + 1}, first 100 shown; "), line)
        self.assertEqual(len(line.split("): ", 1)[1].split(", ")), 100)
        # Every line to every client, once, in order.
        for index in range(5):
            self.speaker.sendall(f"|{index} to everyone\n".encode())
        want = [f"{index} to everyone" for index in range(5)]
        self.assertTrue(self.crowd.pump(lambda: all(len(got) >= 5 for got in self.crowd.lines),
                                        4 * SLOW))
        self.assertTrue(all(got == want for got in self.crowd.lines))
        # A server killed: its members leave the others' lists within the presence expiry
        # (4 s) and the next heartbeat (1 s).
        start = time.monotonic()
        self.servers[2].proc.kill()
        self.servers[2].wait()
        remaining = total + 1 - PER_SERVER
        self.assertEqual(self.who_count(reader, remaining, SLOW), remaining)
        if not muxtest.built_with_sanitizers():
            self.assertLess(time.monotonic() - start, 7)
        self.servers[0].wait_for_log(rf"redis: server \S+ is gone with {PER_SERVER} clients")


class HugeRoomFlags(unittest.TestCase):
    def test_announce_up_to(self):
        with Server("chat-server", "--announce-up-to", "2") as server:
            first = LineReader(server.connect())
            first.line()  # welcome
            second = server.connect()
            first_line = first.line()
            self.assertRegex(first_line, r"^\* Client \d+ joined$")
            third = server.connect()  # the room has 3: not announced
            LineReader(third).line()
            first.sock.sendall(b"/who\n")
            self.assertRegex(first.line(), r"^\* online \(3\): ")
            for sock in (first.sock, second, third):
                sock.close()

    def test_max_clients_above_the_fd_limit_is_a_warning(self):
        def low_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        server = Server("chat-server", "--max-clients", "5000", preexec_fn=low_limit)
        try:
            server.wait_for_log(r"warning: --max-clients 5000 is above what this process's fd "
                                r"limit \(256\) allows: about 192 clients; raise the hard limit")
        finally:
            server.stop()


if __name__ == "__main__":
    muxtest.main()
