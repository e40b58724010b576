"""End-to-end tests of one big room over several chat-servers through a real redis-server
(issue 25), scaled down from bench/run --only scale: every client welcomed under a unique name,
/who counting the whole room, every line delivered to every client, and a killed server's
members leaving the others' lists within the presence expiry. The member lists are not re-read
from Redis when nothing was lost: a server whose Redis connections are killed, or every
server's subscription at once, costs Redis no SMEMBERS; after a Redis restarted empty with
members changed meanwhile on two servers, only those two are re-read, and every /who is exact.
Also the flags that make a huge room behave (--announce-up-to) and the fd-ceiling warning.
Skipped only when redis-server is not installed."""

import os
import re
import resource
import selectors
import socket
import time
import unittest

import muxtest
from muxtest import LineReader, Server
from test_redis import REDIS_SERVER, SLOW, Redis, chat_server, resp

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


def redis_info(port, section):
    """INFO `section` of the redis-server on `port`, as a dict of its fields."""
    with socket.create_connection(("127.0.0.1", port), timeout=SLOW) as sock:
        sock.sendall(resp("INFO", section))
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        header, data = data.split(b"\r\n", 1)
        size = int(header[1:])
        while len(data) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    fields = {}
    for line in data[:size].decode().splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            fields[key] = value
    return fields


def command_calls(port, command):
    """How many times Redis ran `command` (inside scripts too) since it started."""
    stats = redis_info(port, "commandstats").get(f"cmdstat_{command}", "calls=0")
    return int(re.match(r"calls=(\d+)", stats).group(1))


