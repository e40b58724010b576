"""--room-secret-file (issue 21, D1/D3/D7-D9): every chat-server of a Redis room holds the same
secret and signs what it writes to Redis; a Redis-level writer (here: a raw RESP socket from
this test, which can PUBLISH, XADD, SET and ZADD like any client of that Redis) cannot speak as a
member, replay a batch, poison the history, squat a nick or register a ghost server. A real
redis-server on a free loopback port, real mux servers in both serve modes, raw sockets.
Without the flag, the same writes still work (the control cases): behaviour is as before."""

import os
import re
import socket
import tempfile
import time
import unittest

import muxtest
from muxtest import Server
from test_chat_recovery import CAP, Raw
from test_redis import HISTORY, REDIS_SERVER, SLOW, Client, Redis, resp

ROOM = "test"
PREFIX = f"mux:room:{ROOM}:"
CHANNEL = PREFIX + "events"
UNVERIFIED = r"redis: dropped .* it failed verification; is --room-secret-file the same on every server of room 'test'\?"


def field(value):
    value = value if isinstance(value, bytes) else value.encode()
    return b" %d:%s" % (len(value), value)


def batch(server_id, *events):
    """A batch in the room's wire format (chat/room_event.hpp), unsigned: events are
    (kind, a, b, c)."""
    out = b"MUXROOM1 " + server_id.encode() + b"\n"
    for kind, a, b, c in events:
        out += kind.encode() + field(a) + field(b) + field(c) + b"\n"
    return out


class RawRedis:
    """A raw RESP connection to the room's Redis: what any client of that Redis can do."""

    def __init__(self, redis):
        self.sock = socket.create_connection(("127.0.0.1", redis.port), timeout=SLOW)
        self.buffer = b""

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self._read_reply()

    def subscribe(self):
        """Subscribes to the room's channel (then only payload_with() may be used)."""
        return self.call("SUBSCRIBE", CHANNEL)

    def _read_line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("redis closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _read_reply(self):
        line = self._read_line()
        if line.startswith(b"*"):
            return [self._read_reply() for _ in range(int(line[1:]))]
        if line.startswith(b"$"):
            size = int(line[1:])
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise AssertionError("redis closed the connection")
                self.buffer += chunk
            value, self.buffer = self.buffer[:size], self.buffer[size + 2:]
            return value
        if line.startswith(b"-"):
            raise AssertionError(f"redis: {line!r}")
        return line

    def payload_with(self, text):
        """The next published payload that contains `text`."""
        deadline = time.monotonic() + SLOW
        while time.monotonic() < deadline:
            reply = self._read_reply()
            if isinstance(reply, list) and reply[0] == b"message" and text in reply[2]:
                return reply[2]
        raise AssertionError(f"no payload with {text!r} on {CHANNEL}")

    def close(self):
        self.sock.close()


def secret_file(directory, name, secret, mode=0o600):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, mode)
    return path


class RoomFixture:
    """A redis-server, a secret file, and servers (in MODE) stopped at cleanup."""

    MODE = "single"
    SECRET = "a room secret of enough length 0123456789"

    def setUp(self):
        self.redis = Redis()
        self.addCleanup(self.redis.close)
        self.dir = tempfile.TemporaryDirectory(prefix="mux-room-secret-")
        self.addCleanup(self.dir.cleanup)
        self.secret = secret_file(self.dir.name, "room.secret", self.SECRET)

    def server(self, *args, secret=True):
        flags = ["--serve", self.MODE, "--redis", self.redis.url, "--room", ROOM, *args]
        if secret:
            flags += ["--room-secret-file", secret if isinstance(secret, str) else self.secret]
        server = Server("chat-server", *flags)
        self.addCleanup(self.assert_clean_exit, server)
        server.wait_for_log(r"redis: connected to", timeout=SLOW)
        match = server.wait_for_log(r"\(this server: (\S+)\)")
        server.room_id = match.group(1)
        return server

    def assert_clean_exit(self, server):
        self.assertEqual(server.stop(), 0, server.stdout_lines[-20:])
        self.assertEqual(server.stderr_lines, [])

    def client(self, server, nick=None):
        client = Client(server, nick)
        self.addCleanup(client.close)
        return client

    def pair(self, *args, secret=True):
        """Two servers sharing the room, alice on the first and bob on the second, each seeing
        the other."""
        a, b = self.server(*args, secret=secret), self.server(*args, secret=secret)
        alice = self.client(a, "alice")
        bob = self.client(b, "bob")
        alice.expect_who(["alice", "bob"])
        bob.expect_who(["bob", "alice"])
        return a, b, alice, bob

