"""Uploads that survive interruption: --limit-rate (which the other tests use to stop an upload
part-way), automatic resume of named uploads, and --retry. The real binary on loopback, real
kills (SIGKILL of the client and of the server), hashes checked with xxhsum."""

import errno
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import muxtest
import test_tls

MIB = 1 << 20
TIMEOUT = muxtest.DEFAULT_TIMEOUT
KEY = "00112233445566778899aabbccddeeff"
# The file a client sends at --limit-rate 2M until the test kills it (or the server) past the
# first checkpoint: 7.5 s of data after it, however late a loaded machine lets the test act (4 MiB
# left 1.5 s, once too little at load 15). The kill normally comes at once, so it costs nothing.
PART_WAY = 16 * MIB
EMPTY_HASH = "99aa06d3014798d86001c324468d497f"  # XXH3-128 of nothing


def setUpModule():
    test_tls.setUpModule()


def tearDownModule():
    test_tls.tearDownModule()


class RateLimitTests(muxtest.UploadCase):
    def test_limit_rate_caps_the_send_rate(self):
        server = self.upload_server()
        path = self.make_file("slow.bin", 2 * MIB)
        started = time.monotonic()
        code, out, err = self.upload_client(server, path, "--limit-rate", "1M")
        elapsed = time.monotonic() - started
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn(f"Sent {2 * MIB} bytes", out)
        self.assertIn(muxtest.xxh128(path), out)
        # 2 MiB at 1 MiB/s with a tenth of a second of burst: at least 1.9 s; 1.5 leaves room.
        self.assertGreaterEqual(elapsed, 1.5)
        self.assertLess(elapsed, 30)

    def test_limit_rate_refuses_a_bad_value(self):
        server = self.upload_server()
        path = self.make_file("x.bin", 10)
        code, out, err = self.upload_client(server, path, "--limit-rate", "fast")
        self.assertEqual(code, 2, err)
        self.assertIn("--limit-rate", err)
        code, out, err = self.upload_client(server, path, "--limit-rate", "10")
        self.assertEqual(code, 2, err)