@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class MemberListReReads(unittest.TestCase):
    """Issue 25: a lost link made every server re-read whole member lists (SMEMBERS) whatever
    was lost; at 1,000,000 clients that fed on itself. Counted with Redis's own commandstats."""

    SERVERS = 4
    PER_SERVER = 20  # the room stays under /who's 100 names shown, so /who lists everyone

    def setUp(self):
        self.redis = Redis()
        self.servers, self.crowd, self.watchers = [], None, []

    def tearDown(self):
        try:
            if self.crowd:
                self.crowd.close()
            for sock, _ in self.watchers:
                sock.close()
        finally:
            try:
                for server in self.servers:
                    server.stop()
            finally:
                self.redis.close()

    def who(self, index):
        """The names /who lists on server `index` (asked through its watcher)."""
        sock, reader = self.watchers[index]
        sock.sendall(b"/who\n")
        line = reader.line(SLOW)
        while not line.startswith("* online ("):
            line = reader.line(SLOW)
        return set(line.split("): ", 1)[1].split(", "))

    def wait_who(self, index, want, timeout):
        deadline = time.monotonic() + timeout
        while True:
            got = self.who(index)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def wait_heartbeats(self, count):
        """Until every server made about `count` more heartbeats (each runs one ZADD)."""
        start = command_calls(self.redis.port, "zadd")
        want = start + count * len(self.servers)
        deadline = time.monotonic() + 4 * SLOW
        while command_calls(self.redis.port, "zadd") < want:
            self.assertLess(time.monotonic(), deadline, "the heartbeats stopped")
            time.sleep(0.1)

    def everyone(self):
        return {name for name in self.crowd.names if name} | self.watcher_names

    def assert_every_who_exact(self):
        want = self.everyone()
        for index in range(len(self.servers)):
            self.assertEqual(self.wait_who(index, want, 4 * SLOW), want, f"server {index}")

    def start_room(self):
        for _ in range(self.SERVERS):
            self.servers.append(chat_server(self.redis.url, "--max-per-address", "0"))
        ports = [server.port for server in self.servers]
        self.crowd = Crowd(ports, self.SERVERS * self.PER_SERVER)
        self.assertTrue(self.crowd.pump(lambda: all(self.crowd.names), 4 * SLOW))
        self.watcher_names = set()
        for server in self.servers:
            sock = server.connect()
            reader = LineReader(sock)
            self.watchers.append((sock, reader))
            self.watcher_names.add(WELCOME.match(reader.line(SLOW)).group(1))
        self.assert_every_who_exact()
        # Settled: the snapshots of the servers that were new are answered.
        self.wait_heartbeats(2)

    def reconnected(self, server, since):
        server.wait_for_log(r"redis: connected to", timeout=4 * SLOW, start=since)

    def test_links_back_without_a_loss_cost_no_smembers(self):
        self.start_room()
        before = command_calls(self.redis.port, "smembers")
        # One server's Redis connections killed: it reconnects having lost nothing.
        first = self.servers[0]
        since = len(first.stdout_lines)
        ports = muxtest.redis_client_ports(first.proc.pid, self.redis.port)
        self.assertEqual(len(ports), 2, ports)  # commands and the subscription
        for port in ports:
            self.redis.command("CLIENT", "KILL", "ADDR", f"127.0.0.1:{port}")
        self.reconnected(first, since)
        self.wait_heartbeats(3)
        self.assert_every_who_exact()
        self.assertEqual(command_calls(self.redis.port, "smembers") - before, 0)
        # Every server's subscription killed at once.
        marks = [len(server.stdout_lines) for server in self.servers]
        self.assertEqual(self.redis.command("CLIENT", "KILL", "TYPE", "pubsub"),
                         f":{len(self.servers)}".encode())
        for server, since in zip(self.servers, marks):
            self.reconnected(server, since)
        self.wait_heartbeats(3)
        self.assert_every_who_exact()
        self.assertEqual(command_calls(self.redis.port, "smembers") - before, 0)

    def test_redis_restarted_empty_rereads_only_the_servers_that_changed(self):
        self.start_room()
        marks = [len(server.stdout_lines) for server in self.servers]
        self.redis.close()  # no persistence: it comes back empty
        for server, since in zip(self.servers, marks):
            server.wait_for_log(r"redis: lost", timeout=4 * SLOW, start=since)
        # Meanwhile 5 leave server 0 and 5 join server 1 (each room has only its own now).
        sizes = [self.PER_SERVER + 1] * len(self.servers)
        leaving = [i for i in range(len(self.crowd.socks)) if i % self.SERVERS == 0][:5]
        for i in leaving:
            self.crowd.selector.unregister(self.crowd.socks[i])
            self.crowd.socks[i].close()
            self.crowd.names[i] = None
        sizes[0] -= 5
        joiners = Crowd([self.servers[1].port], 5)
        try:
            self.assertTrue(joiners.pump(lambda: all(joiners.names), 4 * SLOW))
            sizes[1] += 5
            for index in (0, 1):
                deadline = time.monotonic() + 4 * SLOW
                while len(self.who(index)) != sizes[index]:
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(0.1)
            marks = [len(server.stdout_lines) for server in self.servers]
            gone_before = sum(server.log_count(r"redis: server \S+ is gone")
                              for server in self.servers)
            self.redis = Redis(port=self.redis.port)
            for server, since in zip(self.servers, marks):
                self.reconnected(server, since)
            want = self.everyone() | set(joiners.names)
            for index in range(len(self.servers)):
                self.assertEqual(self.wait_who(index, want, 4 * SLOW), want, f"server {index}")
            self.wait_heartbeats(3)
            for index in range(len(self.servers)):
                self.assertEqual(self.who(index), want, f"server {index}")
            # Servers 0 and 1 changed: each is re-read by the 3 others, and nothing else (but a
            # server that reconnected more than the presence TTL after another: it was gone
            # there and is read as new).
            gone = sum(server.log_count(r"redis: server \S+ is gone")
                       for server in self.servers) - gone_before
            self.assertLessEqual(command_calls(self.redis.port, "smembers"),
                                 2 * (len(self.servers) - 1) + gone)
        finally:
            joiners.close()


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