@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class SignedRoom(RoomFixture):
    """Cases run once per serve mode (MODE)."""

    def test_two_servers_with_the_same_secret_share_the_room(self):
        a, b, alice, bob = self.pair()
        alice.send("hello from a\n")
        bob.skip_to("[alice]: hello from a")
        bob.send("hello from b\n")
        alice.skip_to("[bob]: hello from b")
        self.assertEqual(a.log_count(UNVERIFIED) + b.log_count(UNVERIFIED), 0)

    def test_a_redis_writer_cannot_speak_as_a_member_or_replay(self):
        a, b, alice, bob = self.pair()
        listener = RawRedis(self.redis)
        self.addCleanup(listener.close)
        listener.subscribe()
        alice.send("genuine line\n")
        bob.skip_to("[alice]: genuine line")
        captured = listener.payload_with(b"genuine line")
        self.assertIn(b"\ns ", captured)  # signed
        # Unsigned, as alice's server; the captured batch again (a replay); the captured batch
        # with its text changed and its signature kept; a batch from an unknown server.
        self.redis.command(
            "PUBLISH", CHANNEL, batch(a.room_id, ("m", "alice", "forged line", "")))
        self.redis.command("PUBLISH", CHANNEL, captured)
        self.redis.command(
            "PUBLISH", CHANNEL, captured.replace(b"genuine line", b"altered line"))
        self.redis.command(
            "PUBLISH", CHANNEL, batch("ghost-1", ("j", "mallory", "", ""),
                                      ("m", "mallory", "hi all", "")))
        b.wait_for_log(UNVERIFIED, timeout=SLOW)
        # The PUBLISHes above reached b's subscription before this line does (Redis delivers
        # in the order it ran them): the next line bob reads is this one, or a forgery got in.
        alice.send("after the forgeries\n")
        self.assertEqual(bob.line(), "[alice]: after the forgeries")
        alice.send("/who\n")
        self.assertEqual(alice.line(), "* online (2): alice, bob")
        # One log line a second at most: four forgeries, at most a line or two.
        self.assertLessEqual(b.log_count(UNVERIFIED), 2)
        self.assertNotIn(self.SECRET, "\n".join(a.stdout_lines + b.stdout_lines))

    def test_a_ghost_server_is_not_registered(self):
        a, b, alice, bob = self.pair()
        ghost = "4242-deadbeef"
        zero_tag = "0" * 32

        def register():
            now = int(time.time() * 1000)
            self.redis.command("ZADD", PREFIX + "servers", now, ghost)
            self.redis.command("HSET", PREFIX + "versions", ghost, 1)
            self.redis.command("HSET", PREFIX + "registrations", ghost, f"{now} 1 {zero_tag}")
            self.redis.command("SADD", PREFIX + "members:" + ghost, "mallory")

        register()
        start = len(b.stdout_lines)
        b.wait_for_log(r"dropped a server registration with a wrong signature", timeout=SLOW,
                       start=start)
        # Another heartbeat with the ghost listed (the report is one line a second at most).
        register()
        mark = len(b.stdout_lines)
        b.wait_for_log(r"dropped a server registration with a wrong signature", timeout=SLOW,
                       start=mark)
        bob.send("/who\n")
        self.assertEqual(bob.line(), "* online (2): bob, alice")
        self.assertEqual(b.log_count(r"redis: 3 servers in the room"), 0)
        # Names added to a real server's member set: a third server's snapshot of it skips them.
        self.redis.command("SADD", PREFIX + "members:" + a.room_id, "mallory")
        self.redis.command("SADD", PREFIX + "members:" + a.room_id, f"{zero_tag} trudy")
        c = self.server()
        carol = self.client(c)
        carol.expect_who([carol.name, "alice", "bob"])
        c.wait_for_log(UNVERIFIED, timeout=SLOW)


    def poison_history(self):
        """Adds to the history stream, as a Redis writer: an unsigned entry, the genuine
        entry's signature over another text, and an exact copy of the genuine entry."""
        raw = RawRedis(self.redis)
        self.addCleanup(raw.close)
        entries = raw.call("XRANGE", PREFIX + "history", "-", "+")
        self.assertEqual(len(entries), 1, entries)
        fields = entries[0][1]
        now = str(int(time.time())).encode()
        raw.call("XADD", PREFIX + "history", "0-1000000", "t", now, "n", "alice", "m", "poisoned")
        altered = [b"poisoned too" if i > 0 and fields[i - 1] == b"m" else value
                   for i, value in enumerate(fields)]
        raw.call("XADD", PREFIX + "history", "0-1000001", *altered)
        raw.call("XADD", PREFIX + "history", "0-1000002", *fields)
        return fields

    def test_a_redis_writer_cannot_poison_the_history(self):
        a, b, alice, bob = self.pair("--history", "10")
        alice.send("genuine line\n")
        bob.skip_to("[alice]: genuine line")
        fields = self.poison_history()
        self.assertIn(b"s", fields[0::2])  # signed
        # A newcomer's history: the genuine line alone, then the answer to its /who.
        late = self.client(b)
        self.assertEqual(HISTORY.match(late.line()).group(1), "[alice]: genuine line")
        late.send("/who\n")
        self.assertTrue(late.line().startswith("* online ("))
        b.wait_for_log(UNVERIFIED, timeout=SLOW)
        # /since on a server that never saw the line reads the stream: the same.
        c = self.server("--history", "10")
        asker = Raw(c)
        self.addCleanup(asker.sock.close)
        asker.send("/cap ids\n")
        while not (cap := CAP.match(asker.line())):
            pass
        asker.line()  # who is here
        asker.send(f"/since {cap.group(1)} 0\n")
        while not CAP.match(asker.line()):
            pass
        asker.line()  # who is here
        self.assertEqual(asker.line(), "@1 [alice]: genuine line")
        asker.send("/who\n")
        self.assertTrue(asker.line().startswith("* online ("))
        c.wait_for_log(UNVERIFIED, timeout=SLOW)


    def test_a_redis_writer_cannot_squat_a_nick(self):
        a, b, alice, bob = self.pair()
        raw = RawRedis(self.redis)
        self.addCleanup(raw.close)
        # The nicks' keys as the servers write them: carol's and dave's, learned by taking and
        # leaving them.
        keys = {}
        for nick in ["carol", "dave"]:
            before = set(raw.call("KEYS", PREFIX + "nick:*"))
            bob.send(f"/nick {nick}\n")
            bob.skip_to(f"* {bob.name} is now {nick}")
            bob.name = nick
            (keys[nick],) = set(raw.call("KEYS", PREFIX + "nick:*")) - before
            self.assertRegex(raw.call("GET", keys[nick]).decode(), r"^\S+ [0-9a-f]{32}$")
        bob.send("/nick bob\n")
        bob.skip_to(f"* {bob.name} is now bob")
        bob.name = "bob"
        # carol: held in the name of a live server of the room, unsigned; dave: held by a ghost
        # server that keeps its presence fresh, with a made-up tag.
        ghost = "4242-deadbeef"
        raw.call("SET", keys["carol"], a.room_id)
        raw.call("ZADD", PREFIX + "servers", int(time.time() * 1000), ghost)
        raw.call("SET", keys["dave"], f"{ghost} {'0' * 32}")
        for nick in ["carol", "dave"]:
            bob.send(f"/nick {nick}\n")
            bob.skip_to(f"* bob is now {nick}")
            bob.send("/nick bob\n")
            bob.skip_to(f"* {nick} is now bob")
        b.wait_for_log(r"redis: dropped a nick holder \(from ", timeout=SLOW)
        # A nick a server of the room holds stays its own.
        bob.send("/nick alice\n")
        bob.skip_to("* nick alice is taken")

