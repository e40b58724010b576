"""mux under systemd, without systemd as PID 1: socket activation through
`systemd-socket-activate` (LISTEN_FDS) for both servers, readiness and stopping notifications
(Type=notify) observed on a datagram socket the test binds as NOTIFY_SOCKET (only the main
process notifies, also in fork mode), and `systemd-analyze verify` / `security --offline` on the
installed units."""

import array
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import muxtest

HAVE_SYSTEMD = os.environ.get("MUX_HAVE_SYSTEMD") == "1"
UNIT_DIR = os.environ.get("MUX_UNIT_DIR", "")
SERVERS = ["chat-server", "upload-server"]


def free_port():
    with socket.socket() as sock:
        sock.bind((muxtest.HOST, 0))
        return sock.getsockname()[1]


class ActivatedServer(muxtest.Server):
    """`systemd-socket-activate -l 127.0.0.1:PORT mux SUB ...`: systemd-socket-activate holds the
    listening socket and starts mux (as fd 3, LISTEN_FDS=1) on the first connection."""

    def __init__(self, command, port, listening=None):
        self.args = command
        self.port = port
        self.host = muxtest.HOST
        self.collect(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL))
        listening = listening or f"{muxtest.HOST}:{port}"
        self.wait_for_log(rf"Listening on {re.escape(listening)} as 3", stream="stderr")


def start_activated(sub, *args, datagram=False):
    """Retries a few times: the free port may be taken between the probe and the bind."""
    for _ in range(5):
        port = free_port()
        command = ["systemd-socket-activate", *(["--datagram"] if datagram else []),
                   "-l", f"{muxtest.HOST}:{port}", muxtest.MUX, sub, *args]
        try:
            return ActivatedServer(command, port)
        except AssertionError:
            continue
    raise AssertionError("systemd-socket-activate could not listen on a free port")


def upload(port, data, name="f.bin"):
    with muxtest.connect(port) as sock:
        sock.sendall(f"MUXUP/1 {len(data)} {name}\n".encode() + data)
        sock.shutdown(socket.SHUT_WR)
        return muxtest.LineReader(sock).line()


@unittest.skipUnless(HAVE_SYSTEMD, "mux was built without libsystemd")
@unittest.skipUnless(shutil.which("systemd-socket-activate"), "systemd-socket-activate is absent")
class SocketActivationTest(unittest.TestCase):
    def test_chat_server_serves_the_socket_it_is_given(self):
        for mode in ["single", "fork"]:
            with self.subTest(serve=mode):
                with start_activated("chat-server", "--serve", mode) as server:
                    # The first connection makes systemd-socket-activate start mux.
                    first = server.connect()
                    reader = muxtest.LineReader(first)
                    self.assertRegex(reader.line(), r"^\* welcome, you are Client 1 ")
                    server.wait_for_log(rf"listening on {re.escape(muxtest.HOST)}:{server.port} "
                                        rf"\(serve {mode}, socket activation\)$")
                    with server.connect() as second:
                        muxtest.LineReader(second).line()
                        self.assertEqual(reader.line(), "* Client 2 joined")
                        second.sendall(b"hello through fd 3\n")
                        self.assertEqual(reader.line(), "[Client 2]: hello through fd 3")
                    first.close()
                    self.assertEqual(server.stop(), 0)

    def test_upload_server_serves_the_socket_it_is_given(self):
        for mode in ["single", "fork"]:
            with self.subTest(serve=mode):
                out = tempfile.mkdtemp(prefix="mux-systemd-e2e-")
                self.addCleanup(shutil.rmtree, out, True)
                with start_activated("upload-server", "--serve", mode, "--output-dir", out) as server:
                    self.assertRegex(upload(server.port, b"activated" * 1000, "a.bin"), r"^OK 9000 ")
                    server.wait_for_log(r"\(serve \w+, socket activation\)$")
                    server.wait_for_log(r"Saved .*a\.bin")
                    with open(os.path.join(out, "a.bin"), "rb") as f:
                        self.assertEqual(f.read(), b"activated" * 1000)
                    self.assertEqual(server.stop(), 0)

    def test_host_and_port_under_activation_are_warned_about(self):
        with start_activated("chat-server", "--port", "5000") as server:
            with server.connect() as sock:
                muxtest.LineReader(sock).line()
            server.wait_for_log(r"warning: --host and --port are ignored: the listening socket "
                                r"came from the service manager$")
            self.assertEqual(server.stop(), 0)
        with start_activated("chat-server") as server:
            with server.connect() as sock:
                muxtest.LineReader(sock).line()
            server.wait_for_log(r"socket activation")
            self.assertEqual(server.log_count("warning: "), 0)
            self.assertEqual(server.stop(), 0)

    def test_a_socket_that_is_not_a_stream_listener_is_an_error(self):
        with start_activated("chat-server", datagram=True) as server:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"x", (muxtest.HOST, server.port))  # starts mux
            self.assertEqual(server.wait(), 1)
            self.assertEqual(server.stderr_lines[-1],
                             "mux: error: socket activation: the socket passed (fd 3) is not a "
                             "listening stream socket (ListenStream= in the .socket unit, Accept=no)")

    def test_a_unix_socket_is_named_and_refused(self):
        """Issue 21 C2: a Unix socket (ListenStream=/run/x.sock) failed with `mux: error: stoul`."""
        work = tempfile.mkdtemp(prefix="mux-activate-")
        self.addCleanup(shutil.rmtree, work, True)
        path = os.path.join(work, "mux.sock")
        for sub in ("chat-server", "upload-server"):
            with self.subTest(server=sub):
                if os.path.exists(path):
                    os.unlink(path)
                command = ["systemd-socket-activate", "-l", path, muxtest.MUX, sub]
                with ActivatedServer(command, None, listening=path) as server:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                        sock.connect(path)  # starts mux
                    self.assertEqual(server.wait(), 1)
                    self.assertEqual(server.stderr_lines[-1],
                                     "mux: error: socket activation: the socket passed (fd 3) is a "
                                     f"Unix socket ({path}), not TCP; mux serves TCP only "
                                     "(ListenStream=PORT or ADDRESS:PORT in the .socket unit)")


