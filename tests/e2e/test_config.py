"""`--config FILE` and `--check` from the outside: the real binary reading real files. The
command line wins over the file (seen on a running server: its port and its client cap), every
usage error names FILE:LINE and exits 2 with nothing on stdout, and `--check` exits 0 or 2
without listening or connecting, for each thing it checks (TLS files, token file mode, output
directory, upload-client's file)."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import unittest

import muxtest
from muxtest import LineReader, Server

WELCOME = re.compile(r"^\* welcome, you are Client \d+ ")


class ConfigCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mux-config-e2e-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, name, text, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def usage_error(self, *args):
        """Runs mux; requires exit 2, nothing on stdout; returns the first stderr line."""
        result = muxtest.run_mux(*args)
        stderr = result.stderr.decode().splitlines()
        self.assertEqual(result.returncode, 2, stderr)
        self.assertEqual(result.stdout, b"")
        self.assertGreaterEqual(len(stderr), 1)
        return stderr[0]


class PrecedenceTest(ConfigCase):
    def test_the_file_sets_what_the_command_line_does_not(self):
        # port = 9 in the file, --port 0 on the command line (muxtest.Server): the server listens
        # on a free port, so the command line won; max-clients = 1 from the file turns the second
        # client away.
        path = self.write("chat.conf", "# a chat room\nport = 9\nmax-clients = 1\nquiet = yes\n")
        with Server("chat-server", "--config", path) as server:
            self.assertNotEqual(server.port, 9)
            with server.connect() as first:
                self.assertRegex(LineReader(first).line(), WELCOME)
                with server.connect() as second:
                    self.assertEqual(LineReader(second).line(), "* server full")
            self.assertEqual(server.stop(), 0)
            # quiet = yes: nothing but the listening line
            self.assertEqual(len(server.stdout_lines), 1, server.stdout_lines)

    def test_a_flag_on_the_command_line_beats_the_file_wherever_it_stands(self):
        path = self.write("chat.conf", "max-clients = 1\n")
        for args in (["--max-clients", "2", "--config", path], ["--config", path, "--max-clients=2"]):
            with self.subTest(args=args):
                with Server("chat-server", *args) as server:
                    with server.connect() as first, server.connect() as second:
                        self.assertRegex(LineReader(first).line(), WELCOME)
                        self.assertRegex(LineReader(second).line(), WELCOME)
                    self.assertEqual(server.stop(), 0)

    def test_verbosity_on_the_command_line_replaces_the_files(self):
        path = self.write("chat.conf", "quiet = true\n")
        with Server("chat-server", "--config", path, "-v") as server:
            with server.connect() as sock:
                LineReader(sock).line()
                sock.sendall(b"hello\n")
                # Logged at debug level only: -v won over quiet = true.
                server.wait_for_log(r" \[Client 1\]: hello$")
            self.assertEqual(server.stop(), 0)
        # And the file alone: quiet, nothing but the listening line.
        with Server("chat-server", "--config", path) as server:
            with server.connect() as sock:
                LineReader(sock).line()
                sock.sendall(b"hello\n")
            self.assertEqual(server.stop(), 0)
            self.assertEqual(len(server.stdout_lines), 1, server.stdout_lines)

    def test_repeated_settings_add_up(self):
        # Two allow lines: 127.0.0.1 is allowed by the second; 127.0.0.2 by neither.
        path = self.write("upload.conf", "allow = 10.0.0.0/8\nallow = 127.0.0.1/32\n")
        out = os.path.join(self.dir, "out")
        os.mkdir(out)
        with Server("upload-server", "--config", path, "--output-dir", out) as server:
            with server.connect() as sock:
                sock.sendall(b"MUXUP/1 2 a.bin\nhi")
                sock.shutdown(socket.SHUT_WR)
                self.assertRegex(LineReader(sock).line(), r"^OK 2 ")
            with muxtest.connect_from("127.0.0.2", server.port) as sock:
                sock.sendall(b"MUXUP/1 2 b.bin\nhi")
                self.assertEqual(LineReader(sock).line(), "ERR refused: address not allowed")
            self.assertEqual(server.stop(), 0)
        self.assertEqual(sorted(os.listdir(out)), ["a.bin"])


class ErrorTest(ConfigCase):
    CASES = [
        # (file text, subcommand, the error after "mux: error: FILE:")
        ("port = 1\n\n# c\n\n\n\nmax-lines = 5\n", "chat-server",
         "7: unknown setting 'max-lines' (did you mean 'max-line'?)"),
        ("--port = 5\n", "chat-server", "1: unknown setting '--port' (did you mean 'port'?)"),
        ("output-dir = /tmp\n", "chat-server",
         "1: unknown setting 'output-dir' (chat-server takes no such setting; upload-server does)"),
        ("nick = ada\n", "upload-client",
         "1: unknown setting 'nick' (upload-client takes no such setting; chat-client does)"),
        ("colour = blue\n", "chat-client", "1: unknown setting 'colour'"),
        ("port =\n", "chat-server", "1: port: needs a value (PORT)"),
        ("timestamps = maybe\n", "chat-client",
         "1: timestamps: 'maybe' is not true or false (a switch: true, false, yes, no, on, off, "
         "1 or 0)"),
        ("port = 1\nport = 2\n", "chat-server",
         "2: 'port' is set twice (first on line 1); only a repeatable flag's setting may repeat"),
        ("verbose = true\nlog-level = debug\n", "upload-server",
         "2: 'log-level' and 'verbose' (line 1) cannot be used together"),
        ("config = other.conf\n", "chat-server",
         "1: 'config' is a command-line flag only, not a setting"),
        ("port 7000\n", "chat-server", "1: 'port 7000' is not a setting (expected 'name = value')"),
        ("= 7000\n", "chat-server", "1: a setting without a name (expected 'name = value')"),
    ]

    def test_every_error_names_the_file_and_the_line(self):
        for text, sub, message in self.CASES:
            with self.subTest(message=message):
                path = self.write("bad.conf", text)
                self.assertEqual(self.usage_error(sub, "--config", path),
                                 f"mux: error: {path}:{message}")

    # (file text, subcommand, line, flag, value): a bad value is refused for the reason the
    # command line gives for `--flag value`, after FILE:LINE: and the setting's name.
    VALUE_CASES = [
        ("port = 70000\n", "upload-server", 1, "port", "70000"),
        ("max-line = 2M\n", "chat-server", 1, "max-line", "2M"),
        ("max-line = lots\n", "chat-server", 1, "max-line", "lots"),
        ("serve = threads\n", "chat-server", 1, "serve", "threads"),
        ("allow = 127.0.0.1\nallow = nowhere\n", "upload-server", 2, "allow", "nowhere"),
        ("connect-timeout = soon\n", "chat-client", 1, "connect-timeout", "soon"),
        ("timeout = -1\n", "upload-client", 1, "timeout", "-1"),
    ]

    def test_a_bad_value_is_refused_as_on_the_command_line(self):
        for text, sub, line, flag, value in self.VALUE_CASES:
            with self.subTest(setting=text):
                path = self.write("bad.conf", text)
                extra = ["--file", "/dev/null"] if sub == "upload-client" else []
                on_command_line = self.usage_error(sub, *extra, f"--{flag}={value}")
                prefix = f"mux: error: --{flag}: "
                self.assertTrue(on_command_line.startswith(prefix), on_command_line)
                self.assertEqual(self.usage_error(sub, *extra, "--config", path),
                                 f"mux: error: {path}:{line}: {flag}: "
                                 + on_command_line[len(prefix):])

    def test_one_error_line(self):
        """The FILE:LINE error is the only error line (a usage hint may follow it)."""
        path = self.write("bad.conf", "max-lines = 5\n")
        result = muxtest.run_mux("chat-server", "--config", path)
        lines = result.stderr.decode().splitlines()
        self.assertEqual([line for line in lines if line.startswith("mux: error: ")], lines[:1])
        self.assertLessEqual(len(lines), 2, lines)

    def test_a_bad_value_is_reported_even_when_the_command_line_overrides_it(self):
        path = self.write("bad.conf", "max-line = lots\n")
        self.assertTrue(
            self.usage_error("chat-server", "--max-line", "1K", "--config", path).startswith(
                f"mux: error: {path}:1: max-line: 'lots' "))

    def test_a_file_that_cannot_be_read(self):
        missing = os.path.join(self.dir, "missing.conf")
        self.assertEqual(self.usage_error("chat-server", "--config", missing),
                         f"mux: error: --config {missing}: No such file or directory")
        self.assertEqual(self.usage_error("upload-server", "--config", self.dir),
                         f"mux: error: --config {self.dir}: Is a directory")

    def test_a_required_flag_may_come_from_the_file(self):
        path = self.write("up.conf", "host = 127.0.0.1\n")
        self.assertEqual(self.usage_error("upload-client", "--config", path),
                         "mux: error: --file is required")
        data = self.write("data.txt", "x")
        path = self.write("up.conf", f"file = {data}\nport = 9\n")
        result = muxtest.run_mux("upload-client", "--config", path, "--check")
        self.assertEqual(result.returncode, 0, result.stderr)


class CheckTest(ConfigCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="mux-check-e2e-")
        cls.cert = os.path.join(cls.pki, "server.pem")
        cls.key = os.path.join(cls.pki, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", cls.key, "-out", cls.cert,
                        "-days", "2", "-subj", "/CN=localhost"],
                       check=True, capture_output=True, timeout=30)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def check(self, *args):
        result = muxtest.run_mux(*args, "--check")
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    def test_a_good_configuration_is_ok_and_nothing_listens(self):
        # The port is held by this test: --check must not try to bind it.
        with socket.socket() as holder:
            holder.bind((muxtest.HOST, 0))
            holder.listen()
            port = holder.getsockname()[1]
            tokens = self.write("tokens", "s3cret-token-0123\n", mode=0o600)
            out = os.path.join(self.dir, "out")
            os.mkdir(out)
            chat = self.write("chat.conf", f"port = {port}\ntls-cert = {self.cert}\n"
                                           f"tls-key = {self.key}\ntoken-file = {tokens}\n")
            self.assertEqual(self.check("chat-server", "--config", chat),
                             (0, f"mux chat-server: configuration ok (flags and {chat}; loaded "
                                 "TLS certificate and key, --token-file)\n", ""))
            upload = self.write("upload.conf", f"port = {port}\noutput-dir = {out}\n")
            self.assertEqual(self.check("upload-server", "--config", upload),
                             (0, f"mux upload-server: configuration ok (flags and {upload}; "
                                 f"loaded --output-dir {out} (writable))\n", ""))
            self.assertEqual(os.listdir(out), [])  # the probe file is gone
            self.assertEqual(self.check("chat-client", "--port", str(port), "--tls-ca", self.cert),
                             (0, "mux chat-client: configuration ok (flags; loaded TLS "
                                 "settings)\n", ""))
            self.assertEqual(self.check("upload-server"),
                             (0, "mux upload-server: configuration ok (flags)\n", ""))

    def test_check_refuses_what_a_start_would_refuse(self):
        loose = self.write("loose-tokens", "s3cret-token-0123\n", mode=0o644)
        not_a_dir = self.write("file", "x")
        missing = os.path.join(self.dir, "missing.pem")
        # A flag missing its partner is a usage mistake, caught while parsing: its error is
        # followed by the usage hint. What only the files can tell is one line.
        cases = [
            (["chat-server", "--tls-cert", missing, "--tls-key", self.key], missing, False),
            (["upload-server", "--tls-cert", self.cert], "--tls-key", True),
            (["chat-server", "--token-file", loose], "loose-tokens", False),
            (["upload-server", "--output-dir", not_a_dir], not_a_dir, False),
            (["upload-server", "--output-dir", os.path.join(self.dir, "nowhere")], "nowhere", False),
            (["chat-client", "--tls-ca", missing], missing, False),
            (["upload-client", "--file", os.path.join(self.dir, "absent.bin")], "absent.bin", False),
            (["chat-server", "--redis-tls-ca", self.cert], "--redis-tls-ca: needs --redis", True),
        ]
        for args, needle, usage_mistake in cases:
            with self.subTest(args=args):
                status, out, err = self.check(*args)
                self.assertEqual(status, 2, err)
                self.assertEqual(out, "")
                lines = err.splitlines()
                hint = [f"Try 'mux {args[0]} --help' for more information."]
                self.assertEqual(lines[1:], hint if usage_mistake else [], lines)
                self.assertTrue(lines[0].startswith("mux: error: "), lines[0])
                self.assertIn(needle, lines[0])

    def test_the_token_file_mode_is_checked(self):
        tokens = self.write("tokens", "s3cret-token-0123\n", mode=0o640)
        status, out, err = self.check("upload-server", "--token-file", tokens)
        self.assertEqual((status, out), (2, ""))
        self.assertRegex(err, r"^mux: error: .*tokens.*\n$")
        os.chmod(tokens, 0o600)
        self.assertEqual(self.check("upload-server", "--token-file", tokens)[0], 0)

    def test_a_config_error_under_check_is_the_same_usage_error(self):
        path = self.write("bad.conf", "max-lines = 5\n")
        self.assertEqual(self.usage_error("chat-server", "--config", path, "--check"),
                         f"mux: error: {path}:1: unknown setting 'max-lines' (did you mean "
                         "'max-line'?)")


if __name__ == "__main__":
    muxtest.main()
