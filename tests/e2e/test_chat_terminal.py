"""End-to-end tests of `mux chat-client` at a terminal (issue 13, "Chat client"), through a
pseudo-terminal: a resize redraws prompt and draft once, a 30,000-character paste is a handful of
writes rather than one redraw per character, your own lines appear as the room sees them, Tab
completes nicks, and --timestamps stamps what is shown."""

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
import unittest

import muxtest
from muxtest import LineReader, Server
from test_chat_client import Peer, PipeReader, _Screen, finish_client, start_client

TIMEOUT = muxtest.DEFAULT_TIMEOUT
PASTE = 30000


def set_size(fd, rows, columns):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class OnATerminal(unittest.TestCase):
    def setUp(self):
        self.server = Server("chat-server", "--max-line", "65536", *muxtest.CHAT_UNLIMITED)
        self.addCleanup(self.server.stop)
        self.peer = Peer(self.server)
        self.addCleanup(self.peer.close)

    def start(self, *args, wrapper=(), env=None, name="Client 2"):
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        set_size(master, 24, 80)
        client = subprocess.Popen([*wrapper, muxtest.MUX, "chat-client", "--port", str(self.server.port), *args],
                                  stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                  env={**(env or os.environ), "TERM": "xterm", "HOME": "/nonexistent"})
        os.close(slave)
        self.addCleanup(finish_client, client)
        screen = _Screen(master)
        screen.wait_for(f"* welcome, you are {name}".encode())
        screen.wait_for(b"> ")
        self.assertEqual(self.peer.reader.line(), f"* {name} joined")
        return client, master, screen

    def test_a_resize_redraws_prompt_and_draft_once(self):
        client, master, screen = self.start()
        os.write(master, b"short draft")
        screen.wait_for(b"short draft")
        for columns in (60, 100, 40):
            before = len(screen.data)
            set_size(master, 24, columns)
            client.send_signal(signal.SIGWINCH)
            wait_anywhere(screen, b"> short draft", before)
            drawn = screen.data[before:]
            # One copy, drawn after the old one was erased (not appended to it).
            self.assertEqual(drawn.count(b"short draft"), 1, drawn)
            self.assertIn(b"\x1b[J> short draft", drawn)
        os.write(master, b"!\r")
        self.assertEqual(self.peer.reader.line(), "[Client 2]: short draft!")

    def test_a_paste_of_30000_characters_is_a_few_writes(self):
        strace = shutil.which("strace")
        if not strace:
            self.skipTest("strace is not installed")
        log = os.path.join(tempfile.mkdtemp(prefix="mux-paste-"), "writes")
        self.addCleanup(shutil.rmtree, os.path.dirname(log))
        client, master, screen = self.start(
            wrapper=(strace, "-f", "-qq", "-o", log, "-e", "trace=write", "-e", "signal=none"),
            env=muxtest.env_for_ptrace())
        text = bytes(ord("a") + i % 26 for i in range(PASTE))
        writes_before = self.count_screen_writes(log)
        start = len(screen.data)
        # Written from a thread: the write blocks while the client's input queue is full, and the
        # client blocks while nobody reads what it draws.
        paster = threading.Thread(target=os.write, args=(master, text + b"\r"))
        paster.start()
        # Its own line, as the room sees it, then a fresh prompt.
        wait_anywhere(screen, b"[Client 2]: " + text[:40], start)
        wait_anywhere(screen, text[-40:] + b"\r\n> ", start)
        paster.join(TIMEOUT)
        self.assertEqual(self.peer.reader.line(), "[Client 2]: " + text.decode())
        # Each read of the terminal (up to 4 KiB) is inserted and drawn once: about eight reads,
        # a redraw each, the sent line and the fresh prompt. Drawing every key (the old way) was
        # one write per character: 30,000.
        writes = self.count_screen_writes(log) - writes_before
        self.assertLess(writes, 100, f"{writes} writes to the terminal for a {PASTE}-character paste")

    @staticmethod
    def count_screen_writes(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if re.match(r"^\d+\s+write\(1,", line))

    def test_own_lines_appear_as_the_room_sees_them(self):
        _, master, screen = self.start()
        os.write(master, b"hello room\r")
        self.assertEqual(self.peer.reader.line(), "[Client 2]: hello room")
        screen.wait_for(b"[Client 2]: hello room\r\n> ")
        # What libedit echoed was taken off the screen before the room's form was printed.
        self.assertIn(b"> hello room\r\n\x1b[1A\r\x1b[J", screen.data)
        os.write(master, b"/nick zed\r")
        screen.wait_for(b"* Client 2 is now zed")
        self.assertEqual(self.peer.reader.line(), "* Client 2 is now zed")
        os.write(master, b"//slash\r")
        self.assertEqual(self.peer.reader.line(), "[zed]: /slash")
        screen.wait_for(b"[zed]: /slash\r\n> ")
        start = len(screen.data)
        os.write(master, b"/who\r")
        wait_anywhere(screen, b"> /who\r\n", start)  # a command stays as typed
        wait_anywhere(screen, b"* online (2): Client 1, zed\r\n", start)

    def test_tab_completes_nicks_from_notices_and_who(self):
        bob = Peer(self.server)  # here before the client: learned only from /who
        self.addCleanup(bob.close)
        bob.sock.sendall(b"/nick bob\n")
        self.assertEqual(self.peer.reader.lines(2), ["* Client 2 joined", "* Client 2 is now bob"])
        _, master, screen = self.start(name="Client 3")
        self.peer.sock.sendall(b"/nick alice\n")
        screen.wait_for(b"* Client 1 is now alice")
        self.assertEqual(self.peer.reader.line(), "* Client 1 is now alice")
        os.write(master, b"al\thi\r")
        self.assertEqual(self.peer.reader.line(), "[Client 3]: alice: hi")
        start = len(screen.data)
        os.write(master, b"/who\r")
        wait_anywhere(screen, b"* online (3): ", start)
        os.write(master, b"thanks b\t!\r")
        self.assertEqual(self.peer.reader.line(), "[Client 3]: thanks bob !")


def wait_anywhere(screen, needle, start):
    """Waits until `needle` is on `screen` anywhere after byte `start` (_Screen.wait_for looks only
    at what arrives after the call; a long line arrives in many reads)."""
    deadline = time.monotonic() + TIMEOUT
    while needle not in screen.data[start:]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} not shown; screen so far: {screen.data[-400:]!r}")
        ready, _, _ = select.select([screen.master], [], [], remaining)
        if ready:
            screen.data += os.read(screen.master, 65536)


class Timestamps(unittest.TestCase):
    def test_timestamps_prefix_each_line_shown(self):
        server = Server("chat-server")
        self.addCleanup(server.stop)
        peer = Peer(server)
        self.addCleanup(peer.close)
        client = start_client(server.port, "--timestamps")
        self.addCleanup(finish_client, client)
        stdout = PipeReader(client.stdout)
        self.assertRegex(stdout.line().decode(), r"^\d\d:\d\d:\d\d \* welcome, you are Client 2 \(")
        self.assertEqual(peer.reader.line(), "* Client 2 joined")
        peer.sock.sendall(b"ping\n")
        self.assertRegex(stdout.line().decode(), r"^\d\d:\d\d:\d\d \[Client 1\]: ping\n$")
        client.stdin.close()
        self.assertEqual(client.wait(TIMEOUT), 0)


if __name__ == "__main__":
    muxtest.main()
