"""The command line as a person meets it: help, version, usage errors (exit 2, one line
`mux: error: ...` naming the flag) and runtime failures (exit 1, `mux: error: <what>: <why>`),
never a traceback, abort or hang."""

import re
import socket
import subprocess
import unittest

import muxtest

SUBCOMMANDS = ["chat-server", "chat-client", "upload-server", "upload-client"]
SERVERS = ["chat-server", "upload-server"]
COMMON_FLAGS = ["--help", "--host", "--port", "--verbose", "--quiet"]
FLAGS = {
    "chat-server": COMMON_FLAGS + ["--serve", "--max-clients", "--max-line", "--max-queue",
                                   "--max-per-address", "--keepalive"],
    "chat-client": COMMON_FLAGS + ["--nick"],
    "upload-server": COMMON_FLAGS + ["--serve", "--output-dir", "--max-size", "--max-clients"],
    "upload-client": COMMON_FLAGS + ["--file", "--name"],
}
# What each subcommand needs besides the flag under test, so that flag is the only problem.
REQUIRED_ARGS = {"upload-client": ["--file", "/dev/null"]}
NOT_IMPLEMENTED = "is not implemented yet"


def mux(*args, timeout=muxtest.DEFAULT_TIMEOUT):
    result = muxtest.run_mux(*args, input=b"", timeout=timeout)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def not_implemented(subcommand):
    """True while `subcommand` still only says it is not implemented. The probe fails fast either
    way: the host does not resolve, and there is no server behind it."""
    args = [subcommand, "--host", "host.invalid", "--port", "1", *REQUIRED_ARGS.get(subcommand, [])]
    try:
        _, _, err = mux(*args, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return NOT_IMPLEMENTED in err


PENDING = {sub: not_implemented(sub) for sub in SUBCOMMANDS}


def free_port():
    """A loopback port that nobody listens on (bound, then closed: connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((muxtest.HOST, 0))
        return sock.getsockname()[1]


class CliTestCase(unittest.TestCase):
    def assertNoCrash(self, code, err):
        self.assertGreaterEqual(code, 0, f"killed by signal {-code}; stderr={err!r}")
        for marker in ["Traceback", "terminate called", "Aborted", "what():", "AddressSanitizer",
                       "runtime error:"]:
            self.assertNotIn(marker, err)

    def assertOneErrorLine(self, err, expected):
        """stderr is exactly the line `expected` (a string, or a compiled regex to fullmatch)."""
        self.assertTrue(err.endswith("\n"), repr(err))
        self.assertEqual(err.count("\n"), 1, f"more than one line on stderr: {err!r}")
        line = err[:-1]
        self.assertTrue(line.startswith("mux: error: "), repr(line))
        if isinstance(expected, str):
            self.assertEqual(line, expected)
        else:
            self.assertRegex(line, expected)
            self.assertIsNotNone(expected.fullmatch(line), repr(line))


class HelpAndVersionTest(CliTestCase):
    def test_help_lists_every_subcommand(self):
        for flag in ["--help", "-h"]:
            with self.subTest(flag=flag):
                code, out, err = mux(flag)
                self.assertEqual((code, err), (0, ""))
                self.assertIn("Usage: mux", out)
                self.assertIn("--version", out)
                listed = re.findall(r"(?m)^  (\S+)", out.split("Subcommands:", 1)[1])
                self.assertEqual(listed, SUBCOMMANDS)

    def test_version(self):
        code, out, err = mux("--version")
        self.assertEqual((code, err), (0, ""))
        self.assertRegex(out, r"\Amux \d+\.\d+\.\d+\n\Z")

    def test_subcommand_help_shows_every_flag(self):
        for sub in SUBCOMMANDS:
            for help_flag in ["--help", "-h"]:
                with self.subTest(subcommand=sub, flag=help_flag):
                    code, out, err = mux(sub, help_flag)
                    self.assertEqual((code, err), (0, ""))
                    shown = set(re.findall(r"(?m)^\s+(?:-[a-z],)?(--[a-z][a-z0-9-]*)", out))
                    self.assertEqual(shown, set(FLAGS[sub]))
                    self.assertIn("-v,--verbose", out)
                    self.assertIn("-q,--quiet", out)

    def test_help_shows_defaults(self):
        code, out, _ = mux("chat-server", "--help")
        self.assertEqual(code, 0)
        for shown in ["HOST=127.0.0.1", "PORT=5000", "single|fork=single", "BYTES=4096", "BYTES=1048576"]:
            self.assertIn(shown, out)


class UsageErrorTest(CliTestCase):
    def assertUsageError(self, args, expected):
        code, out, err = mux(*args)
        self.assertNoCrash(code, err)
        self.assertEqual((code, out), (2, ""), f"mux {args}: stderr={err!r}")
        self.assertOneErrorLine(err, expected)

    def test_no_subcommand_prints_usage_and_exits_2(self):
        code, out, err = mux()
        self.assertNoCrash(code, err)
        self.assertEqual((code, out), (2, ""))
        self.assertIn("Usage: mux", err)
        for sub in SUBCOMMANDS:
            self.assertIn(sub, err)
        self.assertEqual(err.count("mux: error: "), 1, err)
        self.assertTrue(err.endswith("mux: error: A subcommand is required\n"), repr(err))

    def test_unknown_subcommand_prints_usage_and_exits_2(self):
        code, out, err = mux("bogus")
        self.assertNoCrash(code, err)
        self.assertEqual((code, out), (2, ""))
        self.assertIn("Usage: mux", err)
        self.assertEqual(err.count("mux: error: "), 1, err)
        self.assertTrue(err.endswith("mux: error: unknown subcommand 'bogus'\n"), repr(err))

    def test_bad_port(self):
        for sub in SUBCOMMANDS:
            extra = REQUIRED_ARGS.get(sub, [])
            for value in ["notaport", "70000", "65536", "-1", "", "80x"]:
                with self.subTest(subcommand=sub, port=value):
                    self.assertUsageError(
                        [sub, *extra, "--port", value],
                        f"mux: error: --port: '{value}' is not a port number (0-65535)")

    def test_missing_value(self):
        for sub in SUBCOMMANDS:
            with self.subTest(subcommand=sub):
                self.assertUsageError([sub, *REQUIRED_ARGS.get(sub, []), "--port"],
                                      "mux: error: --port: 1 required PORT missing")

    def test_bad_serve_mode(self):
        for sub in SERVERS:
            with self.subTest(subcommand=sub):
                self.assertUsageError([sub, "--serve", "bogus"],
                                      "mux: error: --serve: 'bogus' is not a serving mode (single or fork)")

    def test_bad_sizes(self):
        cases = [
            (["chat-server", "--max-line", "0"], "mux: error: --max-line: 0 is below the minimum of 1"),
            (["chat-server", "--max-queue", "2X"],
             "mux: error: --max-queue: '2X' is not a size (bytes, or a number with K, M or G)"),
            (["chat-server", "--max-queue", "1000"],
             "mux: error: --max-queue: 1000 is below the minimum of 1024"),
            (["chat-server", "--max-line", "1.5K"],
             "mux: error: --max-line: '1.5K' is not a size (bytes, or a number with K, M or G)"),
            (["upload-server", "--max-size", "0"], "mux: error: --max-size: 0 is below the minimum of 1"),
            (["upload-server", "--max-size", "99999999999999999999G"],
             "mux: error: --max-size: '99999999999999999999G' is not a size (bytes, or a number with K, M or G)"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                self.assertUsageError(args, expected)

    def test_bad_max_clients(self):
        for sub in SERVERS:
            with self.subTest(subcommand=sub):
                for bad in ["0", "abc", "0x10", "-1", "10000001"]:
                    self.assertUsageError(
                        [sub, "--max-clients", bad],
                        f"mux: error: --max-clients: '{bad}' is not a whole number (1-10000000)")

    def test_upload_client_requires_file(self):
        self.assertUsageError(["upload-client"], "mux: error: --file is required")
        self.assertUsageError(["upload-client", "--name", "x"], "mux: error: --file is required")

    def test_verbose_and_quiet_together(self):
        for sub in SUBCOMMANDS:
            for flags in [["-v", "-q"], ["--verbose", "--quiet"]]:
                with self.subTest(subcommand=sub, flags=flags):
                    self.assertUsageError([sub, *REQUIRED_ARGS.get(sub, []), *flags],
                                          "mux: error: --verbose excludes --quiet")

    def test_unexpected_argument(self):
        for sub in SUBCOMMANDS:
            with self.subTest(subcommand=sub):
                extra = REQUIRED_ARGS.get(sub, [])
                self.assertUsageError([sub, *extra, "--bogus", "stray"],
                                      "mux: error: unexpected argument '--bogus'")


class RuntimeErrorTest(CliTestCase):
    def assertRuntimeError(self, args, expected):
        code, out, err = mux(*args)
        self.assertNoCrash(code, err)
        self.assertEqual(code, 1, f"mux {args}: stdout={out!r} stderr={err!r}")
        self.assertOneErrorLine(err, expected)

    @unittest.skipIf(PENDING["chat-client"], "chat-client is not implemented yet")
    def test_chat_client_connection_refused(self):
        port = free_port()
        self.assertRuntimeError(["chat-client", "--port", str(port)],
                                f"mux: error: connect to 127.0.0.1:{port}: Connection refused")

    @unittest.skipIf(PENDING["upload-client"], "upload-client is not implemented yet")
    def test_upload_client_connection_refused(self):
        port = free_port()
        self.assertRuntimeError(["upload-client", "--file", "/dev/null", "--port", str(port)],
                                f"mux: error: connect to 127.0.0.1:{port}: Connection refused")

    def assertPortInUse(self, sub):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind((muxtest.HOST, 0))
            listener.listen()
            port = listener.getsockname()[1]
            self.assertRuntimeError(
                [sub, "--port", str(port)], f"mux: error: listen on 127.0.0.1:{port}: Address already in use")

    @unittest.skipIf(PENDING["chat-server"], "chat-server is not implemented yet")
    def test_chat_server_address_in_use(self):
        self.assertPortInUse("chat-server")

    @unittest.skipIf(PENDING["upload-server"], "upload-server is not implemented yet")
    def test_upload_server_address_in_use(self):
        self.assertPortInUse("upload-server")

    @unittest.skipIf(PENDING["upload-client"], "upload-client is not implemented yet")
    def test_upload_client_missing_file(self):
        # Reported before connecting: nobody listens on the port, yet the error is about the file.
        self.assertRuntimeError(["upload-client", "--file", "/nonexistent", "--port", str(free_port())],
                                "mux: error: /nonexistent: No such file or directory")

    @unittest.skipIf(PENDING["upload-server"], "upload-server is not implemented yet")
    def test_upload_server_missing_output_dir(self):
        self.assertRuntimeError(["upload-server", "--port", "0", "--output-dir", "/nonexistent/dir"],
                                re.compile(r"mux: error: .*/nonexistent/dir.*: No such file or directory"))


if __name__ == "__main__":
    muxtest.main()
