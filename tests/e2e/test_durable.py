"""Saved uploads end to end: durable before OK (--sync full), streams of unknown length from a
pipe (`MUXUP/1 - name`) with no scratch copy anywhere, and same-name uploads in linear time.

The real binary on loopback; strace shows the order of the syscalls that matter.
"""

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import muxtest

MIB = 1 << 20
TIMEOUT = muxtest.DEFAULT_TIMEOUT


def upload_raw(port, data, name, size_field=None):
    """Sends a MUXUP/1 upload over a plain socket and returns the reply line."""
    size_field = str(len(data)) if size_field is None else size_field
    with muxtest.connect(port) as sock:
        sock.sendall(f"MUXUP/1 {size_field} {name}\n".encode() + data)
        sock.shutdown(socket.SHUT_WR)
        return muxtest.LineReader(sock).expect_eof(TIMEOUT).decode()


class DurableTestBase(muxtest.UploadCase):
    WORK_PREFIX = "mux-durable-test-"

    def server(self, *args):
        return self.upload_server("--output-dir", self.out, *args)


class StracedServer:
    """`strace -f -o FILE mux upload-server ...`: the trace is read after the server has ended."""

    def __init__(self, out_dir, serve, *args, syscalls):
        fd, self.trace = tempfile.mkstemp(prefix="mux-durable-strace-", suffix=".txt")
        os.close(fd)
        self.proc = muxtest.track(subprocess.Popen(
            ["strace", "-f", "-qq", "-s", "80", "-e", "trace=" + ",".join(syscalls),
             "-o", self.trace, muxtest.MUX, "upload-server", "--host", muxtest.HOST,
             "--port", "0", "--serve", serve, "--output-dir", out_dir, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=muxtest.env_for_ptrace()))
        line = self.proc.stdout.readline().decode()
        match = re.search(r"listening on \S+:(\d+)", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"no listening line under strace: {line!r} "
                                 f"{self.proc.stderr.read()!r}")
        self.port = int(match.group(1))

    def finish(self):
        """Stops the server and returns the trace lines."""
        # The server, not strace: strace would only detach and leave it running.
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            for pid in f.read().split():
                os.kill(int(pid), signal.SIGTERM)
        self.proc.communicate(timeout=30)
        with open(self.trace) as f:
            lines = f.read().splitlines()
        os.unlink(self.trace)
        return lines


def completed(lines, pattern):
    """Indexes of trace lines where a call matching `pattern` completed successfully (a whole
    line `call(...) = 0`, or strace's `<... call resumed>... = 0` when another thread
    interleaved)."""
    regex = re.compile(pattern)
    found = []
    pending = {}
    for index, line in enumerate(lines):
        pid = line.split()[0]
        if line.endswith("<unfinished ...>"):
            pending[pid] = line
            continue
        text = line
        if "resumed>" in line and pid in pending:
            text = pending.pop(pid)
        if regex.search(text) and re.search(r"= (\d+)$", line):
            found.append(index)
    return found


# The OK line leaving on the socket, whichever call carries it.
REPLY_WRITTEN = r'(sendto|sendmsg|writev|write)\(\d+, .*"OK \d+ [0-9a-f]{32}'


def started(lines, pattern):
    regex = re.compile(pattern)
    return [index for index, line in enumerate(lines) if regex.search(line)]


class SingleLoopDurableTests(DurableTestBase):
    SERVE = "single"

    def test_a_saved_upload_survives_sigkill_right_after_ok(self):
        server = self.server()
        data = os.urandom(12 * MIB + 123)  # crosses the write-back windows
        reply = upload_raw(server.port, data, "precious.bin")
        server.proc.kill()  # the instant OK arrived: no chance to tidy up
        server.proc.wait(TIMEOUT)
        self.assertEqual(reply, f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        self.assertEqual(self.saved(), ["precious.bin"])
        self.assertEqual(self.read_saved("precious.bin"), data)
        self.servers.remove(server)
        server.proc.stdout.close()
        server.proc.stderr.close()

    def test_full_sync_flushes_data_and_directory_before_the_reply_off_the_loop_thread(self):
        traced = StracedServer(self.out, self.SERVE, syscalls=[
            "fdatasync", "fsync", "renameat2", "sendto", "sendmsg", "write", "writev", "epoll_wait",
            "sync_file_range"])
        data = os.urandom(20 * MIB)
        reply = upload_raw(traced.port, data, "durable.bin")
        lines = traced.finish()
        self.assertEqual(reply, f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        text = "\n".join(lines)
        datasync = completed(lines, r"fdatasync\(")
        rename = completed(lines, r'renameat2\(.*"durable\.bin", RENAME_NOREPLACE')
        dirsync = completed(lines, r"\bfsync\(")
        reply_sent = started(lines, REPLY_WRITTEN)
        self.assertEqual(len(datasync), 1, text)
        self.assertEqual(len(rename), 1, text)
        self.assertEqual(len(dirsync), 1, text)
        self.assertEqual(len(reply_sent), 1, text)
        self.assertLess(datasync[0], rename[0], text)
        self.assertLess(rename[0], dirsync[0], text)
        self.assertLess(dirsync[0], reply_sent[0], text)
        # Write-back was started while the data arrived, before the final flush.
        self.assertTrue(any(i < datasync[0] for i in started(lines, r"sync_file_range\(")), text)
        # The flush ran on another thread than the event loop that sends the reply.
        flush_thread = lines[datasync[0]].split()[0]
        loop_thread = lines[reply_sent[0]].split()[0]
        self.assertNotEqual(flush_thread, loop_thread, text)
        loop_threads = {lines[i].split()[0] for i in started(lines, r"epoll_wait\(")}
        self.assertIn(loop_thread, loop_threads, text)
        self.assertEqual(self.read_saved("durable.bin"), data)

    def test_sync_none_replies_without_flushing(self):
        traced = StracedServer(self.out, self.SERVE, "--sync", "none",
                               syscalls=["fdatasync", "fsync", "sync_file_range", "sendto"])
        data = os.urandom(10 * MIB)
        reply = upload_raw(traced.port, data, "fast.bin")
        lines = traced.finish()
        self.assertEqual(reply, f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        self.assertEqual(started(lines, r"fdatasync\(|\bfsync\(|sync_file_range\("), [],
                         "\n".join(lines))
        self.assertEqual(self.read_saved("fast.bin"), data)

    def test_a_bad_sync_mode_is_a_usage_error(self):
        result = muxtest.run_mux("upload-server", "--sync", "sometimes", "--output-dir", self.out)
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"sometimes", result.stderr)

    def test_piped_stdin_is_streamed_with_live_progress_and_no_scratch_copy(self):
        server = self.server("-v")
        source = self.make_file("source.bin", 40 * MIB)
        tmpdir = os.path.join(self.work, "tmp")
        os.mkdir(tmpdir)
        trace = os.path.join(self.work, "client.strace")
        env = muxtest.env_for_ptrace(dict(os.environ, TMPDIR=tmpdir))
        # pv -L: 40 MiB at 20 MiB/s takes about 2 s, so the first progress line must show up
        # while pv is still feeding the pipe: the upload started before the input ended.
        pv = subprocess.Popen(["pv", "-q", "-L", "20m", source], stdout=subprocess.PIPE)
        client = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", trace, "-e",
             "trace=open,openat,creat,memfd_create,linkat",
             muxtest.MUX, "upload-client", "--port", str(server.port), "--file", "-",
             "--name", "piped.bin"],
            stdin=pv.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        pv.stdout.close()
        first = client.stdout.readline().decode()
        pv_running_at_first_progress = pv.poll() is None
        out, err = client.communicate(timeout=60)
        pv.wait(TIMEOUT)
        self.assertEqual(client.returncode, 0, err)
        self.assertEqual(first.strip(), "Sent 10 MiB")
        self.assertTrue(pv_running_at_first_progress, "progress only after the input ended")
        summary = out.decode().strip().splitlines()[-1]
        self.assertRegex(summary, rf"^Sent {40 * MIB} bytes in [0-9.]+ s \(.+\), "
                                  rf"verified {muxtest.xxh128(source)}, saved as piped\.bin$")
        server.wait_for_log(r'header: unknown number of bytes, name "piped.bin"')
        server.wait_for_log(r"Saved \[Client 1\] upload as .*/piped\.bin$")
        with open(source, "rb") as f:
            self.assertEqual(self.read_saved("piped.bin"), f.read())
        self.assertEqual(os.listdir(tmpdir), [])
        with open(trace) as f:
            opens = f.read()
        # Nothing is created anywhere: no O_CREAT, no O_TMPFILE, no memfd.
        self.assertNotRegex(opens, r"O_CREAT|O_TMPFILE|memfd_create|creat\(", opens)

    def test_stream_of_unknown_length_over_a_plain_socket(self):
        server = self.server()
        data = os.urandom(3 * MIB + 5)
        self.assertEqual(upload_raw(server.port, data, "s.bin", size_field="-"),
                         f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        self.assertEqual(upload_raw(server.port, b"", "empty.bin", size_field="-"),
                         f"OK 0 {muxtest.xxh128_of_bytes(b'')}\n")
        self.assertEqual(self.read_saved("s.bin"), data)
        self.assertEqual(self.read_saved("empty.bin"), b"")

    def test_stream_over_max_size_is_refused(self):
        server = self.server("--max-size", "1M")
        try:
            upload_raw(server.port, os.urandom(2 * MIB), "big.bin", size_field="-")
        except OSError:
            pass  # refused mid-send: the server may reset before the client half-closes
        server.wait_for_log(r"Received \d+ bytes from \[Client 1\] .*: incomplete "
                            r"\(too large: more than the limit of 1048576 bytes\)$")
        self.assertEqual(self.saved(), [])

    def test_interrupted_stream_sender_leaves_nothing(self):
        server = self.server()
        client = subprocess.Popen(
            [muxtest.MUX, "upload-client", "--port", str(server.port), "--file", "-",
             "--name", "cut.bin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        client.stdin.write(os.urandom(MIB))
        client.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        while not any(n.startswith(".mux-upload-") for n in os.listdir(self.out)):
            self.assertLess(time.monotonic(), deadline, "the upload never started")
            time.sleep(0.02)
        client.send_signal(signal.SIGINT)
        # stdin stays open until the client is gone: its end would be the end of the stream.
        client.wait(TIMEOUT)
        client.stdin.close()
        err = client.stderr.read()
        client.stdout.close()
        client.stderr.close()
        self.assertEqual(client.returncode, 130)  # 128 + SIGINT, as a shell reports Ctrl-C
        self.assertIn(b"interrupted by SIGINT after sending", err)
        server.wait_for_log(r"Received \d+ bytes from \[Client 1\] .*: incomplete \(connection")
        self.assertEqual(self.saved(), [])

    def test_a_symlink_in_the_output_directory_is_not_followed(self):
        outside = self.make_file("outside.txt", 10)
        with open(outside, "rb") as f:
            before = f.read()
        os.symlink(outside, os.path.join(self.out, "link.txt"))
        os.symlink("/nonexistent/dangling", os.path.join(self.out, "link.txt.1"))
        server = self.server()
        data = b"not for the link target"
        self.assertEqual(upload_raw(server.port, data, "link.txt"),
                         f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        self.assertEqual(self.read_saved("link.txt.2"), data)
        self.assertTrue(os.path.islink(os.path.join(self.out, "link.txt")))
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_twenty_thousand_same_name_uploads_take_linear_time(self):
        # --sync none: what is measured is the naming, not the disk's flush latency.
        server = self.server("--sync", "none", "-q")
        total, batch = 20000, 1000
        budget = time.monotonic() + 240
        pid = server.proc.pid
        batch_cpu, batch_wall = [], []
        request = b"MUXUP/1 1 same.txt\nx"
        expected = f"OK 1 {muxtest.xxh128_of_bytes(b'x')}\n".encode()
        for start in range(0, total, batch):
            cpu0, wall0 = process_cpu(pid), time.monotonic()
            for _ in range(batch):
                with socket.create_connection((muxtest.HOST, server.port), timeout=TIMEOUT) as s:
                    s.sendall(request)
                    s.shutdown(socket.SHUT_WR)
                    reply = b""
                    while True:
                        chunk = s.recv(256)
                        if not chunk:
                            break
                        reply += chunk
                    self.assertEqual(reply, expected)
                    # Close with a reset: 20,000 client sockets in TIME_WAIT would fill the
                    # ephemeral port range and make connect() itself slower and slower.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            batch_cpu.append(process_cpu(pid) - cpu0)
            batch_wall.append(time.monotonic() - wall0)
            self.assertLess(time.monotonic(), budget,
                            f"only {start + batch} uploads in 240 s: {batch_wall}")
        names = os.listdir(self.out)
        self.assertEqual(len(names), total)
        self.assertIn("same.txt", names)
        self.assertIn(f"same.txt.{total - 1}", names)
        # Not a speed target: a ratio that catches O(n^2) naming (the old code's last thousand
        # cost ~40 times its first, and it refused the name for good after 10,000). It is taken
        # on the server's CPU time, which hardly depends on what else the machine runs; the
        # wall-clock times swing several-fold on a loaded machine and are only printed.
        print(f"\nfirst/last 1000: server CPU {batch_cpu[0]:.3f}/{batch_cpu[-1]:.3f} s, "
              f"wall {batch_wall[0]:.3f}/{batch_wall[-1]:.3f} s", file=sys.stderr)
        self.assertLess(batch_cpu[-1], 5 * max(batch_cpu[0], 0.1), batch_cpu)


def process_cpu(pid):
    """User + system CPU seconds of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ForkDurableTests(DurableTestBase):
    SERVE = "fork"

    def test_a_saved_upload_survives_sigkill_right_after_ok(self):
        SingleLoopDurableTests.test_a_saved_upload_survives_sigkill_right_after_ok(self)

    def test_full_sync_flushes_before_the_reply(self):
        traced = StracedServer(self.out, self.SERVE,
                               syscalls=["fdatasync", "fsync", "renameat2", "sendto", "sendmsg",
                                         "write", "writev"])
        data = os.urandom(9 * MIB)
        reply = upload_raw(traced.port, data, "forked.bin")
        lines = traced.finish()
        self.assertEqual(reply, f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        text = "\n".join(lines)
        datasync = completed(lines, r"fdatasync\(")
        dirsync = completed(lines, r"\bfsync\(")
        reply_sent = started(lines, REPLY_WRITTEN)
        self.assertEqual((len(datasync), len(dirsync), len(reply_sent)), (1, 1, 1), text)
        self.assertLess(datasync[0], dirsync[0], text)
        self.assertLess(dirsync[0], reply_sent[0], text)

    def test_same_name_copies_from_many_processes_never_collide(self):
        server = self.server("--sync", "none", "-q")
        count = 300
        for n in range(count):
            data = f"copy {n}".encode()
            self.assertEqual(upload_raw(server.port, data, "f.txt"),
                             f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        expected = ["f.txt"] + [f"f.txt.{n}" for n in range(1, count)]
        self.assertEqual(sorted(self.saved()), sorted(expected))
        contents = {self.read_saved(name) for name in expected}
        self.assertEqual(len(contents), count)  # every copy kept, none overwritten

    def test_stream_of_unknown_length_over_a_plain_socket(self):
        SingleLoopDurableTests.test_stream_of_unknown_length_over_a_plain_socket(self)


if __name__ == "__main__":
    muxtest.main()