class ResumeCase(muxtest.UploadCase):
    """Uploads interrupted by real kills and continued by running the same command again."""
    TLS = False
    SYNC = "none"

    def setUp(self):
        super().setUp()
        self.state = os.path.join(self.work, "state")  # XDG_STATE_HOME: the upload keys
        self.rng = random.Random()

    def server_flags(self):
        flags = ["--output-dir", self.out, "--sync", self.SYNC]
        if self.TLS:
            flags += test_tls.PKI.server_flags()
        return flags

    def start_server(self, *extra):
        return self.upload_server(*self.server_flags(), *extra)

    def client_args(self, server, path, *args):
        host = ["--host", "localhost", "--tls-ca", test_tls.PKI.ca] if self.TLS else []
        return [muxtest.MUX, "upload-client", "--port", str(server.port), *host, "--file", path,
                *args]

    def env(self, state=None):
        env = dict(os.environ)
        env["XDG_STATE_HOME"] = state or self.state
        return env

    def run_client(self, server, path, *args, state=None):
        result = subprocess.run(self.client_args(server, path, *args), capture_output=True,
                                timeout=120, env=self.env(state))
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    def start_client(self, server, path, *args, state=None):
        return subprocess.Popen(self.client_args(server, path, *args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(state))

    def kill_client_part_way(self, server, path, *args, state=None):
        """Starts a rate-limited client and kills it (SIGKILL) at a random moment part-way."""
        client = self.start_client(server, path, "--limit-rate", "2M", *args, state=state)
        # Past the first checkpoint (a fixed sleep could end before the client even connected,
        # on a loaded machine or under the sanitizers), then somewhere in the next quarter MiB.
        self.wait_for_checkpoint()
        time.sleep(self.rng.uniform(0, 0.125))
        logged = len(server.stdout_lines)  # this interruption's line, not an earlier one's
        client.kill()
        client.communicate(timeout=TIMEOUT)
        server.wait_for_log(r"incomplete", start=logged)
        self.wait_until_unlocked()

    def wait_until_unlocked(self):
        """With --sync full the interrupted connection's last checkpoint is flushed on the helper
        thread after the log line; until then the partial is locked (a new try reads ERR busy)."""
        muxtest.wait_until_unlocked(self.out, 3 * TIMEOUT)

    def age_partials(self, seconds):
        """Makes every partial (data and record) `seconds` old: --keep-partial measures the age
        from their modification time, so a test moves it back instead of sleeping (a sleep of
        the exact length also raced with the running server's own sweep on a loaded machine).
        Only once nobody holds them (wait_until_unlocked): a checkpoint would renew it."""
        past = time.time() - seconds
        for name in self.hidden():
            os.utime(os.path.join(self.out, name), (past, past))

    def assert_resumed(self, result, path, name=None):
        code, out, err = result
        size = os.path.getsize(path)
        self.assertEqual((code, err), (0, ""), out)
        match = re.search(r"^Resumed at (\S+ \S+) of (\S+ \S+)$", out, re.M)
        self.assertIsNotNone(match, out)
        summary = re.search(rf"^Sent (\d+) bytes in .*, verified ([0-9a-f]{{32}}) of all {size} "
                            rf"bytes, saved as (\S+)$", out, re.M)
        self.assertIsNotNone(summary, out)
        self.assertLess(int(summary.group(1)), size)  # only the rest went out this run
        self.assertEqual(summary.group(2), muxtest.xxh128(path))
        saved = summary.group(3)
        self.assertEqual(saved, name or os.path.basename(path))
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, saved)), muxtest.xxh128(path))
        return int(summary.group(1))

    def assert_not_resumed(self, result, path, saved):
        code, out, err = result
        self.assertEqual((code, err), (0, ""), out)
        self.assertNotIn("Resumed at", out)
        self.assertRegex(out, rf"Sent {os.path.getsize(path)} bytes in .*, verified "
                              rf"{muxtest.xxh128(path)}, saved as {re.escape(saved)}\n")
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, saved)), muxtest.xxh128(path))

    def hidden(self):
        return [name for name in self.saved() if name.startswith(".")]

    # --- the cases ---------------------------------------------------------------------------

    def test_client_killed_then_the_same_command_resumes(self):
        server = self.start_server()
        path = self.make_file("big.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        self.assertEqual(len(self.hidden()), 2, self.saved())  # the partial and its record
        self.assert_resumed(self.run_client(server, path), path)
        self.assertEqual(self.saved(), ["big.bin"])  # nothing hidden left behind
        self.assertEqual(os.listdir(os.path.join(self.state, "mux")), [])  # the key is forgotten

    def test_server_killed_restarted_then_the_client_resumes(self):
        server = self.start_server()
        path = self.make_file("big.bin", PART_WAY)
        client = self.start_client(server, path, "--limit-rate", "2M")
        # Past the first checkpoint (1 MiB), then somewhere in the next quarter MiB: a fixed
        # sleep fell before it on a loaded machine (and under the sanitizers), which left
        # nothing to resume.
        self.wait_for_checkpoint()
        time.sleep(self.rng.uniform(0, 0.125))
        self.kill_server(server)
        self.assertEqual(client.wait(timeout=TIMEOUT), 1)
        client.stdout.close()
        client.stderr.close()
        # The same address: the client's key is per server (and file).
        restarted = self.start_server("--port", str(server.port))
        self.assert_resumed(self.run_client(restarted, path), path)
        self.assertEqual(self.saved(), ["big.bin"])

    def test_a_changed_file_starts_over_with_a_message(self):
        server = self.start_server()
        path = self.make_file("doc.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        with open(path, "r+b") as f:  # the same file (inode), other bytes at its start
            f.write(os.urandom(1000))
        code, out, err = self.run_client(server, path)
        self.assertEqual((code, err), (0, ""), out)
        self.assertRegex(out, r"doc\.bin changed since the interrupted upload \(.* of it were on "
                              r"the server\): starting over\n")
        self.assertRegex(out, rf"Sent {PART_WAY} bytes in .*, verified {muxtest.xxh128(path)}, "
                              r"saved as doc\.bin\n")
        self.assertEqual(self.saved(), ["doc.bin"])

    def test_no_resume_starts_over(self):
        server = self.start_server()
        path = self.make_file("a.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        self.assert_not_resumed(self.run_client(server, path, "--no-resume"), path, "a.bin")
        self.assertEqual(self.saved(), ["a.bin"])

    def test_another_client_with_the_same_name_gets_its_own_file(self):
        server = self.start_server()
        path = self.make_file("same.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        other = os.path.join(self.work, "other")
        os.mkdir(other)
        other_path = os.path.join(other, "same.bin")
        with open(other_path, "wb") as f:
            f.write(os.urandom(3 * MIB))
        # Another uploader (its own key store): never sees the partial.
        self.assert_not_resumed(
            self.run_client(server, other_path, state=os.path.join(self.work, "state2")),
            other_path, "same.bin")
        # The first one still continues its own, saved beside it.
        self.assert_resumed(self.run_client(server, path), path, name="same.bin.1")
        self.assertEqual(self.saved(), ["same.bin", "same.bin.1"])

    def finish_without_done(self, server, path):
        """The rest of an interrupted upload, sent by hand with the client's own key (resume-ask,
        confirm=1) up to the server's OK, which is then never confirmed: what a client killed
        (or a link cut) after the commit and before it read the OK leaves. Returns the socket,
        still open."""
        key = self.client_key()
        with open(path, "rb") as f:
            data = f.read()
        name = os.path.basename(path)
        sock = self.connect(server)
        sock.sendall(f"MUXUP/1 {len(data)} {name} resume={key} resume-ask=1 "
                     f"confirm=1\n".encode())
        reader = muxtest.LineReader(sock)
        offset = int(reader.line(TIMEOUT).split()[1])
        sock.sendall(f"FROM {offset}\n".encode() + data[offset:])
        self.assertEqual(reader.line(TIMEOUT), f"OK {len(data)} {muxtest.xxh128(path)} confirm=1")
        return sock

    def client_key(self):
        """The upload key the client keeps for the one upload it left unfinished."""
        keys = os.listdir(os.path.join(self.state, "mux"))
        self.assertEqual(len(keys), 1, keys)
        with open(os.path.join(self.state, "mux", keys[0])) as f:
            return f.read().strip()

    def test_a_rerun_while_an_earlier_connection_holds_the_upload_waits_for_it(self):
        """ERR busy: an earlier connection of the same upload still holds its partial (a killed
        run's fork-mode child still saving it, its last checkpoint still being flushed; here one
        held open by hand with the client's key). The same command run now, without --retry,
        waits for it and then resumes: no name.1, nothing hidden left."""
        server = self.start_server()
        path = self.make_file("held.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        key = self.client_key()
        with open(path, "rb") as f:
            data = f.read()
        holder = self.connect(server)
        client = None
        try:
            holder.sendall(f"MUXUP/1 {len(data)} held.bin resume={key} resume-ask=1 "
                           f"confirm=1\n".encode())
            offset = int(muxtest.LineReader(holder).line(TIMEOUT).split()[1])
            holder.sendall(f"FROM {offset}\n".encode() + data[offset:offset + 1000])
            client = self.start_client(server, path)
            seen = self.read_until(client.stdout, r"waiting for it to end: try 1 of 6 in 1 s\n")
            holder.close()  # the earlier connection ends: its partial is the rerun's to continue
            out, err = client.communicate(timeout=6 * TIMEOUT)
        finally:
            holder.close()
            if client is not None and client.poll() is None:
                client.kill()
                client.communicate()
        self.assertRegex(seen, rf"^{self.host()}:{server.port} refused the upload: busy: this "
                               r"upload is in progress on another connection; waiting for it to "
                               r"end: try 1 of 6 in 1 s\n$")
        self.assert_resumed((client.returncode, seen + out.decode(), err.decode()), path)
        self.assertEqual(self.saved(), ["held.bin"])  # nothing hidden left
        self.assertEqual(os.listdir(os.path.join(self.state, "mux")), [])

    def host(self):
        return "localhost" if self.TLS else muxtest.HOST

    def assert_already_there(self, server, path):
        """The same command again: the server offers all of the file (its completion record),
        the client checks the hash, sends nothing, says so and confirms (no name.1, nothing
        hidden left)."""
        size = os.path.getsize(path)
        code, out, err = self.run_client(server, path)
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn(f"{path} is on the server already (16.0 MiB, verified): nothing to send\n",
                      out)
        self.assertRegex(out, rf"Sent 0 bytes in .*, verified {muxtest.xxh128(path)} of all "
                              rf"{size} bytes, saved as {re.escape(os.path.basename(path))}\n$")
        server.wait_for_log(rf"{re.escape(os.path.basename(path))} was saved already "
                            rf"\({size} bytes\): nothing sent again")
        self.assertEqual(self.saved(), [os.path.basename(path)])
        self.assertEqual(os.listdir(os.path.join(self.state, "mux")), [])

    def test_a_file_whose_ok_was_lost_is_not_sent_again(self):
        server = self.start_server()
        path = self.make_file("lost.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        logged = len(server.stdout_lines)
        self.finish_without_done(server, path).close()
        # The server waits for DONE; the connection's end without it leaves the record.
        server.wait_for_log(r"Saved \[Client \d+\] upload as", start=logged)
        self.assertEqual(len(self.hidden()), 1, self.saved())
        self.assert_already_there(server, path)
        # A changed file under the same key starts over, beside the saved one.
        self.kill_client_part_way(server, path)
        self.finish_without_done(server, path).close()
        with open(path, "r+b") as f:
            f.write(os.urandom(1000))
        code, out, err = self.run_client(server, path)
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("lost.bin changed since the interrupted upload (16.0 MiB of it were on the "
                      "server): starting over", out)
        self.assertEqual(self.saved(), ["lost.bin", "lost.bin.1", "lost.bin.2"],
                         "\n".join(server.stdout_lines[-12:]))
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "lost.bin.2")), muxtest.xxh128(path))
        # Another uploader of the same name and size (its own key) is told nothing of it.
        with self.connect(server) as sock:
            sock.sendall(f"MUXUP/1 {PART_WAY} lost.bin resume=ffeeddccbbaa99887766554433221100 "
                         "resume-ask=1 confirm=1\n".encode())
            self.assertEqual(muxtest.LineReader(sock).line(TIMEOUT), f"RESUME 0 {EMPTY_HASH}")

    def test_server_killed_after_the_commit_then_the_file_is_not_sent_again(self):
        server = self.start_server()
        path = self.make_file("commit.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        logged = len(server.stdout_lines)
        sock = self.finish_without_done(server, path)
        try:
            # Committed (the OK is out), not confirmed: then the server dies.
            server.wait_for_log(r"Saved \[Client \d+\] upload as", start=logged)
            self.kill_server(server)
        finally:
            sock.close()
        # The same address: the client's key is per server (and file).
        restarted = self.start_server("--port", str(server.port))
        self.assert_already_there(restarted, path)

    def test_a_wrong_key_is_told_nothing_of_the_partial(self):
        server = self.start_server()
        path = self.make_file("k.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        size = os.path.getsize(path)
        # The same name and size with a key nobody used, and with a malformed key.
        for key in ["ffeeddccbbaa99887766554433221100", KEY]:
            with self.connect(server) as sock:
                sock.sendall(f"MUXUP/1 {size} k.bin resume={key} resume-ask=1\n".encode())
                self.assertEqual(muxtest.LineReader(sock).line(TIMEOUT), f"RESUME 0 {EMPTY_HASH}")
        with self.connect(server) as sock:
            sock.sendall(f"MUXUP/1 {size} k.bin resume=NOTAKEY resume-ask=1\n".encode())
            self.assertEqual(muxtest.LineReader(sock).expect_eof(TIMEOUT),
                             b"ERR bad header: resume= is not an upload key (32 hex digits)\n")
        # The rightful owner still resumes.
        self.assert_resumed(self.run_client(server, path), path)

    def test_a_partial_older_than_keep_partial_is_not_continued(self):
        # An hour: the running server sweeps every 10 minutes, so here the claim itself must
        # see that the partial (made 61 minutes old) expired.
        server = self.start_server("--keep-partial", "1h")
        path = self.make_file("old.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        self.age_partials(61 * 60)
        self.assert_not_resumed(self.run_client(server, path), path, "old.bin")
        # And a restarted server removes an expired one that nobody came back for.
        self.kill_client_part_way(server, path, "--name", "gone.bin")
        self.kill_server(server)
        self.assertEqual(len(self.hidden()), 2, self.saved())
        self.age_partials(61 * 60)
        restarted = self.start_server("--keep-partial", "1h")
        restarted.wait_for_log(r"removed 1 partial upload\(s\) older than --keep-partial from ")
        self.assertEqual(self.hidden(), [])

    def test_expired_partials_are_removed_while_the_server_runs(self):
        if self.TLS:
            self.skipTest("the sweep is the same with TLS: the plaintext classes")
        # 8 s: far longer than the kill takes (the record's time is its last checkpoint's), so
        # only the partial made older below expires; swept every 2 s.
        server = self.start_server("--keep-partial", "8s")
        path = self.make_file("swept.bin", PART_WAY)
        self.kill_client_part_way(server, path)
        self.assertEqual(len(self.hidden()), 2, self.saved())
        self.age_partials(60)
        # Every quarter of --keep-partial (at least 1 s) the running server sweeps.
        server.wait_for_log(r"removed 1 partial upload\(s\) older than --keep-partial from ",
                            timeout=3 * TIMEOUT)
        self.assertEqual(self.hidden(), [])
        # The uploader comes back after the expiry: a clean start, the whole file again.
        self.assert_not_resumed(self.run_client(server, path), path, "swept.bin")
        self.assertEqual(self.saved(), ["swept.bin"])

    def test_disk_full_during_resume_keeps_the_checkpoint(self):
        if self.TLS:
            self.skipTest("the disk is the same with TLS: the plaintext classes")
        # A real full disk: a 40 MiB tmpfs as --output-dir (mounting needs root).
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", self.out],
                                 capture_output=True)
        if mounted.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)  # after the unmount
        self.addCleanup(subprocess.run, ["umount", "-l", self.out], capture_output=True)
        server = self.start_server()
        path = self.make_file("full.bin", 24 * MIB)
        client = self.start_client(server, path, "--limit-rate", "2M")
        self.wait_for_checkpoint()
        client.kill()
        client.communicate(timeout=TIMEOUT)
        server.wait_for_log(r"incomplete")
        self.wait_until_unlocked()
        kept = self.wait_for_checkpoint()
        # Fill the disk so that the resumed data stops short of the next checkpoint (the next
        # MiB boundary): half the distance to it stays free (in whole pages, as tmpfs counts
        # them; the partial's last page may take a little more). 1 MiB left free used to let a
        # resume from 1.2 MiB reach 2 MiB, checkpoint there and keep more than `kept`.
        gap = (kept // MIB + 1) * MIB - kept
        room = gap // 2 // 4096 * 4096
        part = [name for name in self.hidden() if name.endswith(".part")][0]
        allocated = os.stat(os.path.join(self.out, part)).st_blocks * 512
        free = os.statvfs(self.out).f_bavail * os.statvfs(self.out).f_frsize
        filler = os.path.join(self.out, "filler")
        self.fill(filler, free + max(allocated - kept, 0) - room)
        code, out, err = self.run_client(server, path)
        self.assertEqual(code, 1, out)
        self.assertRegex(err, rf"^mux: error: 127\.0\.0\.1:{server.port} refused the upload: disk "
                              r"error: No space left on device\n$")
        self.assertIn("Resumed at ", out)
        # The partial is kept as far as its checkpoint (and no further); with room again the same
        # command continues from there and the file is whole.
        self.assertEqual(len(self.hidden()), 2, self.saved())
        after = self.wait_for_checkpoint()
        self.assertEqual(os.path.getsize(os.path.join(self.out, part)), after)
        if gap > 64 * 1024:  # else a page's rounding could reach the boundary: rare, still valid
            self.assertEqual(after, kept)
        os.remove(filler)
        self.assert_resumed(self.run_client(server, path), path)
        self.assertEqual(self.saved(), ["full.bin"])

    @staticmethod
    def fill(path, size):
        """Writes up to `size` zero bytes to `path`, fewer when the disk fills first (the part of
        the partial past its checkpoint, if any, is freed only when the resume cuts it back)."""
        chunk = b"\0" * (256 * 1024)
        with open(path, "wb", buffering=0) as f:
            while size > 0:
                try:
                    size -= f.write(chunk[:size])
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    return

    def test_raw_and_old_style_uploads_are_unchanged(self):
        if self.TLS:
            self.skipTest("raw uploads over plain TCP (ncat): the plaintext classes")
        server = self.start_server()
        data = os.urandom(100_000)
        with self.connect(server) as sock:  # a raw upload: no header, no RESUME line
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            reply = muxtest.LineReader(sock).expect_eof(TIMEOUT).decode()
        self.assertRegex(reply, rf"^OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n$")
        with self.connect(server) as sock:  # a header without resume=
            sock.sendall(f"MUXUP/1 {len(data)} old.bin\n".encode() + data)
            sock.shutdown(socket.SHUT_WR)
            reply = muxtest.LineReader(sock).expect_eof(TIMEOUT).decode()
        self.assertEqual(reply, f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        ncat = subprocess.run(["ncat", "--send-only", muxtest.HOST, str(server.port)],
                              input=data, capture_output=True, timeout=TIMEOUT)
        self.assertEqual(ncat.returncode, 0, ncat.stderr)
        server.wait_for_log(r"Saved \[Client 3\] upload as .*upload-3\.bin")
        self.assertEqual(self.read_saved("upload-3.bin"), data)
        self.assertEqual(self.hidden(), [])

    # --- --retry: the same client process reconnects and resumes --------------------------------

    def wait_for_checkpoint(self, at_least=MIB):
        """Waits until the server's record shows a checkpoint of at least `at_least` bytes: only
        then does a server killed outright leave something to resume (before its first 1 MiB
        checkpoint it leaves nothing)."""
        offset = muxtest.wait_for_checkpoint(self.out, at_least, 3 * TIMEOUT)
        if offset is None:
            self.fail(f"no checkpoint of {at_least} bytes within {3 * TIMEOUT} s: {self.saved()}")
        return offset

    def skip_where_the_server_is_gone(self):
        """A case that kills the server and then tests only the client (its waits, its retries,
        its exit) runs in the single-loop classes: how the dead server had served makes no
        difference to what the client sees (its connection drops, then connects are refused),
        and each run costs seconds of backoff."""
        if self.SERVE == "fork":
            self.skipTest("the client's side once the server is killed: the single-loop classes")

    def read_until(self, stream, pattern, timeout=3 * TIMEOUT):
        """Reads a running client's output until `pattern` shows up; returns what was read."""
        seen = b""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, seen.decode(errors="replace")):
            remaining = deadline - time.monotonic()
            self.assertGreater(remaining, 0, f"no {pattern!r} within {timeout} s: {seen!r}")
            ready, _, _ = select.select([stream], [], [], remaining)
            if ready:
                chunk = os.read(stream.fileno(), 65536)
                self.assertTrue(chunk, f"output ended before {pattern!r}: {seen!r}")
                seen += chunk
        return seen.decode(errors="replace")

    def test_retry_survives_a_server_killed_and_restarted(self):
        server = self.start_server()
        # 24 MiB at 8 MiB/s: the first checkpoint comes at once, and 2.9 s are left to kill the
        # server before the data could all be out (the rate caps it, however fast the machine).
        path = self.make_file("big.bin", 24 * MIB)
        client = self.start_client(server, path, "--limit-rate", "8M", "--retry", "10")
        try:
            self.wait_for_checkpoint()
            self.kill_server(server)
            # The same port; the client is already waiting to connect again (1 s, 2 s, 4 s, ...).
            self.start_server("--port", str(server.port))
            out, err = client.communicate(timeout=6 * TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        out, err = out.decode(), err.decode()
        self.assertEqual((client.returncode, err), (0, ""), out)
        self.assertRegex(out, r"(closed the connection without a reply|Connection reset by peer|"
                              r"Broken pipe)[^\n]*; retry 1 of 10 in 1 s\n")
        self.assertRegex(out, r"(?m)^Resumed at \S+ \S+ of 24\.0 MiB$")
        self.assertRegex(out, rf"verified {muxtest.xxh128(path)} of all {24 * MIB} bytes, saved as "
                              r"big\.bin\n")
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "big.bin")), muxtest.xxh128(path))
        self.assertEqual(self.saved(), ["big.bin"])  # nothing hidden left behind
        self.assertEqual(os.listdir(os.path.join(self.state, "mux")), [])

    def test_retry_gives_up_after_n_tries_with_one_error_line(self):
        self.skip_where_the_server_is_gone()
        server = self.start_server()
        path = self.make_file("gone.bin", PART_WAY)
        client = self.start_client(server, path, "--limit-rate", "2M", "--retry", "2")
        self.wait_for_checkpoint()
        self.kill_server(server)  # and never restarted
        out, err = client.communicate(timeout=6 * TIMEOUT)
        host = "localhost" if self.TLS else "127.0.0.1"
        self.assertEqual(client.returncode, 1, out)
        self.assertRegex(err.decode(), rf"^mux: error: connect to {host}:{server.port}: Connection "
                                       r"refused \(gave up after 2 retries\)\n$")
        self.assertRegex(out.decode(), r"; retry 1 of 2 in 1 s\n.*Connection refused; retry 2 of "
                                       r"2 in 2 s\n")
        # What the server kept is still there for the next run of the same command.
        restarted = self.start_server("--port", str(server.port))
        self.assert_resumed(self.run_client(restarted, path), path)

    def test_ctrl_c_between_retries_ends_at_once_with_130(self):
        self.skip_where_the_server_is_gone()
        server = self.start_server()
        path = self.make_file("int.bin", PART_WAY)
        client = self.start_client(server, path, "--limit-rate", "2M", "--retry", "5")
        try:
            self.wait_for_checkpoint()
            self.kill_server(server)
            # The third wait is 4 s: SIGINT lands inside it.
            self.read_until(client.stdout, r"retry 3 of 5 in 4 s\n")
            interrupted = time.monotonic()
            client.send_signal(signal.SIGINT)
            out, err = client.communicate(timeout=TIMEOUT)
            waited = time.monotonic() - interrupted
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        self.assertEqual(client.returncode, 130, err)
        self.assertLess(waited, 3.0)  # not the rest of the 4 s wait (a slower exit under ASan)
        self.assertRegex(err.decode(), r"^mux: error: interrupted by SIGINT after sending .*; run "
                                       r"the same command again to resume\n$")

    def test_progress_shows_what_the_server_acknowledged(self):
        server = self.start_server()
        path = self.make_file("acked.bin", 24 * MIB)
        client = self.start_client(server, path, "--limit-rate", "16M")
        try:
            # The progress (a pipe: a line per 10 MiB) comes from the server's ACK lines, each
            # sent once that checkpoint was written (--sync full: after the data's flush): when
            # the client says 10 MiB, the server's record already holds at least that much.
            self.read_until(client.stdout, r"Sent 10 MiB\n")
            self.assertGreaterEqual(self.wait_for_checkpoint(0), 10 * MIB)
            out, err = client.communicate(timeout=6 * TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        self.assertEqual((client.returncode, err), (0, b""), out)
        self.assertRegex(out.decode(), rf"Sent 20 MiB\nSent {24 * MIB} bytes in .*, verified "
                                       rf"{muxtest.xxh128(path)}, saved as acked\.bin\n")

    def connect(self, server):
        sock = muxtest.connect(server.port)
        if not self.TLS:
            return sock
        context = __import__("ssl").create_default_context(cafile=test_tls.PKI.ca)
        return context.wrap_socket(sock, server_hostname="localhost")


class FirstConnectRetryTests(muxtest.UploadCase):
    """--retry covers the first connect too: a server that is not up yet, or restarting."""

    def free_port(self):
        with socket.socket() as sock:
            sock.bind((muxtest.HOST, 0))
            return sock.getsockname()[1]

    def start_client(self, port, path, *args):
        env = dict(os.environ, XDG_STATE_HOME=os.path.join(self.work, "state"))
        return subprocess.Popen([muxtest.MUX, "upload-client", "--host", muxtest.HOST, "--port",
                                 str(port), "--file", path, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    read_until = ResumeCase.read_until

    def test_the_first_connect_waits_for_a_server_that_starts_later(self):
        port = self.free_port()
        path = self.make_file("late.bin", 3 * MIB)
        client = self.start_client(port, path, "--retry", "5")
        server = None
        try:
            seen = self.read_until(client.stdout, r"; retry 1 of 5 in 1 s\n")
            self.assertRegex(seen, rf"^connect to {muxtest.HOST}:{port}: Connection refused; "
                                   r"retry 1 of 5 in 1 s\n")
            server = subprocess.Popen([muxtest.MUX, "upload-server", "--host", muxtest.HOST,
                                       "--port", str(port), "--output-dir", self.out],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            out, err = client.communicate(timeout=3 * TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
            if server is not None and server.poll() is None:
                server.terminate()
                server.communicate(timeout=TIMEOUT)
        self.assertEqual((client.returncode, err.decode()), (0, ""), out)
        self.assertRegex(out.decode(), rf"Sent {3 * MIB} bytes in .*, verified "
                                       rf"{muxtest.xxh128(path)}, saved as late.bin\n")
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "late.bin")), muxtest.xxh128(path))

    def test_the_first_connect_gives_up_after_n_tries(self):
        port = self.free_port()
        path = self.make_file("x.bin", 10)
        client = self.start_client(port, path, "--retry", "2")
        out, err = client.communicate(timeout=3 * TIMEOUT)
        self.assertEqual(client.returncode, 1, err)
        self.assertEqual(out.decode().count("Connection refused; retry "), 2, out)
        self.assertEqual(err.decode(), f"mux: error: connect to {muxtest.HOST}:{port}: Connection "
                                       "refused (gave up after 2 retries)\n")
        # Without --retry the first refusal ends it at once, as before.
        client = self.start_client(port, path)
        out, err = client.communicate(timeout=TIMEOUT)
        self.assertEqual((client.returncode, out.decode()), (1, ""))
        self.assertEqual(err.decode(),
                         f"mux: error: connect to {muxtest.HOST}:{port}: Connection refused\n")

    def test_ctrl_c_while_waiting_to_connect_ends_at_once_with_130(self):
        port = self.free_port()
        path = self.make_file("x.bin", 10)
        client = self.start_client(port, path, "--retry", "5")
        try:
            # The third wait is 4 s: ending at once stays far from it, even under ASan at load.
            self.read_until(client.stdout, r"retry 3 of 5 in 4 s\n")
            started = time.monotonic()
            client.send_signal(signal.SIGINT)
            out, err = client.communicate(timeout=TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        self.assertLess(time.monotonic() - started, 3)  # not the rest of the 4 s wait
        self.assertEqual(client.returncode, 130, err)
        self.assertEqual(err.decode(), f"mux: error: interrupted by SIGINT while waiting to "
                                       f"connect to {muxtest.HOST}:{port}; nothing was sent\n")


class SingleResumeTests(ResumeCase):
    SERVE = "single"


class ForkResumeTests(ResumeCase):
    SERVE = "fork"


class SingleTlsFullSyncResumeTests(ResumeCase):
    SERVE = "single"
    TLS = True
    SYNC = "full"


class ForkTlsResumeTests(ResumeCase):
    SERVE = "fork"
    TLS = True


del ResumeCase  # a base, not a case of its own


class AckTests(muxtest.UploadCase):
    """Honest progress against a hand-written server that controls its ACK lines."""

    def serve_once(self, listener, size, acks, reply):
        """Accepts one upload: sends `acks` (offset, after how many bytes of data), reads the
        whole body (a resumable client half-closes only after the OK), sets self.received, waits for self.may_reply, replies
        `reply`. Records the header line."""
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(3 * TIMEOUT)
            data = b""
            while b"\n" not in data:
                data += conn.recv(65536)
            header, _, body = data.partition(b"\n")
            self.header = header.decode()
            received = len(body)
            pending = list(acks)
            while True:
                while pending and received >= pending[0][1]:
                    conn.sendall(f"ACK {pending.pop(0)[0]}\n".encode())
                if received >= size:
                    break
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
            self.received_bytes = received
            self.received.set()
            self.may_reply.wait(3 * TIMEOUT)
            conn.sendall(reply.encode())

    def test_the_bar_never_passes_what_the_server_acknowledged(self):
        path = self.make_file("held.bin", 24 * MIB)
        listener = socket.create_server((muxtest.HOST, 0))
        self.addCleanup(listener.close)
        self.received, self.may_reply = threading.Event(), threading.Event()
        reply = f"OK {24 * MIB} {muxtest.xxh128(path)}\n"
        # The server takes every byte but says it holds only the first MiB until its OK.
        server = threading.Thread(target=self.serve_once,
                                  args=(listener, 24 * MIB, [(0, 0), (MIB, MIB)], reply))
        server.start()
        client = subprocess.Popen([muxtest.MUX, "upload-client", "--port",
                                   str(listener.getsockname()[1]), "--file", path,
                                   "--limit-rate", "32M"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            self.assertTrue(self.received.wait(6 * TIMEOUT))
            self.assertEqual(self.received_bytes, 24 * MIB)
            # Everything left the client (after its last progress update), yet it printed no
            # "Sent 10 MiB": only 1 MiB was acknowledged.
            ready, _, _ = select.select([client.stdout], [], [], 0.2)
            self.assertEqual(ready, [], "the client showed progress the server never acknowledged")
            self.may_reply.set()
            out, err = client.communicate(timeout=3 * TIMEOUT)
        finally:
            self.may_reply.set()
            if client.poll() is None:
                client.kill()
                client.communicate()
            server.join(3 * TIMEOUT)
        self.assertEqual((client.returncode, err), (0, b""), out)
        self.assertIn(" ack=1", self.header)
        # The OK acknowledges everything: the steps are passed, then the summary.
        self.assertRegex(out.decode(), rf"^Sent 10 MiB\nSent 20 MiB\nSent {24 * MIB} bytes in .*, "
                                       rf"verified {muxtest.xxh128(path)}\n$")


class StreamTests(muxtest.UploadCase):
    def test_a_stream_says_it_cannot_resume(self):
        server = self.upload_server("--output-dir", self.out, "-v")
        reader, writer = os.pipe()
        client = subprocess.Popen([muxtest.MUX, "upload-client", "--port", str(server.port),
                                   "--file", "-"], stdin=reader, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        os.close(reader)
        os.write(writer, b"x" * 1000)
        # The header is the client's loop at work (its SIGINT handler in place): a fixed 0.5 s
        # was too short for an ASan client to get there at load, and SIGINT then went unseen.
        server.wait_for_log(r"header: unknown number of bytes", timeout=3 * TIMEOUT)
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=TIMEOUT)
        os.close(writer)
        self.assertEqual(client.returncode, 130, err)
        self.assertIn(b"a stream cannot resume: the server keeps nothing of it", err)


if __name__ == "__main__":
    muxtest.main()