class SignedRoomSingle(SignedRoom, unittest.TestCase):
    MODE = "single"


class SignedRoomFork(SignedRoom, unittest.TestCase):
    MODE = "fork"


@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class SecretFileAndControls(RoomFixture, unittest.TestCase):
    """The secret file's checks, mismatched secrets, and what a Redis writer can do without
    the flag (as before: the attacks the signed cases refuse are real)."""

    def test_without_the_flag_a_redis_writer_speaks_as_a_member_and_registers_ghosts(self):
        a, b, alice, bob = self.pair(secret=False)
        self.redis.command(
            "PUBLISH", CHANNEL, batch(a.room_id, ("m", "alice", "forged line", "")))
        bob.skip_to("[alice]: forged line")
        ghost = "4242-deadbeef"
        deadline = time.monotonic() + SLOW
        while True:
            self.redis.command("ZADD", PREFIX + "servers", int(time.time() * 1000), ghost)
            self.redis.command("HSET", PREFIX + "versions", ghost, 1)
            self.redis.command("SADD", PREFIX + "members:" + ghost, "mallory")
            bob.send("/who\n")
            if bob.line() == "* online (3): bob, alice, mallory":
                break
            self.assertLess(time.monotonic(), deadline, "the ghost never showed")
            time.sleep(0.2)
        self.redis.command("SADD", PREFIX + "members:" + a.room_id, "trudy")
        c = self.server(secret=False)
        carol = self.client(c)
        carol.expect_who([carol.name, "alice", "bob", "mallory", "trudy"])

    def test_without_the_flag_a_redis_writer_poisons_the_history(self):
        a, b, alice, bob = self.pair("--history", "10", secret=False)
        alice.send("genuine line\n")
        bob.skip_to("[alice]: genuine line")
        raw = RawRedis(self.redis)
        self.addCleanup(raw.close)
        raw.call("XADD", PREFIX + "history", "0-1000000", "t", str(int(time.time())), "n",
                 "alice", "m", "poisoned")
        late = self.client(b)
        self.assertEqual([HISTORY.match(late.line()).group(1) for _ in range(2)],
                         ["[alice]: genuine line", "[alice]: poisoned"])

    def test_without_the_flag_a_redis_writer_squats_a_nick(self):
        a, b, alice, bob = self.pair(secret=False)
        raw = RawRedis(self.redis)
        self.addCleanup(raw.close)
        before = set(raw.call("KEYS", PREFIX + "nick:*"))
        bob.send("/nick carol\n")
        bob.skip_to(f"* {bob.name} is now carol")
        (key,) = set(raw.call("KEYS", PREFIX + "nick:*")) - before
        bob.send("/nick bob\n")
        bob.skip_to("* carol is now bob")
        raw.call("SET", key, a.room_id)
        bob.send("/nick carol\n")
        bob.skip_to("* nick carol is taken")

    def test_mismatched_secrets_are_one_clear_log_line(self):
        other = secret_file(self.dir.name, "other.secret", "another secret, also long enough")
        a = self.server()
        b = self.server(secret=other)
        alice = self.client(a, "alice")
        alice.send("anyone?\n")
        b.wait_for_log(UNVERIFIED, timeout=SLOW)
        a.wait_for_log(UNVERIFIED, timeout=SLOW)
        bob = self.client(b, "bob")
        bob.send("/who\n")
        self.assertEqual(bob.line(), "* online (1): bob")

    def test_the_secret_file_is_checked_like_a_token_file(self):
        cases = [
            (secret_file(self.dir.name, "open.secret", self.SECRET, 0o644),
             "group or others can access it"),
            (secret_file(self.dir.name, "short.secret", "0123456789"),
             "the secret is shorter than 16 bytes"),
            (self.dir.name, "not a regular file"),
        ]
        for path, why in cases:
            with self.subTest(why=why):
                result = muxtest.run_mux("chat-server", "--port", "0", "--redis", self.redis.url,
                                         "--room-secret-file", path)
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertIn(f"mux: error: --room-secret-file {path}: {why}",
                              result.stderr.decode())
        result = muxtest.run_mux("chat-server", "--port", "0", "--room-secret-file", self.secret)
        self.assertEqual(result.returncode, 2)
        self.assertIn("--room-secret-file: needs --redis URL", result.stderr.decode())
        # --check reads it and never shows it.
        result = muxtest.run_mux("chat-server", "--check", "--redis", self.redis.url,
                                 "--room-secret-file", self.secret)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--room-secret-file", result.stdout.decode() + result.stderr.decode())
        self.assertNotIn(self.SECRET, result.stdout.decode() + result.stderr.decode())


if __name__ == "__main__":
    muxtest.main()
