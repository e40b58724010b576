"""End-to-end tests of the paths a server takes when something runs out or gets stuck: accepting
with no file descriptor left, a fork-mode child that stops reading its link, and a chat
session's way out (half-close, draining its queue after /quit, the bounded linger) — each
checked from the outside, ending with the server's fd count back where it started."""

import os
import re
import resource
import signal
import socket
import struct
import threading
import time
import unittest

import muxtest
from muxtest import LineReader, Server

WELCOME = re.compile(r"^\* welcome, you are (Client \d+) \(type /help for commands\)$")
TIMEOUT = muxtest.DEFAULT_TIMEOUT


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_until(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)  # polling /proc, not synchronising with the server


def limit_fds(count):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class Member:
    """A raw chat client that has read its welcome."""

    def __init__(self, server, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((server.host, server.port))
        self.reader = LineReader(self.sock)
        match = WELCOME.match(self.reader.line())
        assert match, "no welcome line"
        self.name = match.group(1)

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        return self.reader.line()


class OutOfFileDescriptors(unittest.TestCase):
    """The accept path with no fd left (EMFILE): the pending connection is taken off the queue
    and closed (the reserve-fd trick), it is logged, the loop does not spin, and the server
    serves again as soon as fds free up."""

    LIMIT = 32

    def own_errors(self, server):
        """The server's stderr lines, less UBSan's own false reports of a process out of fds.

        UBSan checks a virtual call's object by asking whether the vtable's memory is readable,
        and it asks by writing that memory into a pipe it opens for the purpose: with every fd
        in use the pipe cannot be made, and the check reports "invalid vptr" followed by
        "<memory cannot be printed>" for a perfectly valid object (strace shows the pipe2()
        failing with EMFILE just before each report; with a free fd the same calls pass). Only
        that exact three-line report is set aside; anything else, and every ASan report, counts."""
        lines, kept, i = server.stderr_lines, [], 0
        while i < len(lines):
            if (muxtest.built_with_sanitizers() and i + 2 < len(lines)
                    and re.search(r"runtime error: (member call on|member access within|downcast "
                                  r"of) address 0x[0-9a-f]+ which does not point to an object "
                                  r"of type '\w+'$", lines[i])
                    and lines[i + 1].endswith("note: object has invalid vptr")
                    and lines[i + 2] == "<memory cannot be printed>"):
                i += 3
                continue
            kept.append(lines[i])
            i += 1
        return kept

    def server(self, *args):
        """A server limited to LIMIT fds. Under a sanitizer build, UBSan's false reports above
        are let through instead of halting the process (CI sets halt_on_error=1), and printed
        without a stack so own_errors() can recognise them; every other report still fails the
        test through own_errors(), and ASan's options are left as they are."""
        env = dict(os.environ, UBSAN_OPTIONS="halt_on_error=0:print_stacktrace=0")
        server = Server(*args, preexec_fn=limit_fds(self.LIMIT), env=env)
        self.addCleanup(server.stop)
        return server

    def exhaust(self, server, connect_one):
        """Opens connections until one is dropped unanswered; returns the ones that were served."""
        served = []
        for _ in range(self.LIMIT + 5):
            sock, ok = connect_one()
            if not ok:
                return served
            served.append(sock)
        self.fail(f"{len(served)} connections under a limit of {self.LIMIT} fds and none dropped")

    def check_no_spin(self, server):
        # With the pending connection gone the listener is quiet: the loop sleeps. A spinning
        # loop burns the CPU it is given; a second of wall time shows the difference.
        before = cpu_seconds(server.proc.pid)
        time.sleep(1.0)
        self.assertLess(cpu_seconds(server.proc.pid) - before, 0.25)

    def test_chat_server(self):
        server = self.server("chat-server", "--max-clients", "1000", "--max-per-address", "0")

        def connect_one():
            sock = server.connect()
            self.addCleanup(sock.close)
            try:
                line = LineReader(sock).line()
            except (EOFError, ConnectionResetError):
                return sock, False
            self.assertRegex(line, WELCOME)
            return sock, True

        served = self.exhaust(server, connect_one)
        self.assertGreater(len(served), 10)
        server.wait_for_log(r"refused a connection: out of file descriptors")
        self.check_no_spin(server)
        left = server.log_count(r"Client \d+ left ")
        for sock in served[:3]:
            sock.close()
        # Their fds are free once the server has seen them go (a slow server, under a sanitizer
        # on a busy machine, may not have yet: a newcomer then meets the full table again).
        deadline = time.monotonic() + TIMEOUT
        while server.log_count(r"Client \d+ left ") < left + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(server.log_count(r"Client \d+ left "), left + 3)
        # Room again: a newcomer is welcomed (the reserve fd was taken back after the drop).
        member = Member(server)
        self.addCleanup(member.sock.close)
        self.assertEqual(server.stop(), 0)
        self.assertEqual(self.own_errors(server), [])

    def test_upload_server(self):
        server = self.server("upload-server", "--max-clients", "1000")

        def connect_one():
            # An upload in progress holds its connection; a dropped one reads EOF at once.
            sock = server.connect()
            self.addCleanup(sock.close)
            sock.sendall(b"MUXUP/1 10 held.bin\n12345")
            sock.settimeout(0.5)
            try:
                if sock.recv(100) == b"":
                    return sock, False
            except socket.timeout:
                return sock, True  # still waiting for the rest of its upload: served
            except ConnectionResetError:
                return sock, False
            finally:
                sock.settimeout(TIMEOUT)
            self.fail("an upload in progress got a reply")

        served = self.exhaust(server, connect_one)
        self.assertGreater(len(served), 10)
        server.wait_for_log(r"out of file descriptors")
        self.check_no_spin(server)
        for sock in served[:3]:
            sock.close()
        with server.connect() as sock:
            sock.sendall(b"MUXUP/1 2 ok.bin\nok")
            sock.shutdown(socket.SHUT_WR)
            self.assertRegex(LineReader(sock).expect_eof().decode(), r"^OK 2 [0-9a-f]{32}\n$")
        self.assertEqual(server.stop(), 0)
        self.assertEqual(self.own_errors(server), [])


class StuckForkChild(unittest.TestCase):
    def test_a_child_that_stops_reading_its_link_is_killed_and_the_room_goes_on(self):
        # --max-queue 128K: the parent gives up on a link 4 x that + 1 MiB behind (1.5 MiB).
        server = Server("chat-server", "--serve", "fork", "--max-queue", "128K")
        self.addCleanup(server.stop)
        stuck = Member(server)
        self.addCleanup(stuck.sock.close)
        pid = int(server.wait_for_log(rf"{stuck.name} joined from \S+ \(pid (\d+)\)").group(1))
        os.kill(pid, signal.SIGSTOP)  # its process reads neither its client nor its link
        self.addCleanup(lambda: os.path.exists(f"/proc/{pid}") and os.kill(pid, signal.SIGKILL))
        talkers = [Member(server) for _ in range(6)]
        for index, talker in enumerate(talkers):
            self.addCleanup(talker.sock.close)
            self.assertEqual(talker.reader.lines(len(talkers) - 1 - index),
                             [f"* {other.name} joined" for other in talkers[index + 1:]])

        # Each talker sends 450 KB (within any flood allowance) and reads everything; together
        # far more than the parent keeps for one link, so the stopped child's link fills up and
        # the parent gives up on it.
        count, text = 450, "z" * 1000
        received = {talker.name: [] for talker in talkers}

        def read_all(talker):
            expected = (len(talkers) - 1) * count + 1
            while len(received[talker.name]) < expected:
                received[talker.name].append(talker.reader.line(timeout=60))

        readers = [threading.Thread(target=read_all, args=(talker,)) for talker in talkers]
        for thread in readers:
            thread.start()
        # In rounds that every reader finishes before the next: an honest reader then never
        # falls --max-queue behind (a reader thread slowed by the others would be dropped as too
        # slow too, and in fork mode its process killed as stuck), while the stopped child's link
        # takes everything and overflows after about six rounds.
        per_round = 50
        for first in range(0, count, per_round):
            for talker in talkers:
                talker.send("".join(f"{talker.name} {number:03d} {text}\n"
                                    for number in range(first, min(first + per_round, count))))
            sent = (len(talkers) - 1) * min(first + per_round, count)
            wait_until(lambda sent=sent: all(len(received[t.name]) >= sent for t in talkers)
                       or not all(thread.is_alive() for thread in readers),
                       f"every reader has the lines of round {first // per_round + 1}", timeout=60)
        for thread in readers:
            thread.join(70)
            self.assertFalse(thread.is_alive())
        for talker in talkers:
            got = received[talker.name]
            for other in talkers:
                if other is not talker:
                    self.assertEqual([line for line in got if line.startswith(f"[{other.name}]")],
                                     [f"[{other.name}]: {other.name} {n:03d} {text}" for n in range(count)])
            self.assertEqual([line for line in got if not line.startswith("[")],
                             [f"* {stuck.name} left (too slow)"])
        server.wait_for_log(rf"{stuck.name} left \(too slow: its process stopped reading\)")
        server.wait_for_log(rf"client process {pid} ended: killed by signal 9")
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), f"process {pid} reaped")
        self.assertEqual(server.stop(), 0)
        self.assertEqual(server.stderr_lines, [])


