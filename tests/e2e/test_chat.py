"""End-to-end tests of `mux chat-server`: the real binary on a free loopback port, driven with raw
sockets. Every case runs in --serve single; the main ones run again in --serve fork."""

import os
import random
import re
import resource
import select
import signal
import socket
import struct
import time
import unittest

import muxtest
from muxtest import LineReader, Server

WELCOME = re.compile(r"^\* welcome, you are (Client \d+) \(type /help for commands\)$")


class Client:
    """A raw chat client: a socket plus a line reader."""

    def __init__(self, server):
        self.sock = server.connect()
        self.reader = LineReader(self.sock)
        match = WELCOME.match(self.reader.line())
        assert match, "no welcome line"
        self.name = match.group(1)

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def send_whole_lines(self, data, lines_per_send=32, timeout=60):
        """Sends data a few whole lines at a time, each send made only when the socket can take
        it at once. A blocking sendall of a big payload stops mid-line whenever the send buffer
        fills; if this process is then descheduled for over 100 ms, the server's documented
        quiet-time rule delivers the half line on its own (seen once at load 25 under ASan)."""
        lines = data.splitlines(keepends=True)
        deadline = time.monotonic() + timeout
        for first in range(0, len(lines), lines_per_send):
            chunk = b"".join(lines[first:first + lines_per_send])
            while chunk:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server took no bytes for {timeout} s")
                select.select([], [self.sock], [], 1.0)
                try:
                    chunk = chunk[self.sock.send(chunk, socket.MSG_DONTWAIT):]
                except BlockingIOError:
                    pass

    def line(self, timeout=muxtest.DEFAULT_TIMEOUT):
        return self.reader.line(timeout)

    def lines(self, count, timeout=muxtest.DEFAULT_TIMEOUT):
        return self.reader.lines(count, timeout)

    def raw_line(self, timeout=muxtest.DEFAULT_TIMEOUT):
        """The next line as the bytes the server sent, newline included."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.reader.buffer:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; have {self.reader.buffer!r}")
            self.reader.buffer += chunk
        line, _, self.reader.buffer = self.reader.buffer.partition(b"\n")
        return line + b"\n"

    def expect_only_who(self, names):
        """Asks /who and asserts its answer is the very next line: anything queued for this client
        before it (a relay of its own line, another's error) would arrive first. An event to wait
        for instead of a window of silence."""
        self.send("/who\n")
        self.assertEqual(self.line(), f"* online ({len(names)}): {', '.join(names)}")

    def assertEqual(self, got, expected):
        if got != expected:
            raise AssertionError(f"{got!r} != {expected!r}")

    def close(self):
        self.sock.close()


class ChatServerCases(muxtest.ServerCases):
    """The cases shared by both serving modes; subclasses set MODE."""

    def join(self, server, *others):
        """Connects a client; every client in `others` sees its join notice."""
        client = Client(server)
        self.addCleanup(client.close)
        for other in others:
            self.assertEqual(other.line(), f"* {client.name} joined")
        return client

    def test_broadcast_reaches_everyone_but_the_sender(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        c = self.join(server, a, b)
        self.assertEqual((a.name, b.name, c.name), ("Client 1", "Client 2", "Client 3"))
        b.send("hello everyone\n")
        self.assertEqual(a.line(), "[Client 2]: hello everyone")
        self.assertEqual(c.line(), "[Client 2]: hello everyone")
        b.expect_only_who(["Client 1", "Client 2", "Client 3"])  # its own line did not come back

    def test_unterminated_message_is_delivered_after_quiet_time(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        a.send("no newline here")
        self.assertEqual(b.line(), "[Client 1]: no newline here")
        a.send("second")
        self.assertEqual(b.line(), "[Client 1]: second")

    def test_line_split_across_writes_arrives_as_one_line(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.assert_pieces_joined(a, b, ["split ", "across ", "writes\n"],
                                  ["[Client 1]: split across writes"])
        self.assert_pieces_joined(a, b, ["first\nsecond\r\nthi", "rd\n"],
                                  ["[Client 1]: first", "[Client 1]: second", "[Client 1]: third"])

    def assert_pieces_joined(self, sender, reader, pieces, expected, attempts=5):
        """Sends `pieces` ~10 ms apart, each in its own segment, and asserts `reader` gets exactly
        `expected` (relays of sender's lines). On a loaded machine the server may see a gap longer
        than the 100 ms quiet time and rightly deliver a piece as a line of its own; only that
        outcome (the same text, cut at piece ends) is retried, anything else fails at once, and
        at least one attempt must join the pieces."""
        prefix = f"[{sender.name}]: "
        stream = "".join(line.removeprefix(prefix) for line in expected)
        must_cut, may_cut, at = set(), set(), 0
        for line in expected:
            at += len(line.removeprefix(prefix))
            must_cut.add(at)
        at = 0
        for piece in pieces:
            at += len(piece.replace("\r", "").replace("\n", ""))
            may_cut.add(at)
        for _ in range(attempts):
            for index, piece in enumerate(pieces):
                if index:
                    time.sleep(0.01)
                sender.send(piece)
            got, cuts, at = [], set(), 0
            while at < len(stream):
                line = reader.line()
                got.append(line)
                self.assertTrue(line.startswith(prefix), got)
                at += len(line) - len(prefix)
                cuts.add(at)
            if got == expected:
                return
            self.assertEqual("".join(line.removeprefix(prefix) for line in got), stream)
            self.assertTrue(must_cut <= cuts <= must_cut | may_cut, got)
        self.fail(f"the server split {''.join(pieces)!r} at every one of {attempts} attempts")

    def test_nick_who_help_and_unknown_command(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        a.send("/nick alice\n")
        self.assertEqual(a.line(), "* Client 1 is now alice")
        self.assertEqual(b.line(), "* Client 1 is now alice")
        b.send("/nick ALICE\n")
        self.assertEqual(b.line(), "* nick ALICE is taken")
        b.send("/nick two words\n")
        self.assertEqual(b.line(), "* invalid nick 'two words': no spaces or invisible characters")
        b.send("/nick " + "x" * 33 + "\n")
        self.assertEqual(b.line(), "* invalid nick '" + "x" * 33 + "': longer than 32 characters")
        b.send("/nick\n")
        self.assertEqual(b.line(), "* usage: /nick NAME")
        b.send("/who\n")
        self.assertEqual(b.line(), "* online (2): alice, Client 2")
        b.send("/help\n")
        self.assertEqual(
            b.line(),
            "* commands: /nick NAME (change your name), /who (who is here; /who TEXT: whose name "
            "has TEXT), /history N (the last N lines), /help, /quit (leave); any other line goes to "
            "everyone (start it with // to send a leading /)")
        b.send("/dance\n")
        self.assertEqual(b.line(), "* unknown command /dance (try /help)")
        b.send("//dance\n")
        self.assertEqual(a.line(), "[Client 2]: /dance")
        a.send("hi from alice\n")
        self.assertEqual(b.line(), "[alice]: hi from alice")
        # Errors and answers went to the asker only.
        a.expect_only_who(["alice", "Client 2"])
        server.wait_for_log(r"Client 1 is now alice")

    def test_join_and_leave_notices(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        c = self.join(server, a, b)
        b.send("/nick bob\n")
        a.line(), b.line(), c.line()
        b.close()
        self.assertEqual(a.line(), "* bob left")
        self.assertEqual(c.line(), "* bob left")
        c.send("/quit\n")
        self.assertEqual(c.reader.expect_eof(), b"")
        self.assertEqual(a.line(), "* Client 3 left")
        server.wait_for_log(r"Client 1 joined from 127\.0\.0\.1:\d+")
        server.wait_for_log(r"bob left \(closed by client\)")
        server.wait_for_log(r"Client 3 left \(quit\)")

    def test_control_bytes_and_invalid_utf8_are_neutralised(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        a.send(b"\x1b[2J\x1b]0;pwned\x07 bell\x07 nul\x00 del\x7f tab\tok\n")
        self.assertEqual(b.raw_line(), b"[Client 1]: ^[[2J^[]0;pwned^G bell^G nul^@ del^? tab\tok\n")
        a.send(b"bad \xff\xfe utf8 \xc3\x28 caf\xc3\xa9 \xc2\x9b31m\n")
        self.assertEqual(b.raw_line(), "[Client 1]: bad \ufffd\ufffd utf8 \ufffd( café \ufffd31m\n".encode())

    def test_overlong_line_is_cut_and_sender_told(self):
        server = self.start("--max-line", "16")
        a = self.join(server)
        b = self.join(server, a)
        a.send("0123456789abcdefTHE REST IS DROPPED\nnext\n")
        self.assertEqual(a.line(), "* line too long: cut at 16 bytes, the rest was dropped")
        self.assertEqual(b.lines(2), ["[Client 1]: 0123456789abcdef", "[Client 1]: next"])
        # A line cut inside a UTF-8 character loses the partial character, not gains a U+FFFD.
        a.send("0123456789abcde\u00e9tail\n".encode())
        self.assertEqual(a.line(), "* line too long: cut at 16 bytes, the rest was dropped")
        self.assertEqual(b.line(), "[Client 1]: 0123456789abcde")

    def test_reader_gets_20000_lines_while_another_client_never_reads(self):
        server = self.start(*muxtest.CHAT_UNLIMITED)
        sender = self.join(server)
        sleeper = self.join(server, sender)  # never reads another byte
        reader = self.join(server, sender, sleeper)
        del sleeper
        count = 20000
        payload = "".join(f"line {i:05d} " + "x" * 40 + "\n" for i in range(count)).encode()
        started = time.monotonic()
        sender.send_whole_lines(payload)
        got = reader.lines(count, timeout=30)
        elapsed = time.monotonic() - started
        # Every line, once, in the order sent.
        self.assertEqual(got, [f"[Client 1]: line {i:05d} " + "x" * 40 for i in range(count)])
        print(f"\n  {count} lines reached the reader in {elapsed * 1000:.0f} ms ({self.MODE})", end=" ")

    def test_client_that_stops_reading_is_dropped_as_too_slow(self):
        server = self.start("--max-queue", "64K", *muxtest.CHAT_UNLIMITED)
        sender = self.join(server)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(muxtest.DEFAULT_TIMEOUT)
        sock.connect((server.host, server.port))
        self.addCleanup(sock.close)
        self.assertEqual(sender.line(), "* Client 2 joined")
        reader = self.join(server, sender)
        line = "y" * 1000 + "\n"
        relay = "[Client 1]: " + "y" * 1000
        deadline = time.monotonic() + 30
        sent = relayed = 0
        others = []
        # Send until the server gives up on the sleeper; the reader keeps up all along and gets
        # every line, with the notice somewhere among them.
        while not others and time.monotonic() < deadline:
            sender.send(line * 100)
            sent += 100
            while relayed < sent:
                got = reader.line()
                if got == relay:
                    relayed += 1
                else:
                    others.append(got)
        self.assertEqual(others, ["* Client 2 left (too slow)"])
        self.assertEqual(sender.line(), "* Client 2 left (too slow)")
        # Its own process notices first (bytes unsent), or, in fork mode, the parent notices that
        # process has stopped reading.
        server.wait_for_log(r"Client 2 left \(too slow: (.* unsent|its process stopped reading)\)")

    def test_server_full(self):
        server = self.start("--max-clients", "2")
        a = self.join(server)
        b = self.join(server, a)
        third = server.connect()
        self.addCleanup(third.close)
        self.assertEqual(LineReader(third).expect_eof(), b"* server full\n")
        server.wait_for_log(r"refused 127\.0\.0\.1:\d+: server full \(2 clients\)")
        b.close()
        self.assertEqual(a.line(), "* Client 2 left")
        # A place is free again: at once in single mode; in fork mode once the parent has reaped
        # the child, which nothing outside can watch for, so refused tries are retried.
        deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
        while True:
            sock = server.connect()
            reader = LineReader(sock)
            first = reader.line()
            if WELCOME.match(first):
                self.assertEqual(a.line(), f"* {WELCOME.match(first).group(1)} joined")
                sock.close()
                break
            self.assertEqual((self.MODE, first), ("fork", "* server full"))
            self.assertEqual(reader.expect_eof(), b"")
            sock.close()
            self.assertLess(time.monotonic(), deadline, "no place freed after a client left")
            time.sleep(0.02)

    def test_sigterm_tells_every_client_and_exits_zero(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        server.signal(signal.SIGTERM)
        self.assertEqual(a.reader.expect_eof(), b"* server shutting down\n")
        self.assertEqual(b.reader.expect_eof(), b"* server shutting down\n")
        self.assertEqual(server.wait(), 0)
        server.wait_for_log(r"shutting down \(SIGTERM\)")

    def test_sigint_with_idle_clients_exits_zero(self):
        server = self.start()
        clients = [self.join(server) for _ in range(3)]
        server.signal(signal.SIGINT)
        for client in clients:
            data = client.reader.expect_eof()
            self.assertTrue(data.endswith(b"* server shutting down\n"), data)
        self.assertEqual(server.wait(), 0)

    def test_half_closed_client_still_gets_its_answer(self):
        server = self.start()
        a = self.join(server)
        a.send("/who\n")
        a.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(a.reader.expect_eof(), b"* online (1): Client 1\n")
        b = self.join(server)
        b.send("/who\n")
        self.assertEqual(b.line(), "* online (1): Client 2")

    def test_empty_lines_are_not_relayed(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        a.send("\n\r\n\nafter\n")
        self.assertEqual(b.line(), "[Client 1]: after")

    def test_many_clients_all_receive_a_broadcast(self):
        server = self.start("--max-per-address", "0")  # 150 clients, all from 127.0.0.1
        clients = [self.join(server) for _ in range(150)]
        sender = clients[0]
        sender.send("to all\n")
        for index, client in enumerate(clients[1:], start=1):
            notices = 150 - index - 1  # joins after this one
            got = client.lines(notices + 1)
            # The joins after its own, in order, then the broadcast: nothing lost or reordered.
            self.assertEqual(got, [f"* Client {n} joined" for n in range(index + 2, 151)]
                             + ["[Client 1]: to all"])

    def test_random_garbage_from_many_clients_is_survived(self):
        server = self.start("--max-line", "64", "--max-per-address", "0")
        rng = random.Random(1234)  # fixed seed: a failure can be replayed
        witness = self.join(server)
        deadline = time.monotonic() + 1.5
        # Bounded in count too: in fork mode each connection is a fork, slow under the sanitizers.
        for _ in range(100 if self.MODE == "single" else 40):
            if time.monotonic() > deadline:
                break
            sock = server.connect()
            for _ in range(rng.randint(1, 5)):
                try:
                    sock.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
                except OSError:
                    break  # the server may already have closed it (e.g. after a /quit in the junk)
            if rng.random() < 0.5:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
            sock.close()
        # The server is still serving: a fresh client's line reaches the witness intact.
        speaker = Client(server)
        self.addCleanup(speaker.close)
        speaker.send("still alive\n")
        while (line := witness.line()) != f"[{speaker.name}]: still alive":
            self.assertTrue(line.startswith(("* ", "[")), line)

    def test_default_client_cap_follows_the_fd_limit(self):
        limit = 64  # the default cap keeps half of so small a limit for the server itself
        server = Server("chat-server", "--serve", self.MODE, preexec_fn=lambda: resource.setrlimit(
            resource.RLIMIT_NOFILE, (limit, limit)))
        self.addCleanup(self.assert_clean_exit, server)
        server.wait_for_log(rf"limits: {limit // 2} clients,")
        clients = [Client(server) for _ in range(limit // 2)]
        for client in clients:
            self.addCleanup(client.close)
        extra = server.connect()
        self.addCleanup(extra.close)
        self.assertEqual(LineReader(extra).expect_eof(), b"* server full\n")
        clients[0].send("/who\n")
        while not (line := clients[0].line()).startswith("* online"):
            pass
        self.assertTrue(line.startswith(f"* online ({limit // 2}): Client 1, Client 2,"), line)


class SingleModeTests(ChatServerCases, unittest.TestCase):
    MODE = "single"

    def test_verbose_logs_each_line_and_quiet_logs_only_the_listening_line(self):
        server = self.start("-v")
        a = self.join(server)
        b = self.join(server, a)
        a.send("for the log\n")
        self.assertEqual(b.line(), "[Client 1]: for the log")
        server.wait_for_log(r"\d\d:\d\d:\d\d\.\d{3}\+00:00 \[Client 1\]: for the log$")

        port = _free_port()
        quiet = muxtest.subprocess.Popen(
            [muxtest.MUX, "chat-server", "-q", "--port", str(port)],
            stdout=muxtest.subprocess.PIPE, stderr=muxtest.subprocess.PIPE)
        self.addCleanup(quiet.kill)
        sock = muxtest.connect_retrying(port)
        self.addCleanup(sock.close)
        self.assertEqual(LineReader(sock).line(), "* welcome, you are Client 1 (type /help for commands)")
        quiet.send_signal(signal.SIGTERM)
        out, err = quiet.communicate(timeout=muxtest.DEFAULT_TIMEOUT)
        self.assertEqual((quiet.returncode, err), (0, b""))
        self.assertRegex(out.decode(), rf"\A\S+ listening on 127\.0\.0\.1:{port} \(serve single\)\n\Z")

    def test_address_in_use_is_a_clear_error(self):
        server = self.start()
        result = muxtest.run_mux("chat-server", "--port", str(server.port))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(),
                         f"mux: error: listen on 127.0.0.1:{server.port}: Address already in use\n")

    def test_ipv6_loopback(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            server = Server("chat-server", host="::1")
        except AssertionError:
            self.skipTest("::1 not available")
        self.addCleanup(server.stop)
        a = Client(server)
        b = Client(server)
        self.assertEqual(a.line(), f"* {b.name} joined")
        b.send("over v6\n")
        self.assertEqual(a.line(), f"[{b.name}]: over v6")
        a.close(), b.close()


class ForkModeTests(ChatServerCases, unittest.TestCase):
    MODE = "fork"

    def test_killed_child_takes_down_no_one_else_and_is_reaped(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        c = self.join(server, a, b)
        pid = int(server.wait_for_log(r"Client 2 joined from \S+ \(pid (\d+)\)").group(1))
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(a.line(), "* Client 2 left")
        self.assertEqual(c.line(), "* Client 2 left")
        server.wait_for_log(rf"client process {pid} ended: killed by signal 9")
        _wait_until_gone(pid)
        a.send("still here\n")
        self.assertEqual(c.line(), "[Client 1]: still here")

    def test_children_are_reaped_after_quit_and_shutdown(self):
        server = self.start()
        a = self.join(server)
        b = self.join(server, a)
        pids = [int(server.wait_for_log(rf"{client.name} joined from \S+ \(pid (\d+)\)").group(1))
                for client in (a, b)]
        a.send("/quit\n")
        self.assertEqual(b.line(), "* Client 1 left")
        _wait_until_gone(pids[0])
        server.signal(signal.SIGTERM)
        self.assertEqual(b.reader.expect_eof(), b"* server shutting down\n")
        self.assertEqual(server.wait(), 0)
        _wait_until_gone(pids[1])

    def test_children_survive_sigint_to_the_process_group_until_told(self):
        server = Server("chat-server", "--serve", "fork", preexec_fn=os.setpgrp)
        self.addCleanup(server.stop)
        a = Client(server)
        b = Client(server)
        self.assertEqual(a.line(), f"* {b.name} joined")
        os.killpg(server.proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        self.assertEqual(a.reader.expect_eof(), b"* server shutting down\n")
        self.assertEqual(b.reader.expect_eof(), b"* server shutting down\n")
        self.assertEqual(server.wait(), 0)
        a.close(), b.close()


def _readable(sock):
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)
        sock.settimeout(muxtest.DEFAULT_TIMEOUT)


def _free_port():
    with socket.socket() as probe:
        probe.bind((muxtest.HOST, 0))
        return probe.getsockname()[1]


def _wait_until_gone(pid):
    """Waits until `pid` is reaped (no /proc entry, not even a zombie)."""
    deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} was not reaped")
        time.sleep(0.01)


if __name__ == "__main__":
    muxtest.main()