class NotifySocket:
    """A datagram socket bound where NOTIFY_SOCKET points; each message with its sender's pid."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mux-notify-e2e-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def receive(self, timeout=muxtest.DEFAULT_TIMEOUT):
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[:12])[0]
        return data.decode(), pid

    def nothing_more(self):
        self.sock.setblocking(False)
        try:
            return self.sock.recv(4096) is None
        except BlockingIOError:
            return True

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipUnless(HAVE_SYSTEMD, "mux was built without libsystemd")
class NotifyTest(unittest.TestCase):
    def test_ready_once_listening_and_stopping_on_graceful_shutdown(self):
        for sub in SERVERS:
            for mode in ["single", "fork"]:
                with self.subTest(subcommand=sub, serve=mode):
                    notify = NotifySocket()
                    self.addCleanup(notify.close)
                    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
                    with muxtest.Server(sub, "--serve", mode, env=env) as server:
                        message, pid = notify.receive()
                        self.assertEqual(message, f"READY=1\nSTATUS=listening on "
                                                  f"{muxtest.HOST}:{server.port}")
                        self.assertEqual(pid, server.proc.pid)
                        # A client served by a fork-mode child: the child never notifies.
                        if sub == "chat-server":
                            with server.connect() as sock:
                                muxtest.LineReader(sock).line()
                                server.signal(signal.SIGTERM)
                                message, pid = notify.receive()
                        else:
                            self.assertRegex(upload(server.port, b"n" * 10), r"^OK 10 ")
                            server.signal(signal.SIGTERM)
                            message, pid = notify.receive()
                        self.assertTrue(message.startswith("STOPPING=1\nSTATUS=shutting down"),
                                        message)
                        self.assertEqual(pid, server.proc.pid)
                        self.assertEqual(server.wait(), 0)
                        self.assertTrue(notify.nothing_more())

    def test_sighup_sends_reloading_then_ready(self):
        """`systemctl reload` waits from RELOADING=1 (with the monotonic time it began) until
        READY=1; both from the main process, in both serve modes, and again on a second SIGHUP."""
        for sub in SERVERS:
            for mode in ["single", "fork"]:
                with self.subTest(subcommand=sub, serve=mode):
                    notify = NotifySocket()
                    self.addCleanup(notify.close)
                    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
                    with muxtest.Server(sub, "--serve", mode, env=env) as server:
                        self.assertTrue(notify.receive()[0].startswith("READY=1\n"))
                        for round_number in range(2):
                            lines_before = len(server.stdout_lines)
                            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                            server.signal(signal.SIGHUP)
                            message, pid = notify.receive()
                            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                            match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", message)
                            self.assertIsNotNone(match, message)
                            self.assertLessEqual(before, int(match.group(1)))
                            self.assertLessEqual(int(match.group(1)), after)
                            self.assertEqual(pid, server.proc.pid)
                            message, pid = notify.receive()
                            self.assertEqual((message, pid), ("READY=1", server.proc.pid))
                            # The reload itself happened, once per SIGHUP.
                            server.wait_for_log(r"SIGHUP: nothing to reload; still serving",
                                                start=lines_before)
                            self.assertEqual(server.log_count(r"SIGHUP: nothing to reload"),
                                             round_number + 1)
                        server.signal(signal.SIGTERM)
                        self.assertTrue(notify.receive()[0].startswith("STOPPING=1\n"))
                        self.assertEqual(server.wait(), 0)
                        self.assertTrue(notify.nothing_more())

    def test_no_notify_socket_means_no_notification_and_no_error(self):
        with muxtest.Server("chat-server", env={k: v for k, v in os.environ.items()
                                                 if k != "NOTIFY_SOCKET"}) as server:
            self.assertEqual(server.stop(), 0)
            self.assertEqual(server.stderr_lines, [])


@unittest.skipUnless(UNIT_DIR, "MUX_UNIT_DIR not set (run through meson test)")
@unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is absent")
class UnitFilesTest(unittest.TestCase):
    UNITS = ["mux-chat.service", "mux-chat.socket", "mux-upload.service", "mux-upload.socket"]
    TEMPLATES = ["mux-chat@.service", "mux-chat@.socket", "mux-upload@.service",
                 "mux-upload@.socket"]

    def setUp(self):
        # ExecStart names the installed binary; point it at the one under test.
        self.dir = tempfile.mkdtemp(prefix="mux-units-e2e-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        for name in self.UNITS + self.TEMPLATES:
            with open(os.path.join(UNIT_DIR, name)) as f:
                text = f.read()
            text = re.sub(r"^(ExecStart|ExecStartPre|ExecReload)=\S+/mux ",
                          rf"\1={muxtest.MUX} ", text, flags=re.M)
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)

    def test_systemd_analyze_verify_finds_nothing(self):
        result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                 *[os.path.join(self.dir, name) for name in self.UNITS]],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))

    def test_systemd_analyze_verify_finds_nothing_in_the_templates(self):
        """A template is verified as an instance (room1; the sockets as port 7001), which systemd
        reads from the template file beside it."""
        instances = []
        for name in self.TEMPLATES:
            instance = "7001" if name.endswith(".socket") else "room1"
            path = os.path.join(self.dir, name.replace("@.", f"@{instance}."))
            os.symlink(os.path.join(self.dir, name), path)
            instances.append(path)
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", *instances],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))

    def test_templates_read_their_instance_config_and_check_it_first(self):
        for kind in ["chat", "upload"]:
            with self.subTest(kind=kind):
                with open(os.path.join(self.dir, f"mux-{kind}@.service")) as f:
                    text = f.read()
                # <sysconfdir>/mux/...: /etc/mux with --prefix /usr (the Debian package).
                match = re.search(rf"--config (/\S*/mux/{kind}-%i\.conf)", text)
                self.assertIsNotNone(match, text)
                config = f"--config {match.group(1)}"
                lines = [line for line in text.splitlines()
                         if line.startswith(("ExecStart", "ExecReload"))]
                output_dir = " --output-dir ${STATE_DIRECTORY}" if kind == "upload" else ""
                command = f"{muxtest.MUX} {kind}-server {config}{output_dir}"
                self.assertEqual(lines, [f"ExecStartPre={command} --check",
                                         f"ExecStart={command}",
                                         f"ExecReload={command} --check",
                                         "ExecReload=/bin/kill -HUP $MAINPID"])
                self.assertIn("\nUser=mux\n", text)
                with open(os.path.join(self.dir, f"mux-{kind}@.socket")) as f:
                    self.assertIn("\nListenStream=127.0.0.1:%i\n", f.read())
        with open(os.path.join(self.dir, "mux-upload@.service")) as f:
            self.assertIn("\nStateDirectory=mux-upload-%i\n", f.read())

    def test_services_are_sandboxed(self):
        for name in ["mux-chat.service", "mux-upload.service", "mux-chat@.service",
                     "mux-upload@.service"]:
            with self.subTest(unit=name):
                with open(os.path.join(self.dir, name)) as f:
                    text = f.read()
                for line in ["Type=notify", "DynamicUser=yes", "NoNewPrivileges=yes",
                             "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                             "CapabilityBoundingSet=", "SystemCallFilter=@system-service"]:
                    self.assertIn(f"\n{line}\n", text)
                result = subprocess.run(["systemd-analyze", "security", "--offline=true",
                                         "--no-pager", os.path.join(self.dir, name)],
                                        capture_output=True, text=True, timeout=60)
                match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
                self.assertIsNotNone(match, result.stdout + result.stderr)
                self.assertLessEqual(float(match.group(1)), 2.0, result.stdout)
        with open(os.path.join(self.dir, "mux-upload.service")) as f:
            text = f.read()
        self.assertIn("\nStateDirectory=mux-upload\n", text)
        self.assertIn("--output-dir ${STATE_DIRECTORY}", text)


if __name__ == "__main__":
    muxtest.main()