class ChatSessionWayOut:
    """A session's states from the outside: open, half-open (the client shut its side), draining
    (leaving with output queued), lingering (waiting a bounded time for the client's FIN), closed
    (its fd gone). Run in both serve modes."""

    MODE = "single"

    def setUp(self):
        self.server = Server("chat-server", "--serve", self.MODE, "--max-queue", "4M")
        self.addCleanup(self.server.stop)
        # A welcomed client proves the loop runs (its signalfd is made after the first log
        # line); it holds one fd in this process in either mode (its socket, or its link).
        probe = Member(self.server)
        self.baseline = fd_count(self.server.proc.pid) - 1
        probe.sock.close()
        wait_until(lambda: fd_count(self.server.proc.pid) == self.baseline, "the probe gone")
        # Registered first, so it runs last, after every client socket is closed.
        self.addCleanup(self.check_closed)

    def check_closed(self):
        # closed: every session's fd is gone again, and the server stops cleanly
        pid = self.server.proc.pid
        try:
            wait_until(lambda: fd_count(pid) == self.baseline, f"fd count back to {self.baseline}")
        except AssertionError:
            sockets = muxtest.subprocess.run(["ss", "-tanpi"], capture_output=True, text=True).stdout
            raise AssertionError(f"fd count {fd_count(pid)}, baseline {self.baseline}; "
                                 f"{[line for line in sockets.splitlines() if f'pid={pid},' in line]}; "
                                 f"log {self.server.stdout_lines[-5:]}")
        self.assertEqual(self.server.stop(), 0)
        self.assertEqual(self.server.stderr_lines, [])

    def member(self, **kwargs):
        member = Member(self.server, **kwargs)
        self.addCleanup(member.sock.close)
        return member

    def test_half_close_delivers_the_partial_line_then_leaves(self):
        a = self.member()
        b = self.member()
        self.assertEqual(a.line(), f"* {b.name} joined")
        b.send("bye without a newline")
        b.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(a.reader.lines(2), [f"[{b.name}]: bye without a newline", f"* {b.name} left"])
        self.assertEqual(b.reader.expect_eof(), b"")
        self.server.wait_for_log(rf"{b.name} left \(closed by client\)")
        b.sock.close()

    def test_quit_drains_the_whole_queue_before_closing(self):
        a = self.member()
        slow = self.member(rcvbuf=4096)  # reads nothing until it has quit
        self.assertEqual(a.line(), f"* {slow.name} joined")
        lines = [f"{number:03d} " + "q" * 1000 for number in range(400)]  # ~400 KB queued
        a.send("".join(line + "\n" for line in lines))
        a.send("/who\n")  # answered after every relay above was queued for the slow member
        self.assertEqual(a.line(), f"* online (2): {a.name}, {slow.name}")
        slow.send("/quit\n")
        self.assertEqual(a.line(), f"* {slow.name} left")
        received = slow.reader.expect_eof(timeout=TIMEOUT).decode().splitlines()
        self.assertEqual(received, [f"[{a.name}]: {line}" for line in lines])
        self.server.wait_for_log(rf"{slow.name} left \(quit\)")
        slow.sock.close()

    def test_linger_after_quit_is_bounded(self):
        a = self.member()
        a.send("/quit\n")
        self.assertEqual(a.reader.expect_eof(), b"")  # the server half-closed: lingering
        # The client never closes and keeps talking: the server stops waiting for its FIN after
        # the linger time and closes, which the client sees as a reset.
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                a.send(b"still talking\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            self.assertLess(time.monotonic(), deadline, "the server kept lingering")
            time.sleep(0.05)
        self.server.wait_for_log(rf"{a.name} left \(quit\)")
        a.sock.close()


class SingleModeWayOut(ChatSessionWayOut, unittest.TestCase):
    MODE = "single"


class ForkModeWayOut(ChatSessionWayOut, unittest.TestCase):
    MODE = "fork"


if __name__ == "__main__":
    muxtest.main()
