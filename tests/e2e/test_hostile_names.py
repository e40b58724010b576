"""End-to-end: upload names a hostile client chose (C1 controls as raw bytes and as U+009B,
U+202E, zero-width characters, invalid and overlong UTF-8) never reach a directory entry or the
upload-server's log raw: the one sanitizer (core/base/sanitize) turns each into '_'. Both serve modes."""

import os
import shutil
import tempfile
import unittest

import muxtest
from muxtest import Server

TIMEOUT = muxtest.DEFAULT_TIMEOUT
RAW_FORBIDDEN = [b"\x9b", b"\xc2\x9b", b"\xe2\x80\xae", b"\xe2\x80\x8b", b"\xff", b"\xc0\xaf",
                 b"\x1b"]




def percent(raw):
    return "".join(chr(b) if (chr(b).isascii() and chr(b).isalnum()) or chr(b) in "-._~"
                   else f"%{b:02X}" for b in raw)


class HostileNameCases:
    MODE = "single"

    def test_hostile_names_are_saved_and_logged_sanitized(self):
        directory = tempfile.mkdtemp(prefix="mux-hostile-names-")
        self.addCleanup(shutil.rmtree, directory, True)
        server = Server("upload-server", "--serve", self.MODE, "--output-dir", directory,
                              "-v")
        self.addCleanup(server.stop)
        names = {
            b"a\x9bb.txt": "a_b.txt",
            b"c\xc2\x9b" + b"31m.txt": "c_31m.txt",
            b"invoice\xe2\x80\xaetxt.exe": "invoice_txt.exe",
            b"zero\xe2\x80\x8bwidth": "zero_width",
            b"bad\xff\xc0\xaf": "bad___",
            b"esc\x1b[2J": "esc_[2J",
        }
        for raw, expected in names.items():
            body = b"payload\n"
            sock = server.connect()
            sock.sendall(f"MUXUP/1 {len(body)} {percent(raw)}\n".encode() + body)
            sock.shutdown(1)
            reply = muxtest.LineReader(sock).line(TIMEOUT)
            sock.close()
            self.assertTrue(reply.startswith("OK 8 "), (raw, reply))
            server.wait_for_log(r"Saved \[Client \d+\] upload as .*/" + expected.replace(".", r"\.")
                                .replace("[", r"\[") + "$")
        entries = sorted(os.listdir(os.fsencode(directory)))
        self.assertEqual(entries, sorted(name.encode() for name in names.values()))
        with server._cond:
            log = b"".join(server.raw_stdout)
        for raw in RAW_FORBIDDEN:
            self.assertNotIn(raw, log)
        log.decode("utf-8")  # valid UTF-8 throughout
        self.assertEqual(server.stop(), 0)
        self.assertEqual(server.stderr_lines, [])


class SingleModeTests(HostileNameCases, unittest.TestCase):
    MODE = "single"


class ForkModeTests(HostileNameCases, unittest.TestCase):
    MODE = "fork"


if __name__ == "__main__":
    muxtest.main()
