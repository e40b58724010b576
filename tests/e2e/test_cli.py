"""The command line as a person meets it: help, version, usage errors (exit 2, one line
`mux: error: ...` naming the flag) and runtime failures (exit 1, `mux: error: <what>: <why>`),
never a traceback, abort or hang."""

import os
import re
import tempfile
import shutil
import socket
import subprocess
import unittest

import muxtest

SUBCOMMANDS = ["chat-server", "chat-client", "upload-server", "upload-client"]
SERVERS = ["chat-server", "upload-server"]
COMMON_FLAGS = ["--help", "--host", "--port", "--verbose", "--quiet", "--config", "--check"]
# How both clients reach their server (core/service/client_link.hpp).
CLIENT_LINK_FLAGS = ["--connect-timeout", "--tls", "--tls-ca", "--tls-server-name", "--tls-pin",
                     "--tls-cert", "--tls-key", "--token-file"]
# Interrupted uploads (test_resume.py).
RESUME_CLIENT_FLAGS = ["--limit-rate", "--no-resume", "--retry"]
RESUME_SERVER_FLAGS = ["--keep-partial"]
FLAGS = {
    "chat-server": COMMON_FLAGS + ["--log-level", "--serve", "--max-clients", "--max-line", "--max-queue",
                                   "--max-per-address", "--keepalive",
                                   "--line-rate", "--line-burst", "--byte-rate", "--byte-burst",
                                   "--command-rate", "--command-burst", "--flood-timeout", "--auth-timeout",
                                   "--tls", "--tls-cert-cache", "--tls-cert", "--tls-key", "--tls-client-ca", "--allow", "--deny",
                                   "--redis", "--redis-password-file", "--room-secret-file", "--redis-tls-ca", "--redis-tls-server-name", "--redis-tls-cert",
                                   "--redis-tls-key", "--room", "--history", "--announce-up-to", "--token-file"],
    "chat-client": COMMON_FLAGS + CLIENT_LINK_FLAGS + ["--nick", "--timestamps", "--confirm-timeout",
                                                       "--no-reconnect", "--reconnect-timeout"],
    "upload-server": COMMON_FLAGS + ["--log-level", "--serve", "--output-dir", "--sync", "--max-size",
                                     "--max-clients", "--min-free", "--max-per-address",
                                     "--header-timeout", "--idle-timeout", "--min-rate", "--tls", "--tls-cert-cache",
                                     "--tls-cert", "--tls-key",
                                     "--tls-client-ca", "--allow", "--deny", "--token-file"]
    + RESUME_SERVER_FLAGS,
    "upload-client": COMMON_FLAGS + CLIENT_LINK_FLAGS + ["--file", "--name", "--timeout"]
    + RESUME_CLIENT_FLAGS,
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


def flag_help(subcommand, flag):
    """The --help entry of `flag`, its wrapped lines joined with single spaces."""
    _, out, _ = mux(subcommand, "--help")
    entry = []
    for line in out.splitlines():
        starts_flag = re.match(r"^  (?:-[a-zA-Z],)?--", line) is not None
        if entry and (starts_flag or not line.strip()):
            break
        if entry or (starts_flag and re.match(rf"^  (?:-[a-zA-Z],)?{flag}\b", line)):
            entry.append(line.strip())
    return " ".join(entry)


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
        self.assertLineMatches(err[:-1], expected)

    def assertLineMatches(self, line, expected):
        self.assertTrue(line.startswith("mux: error: "), repr(line))
        if isinstance(expected, str):
            self.assertEqual(line, expected)
        else:
            self.assertRegex(line, expected)
            self.assertIsNotNone(expected.fullmatch(line), repr(line))

    def assertUsageLines(self, err, expected, subcommand):
        """A usage error: the error line, then the hint naming where to read more."""
        lines = err.split("\n")
        self.assertEqual(len(lines), 3, f"expected an error line and a hint: {err!r}")
        self.assertLineMatches(lines[0], expected)
        where = f"mux {subcommand} --help" if subcommand else "mux --help"
        self.assertEqual(lines[1], f"Try '{where}' for more information.")
        self.assertEqual(lines[2], "")


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

    def test_help_shows_limits(self):
        self.assertRegex(flag_help("chat-server", "--max-line"), r"^--max-line BYTES=4096 .*\[1 to 1M\]$")
        self.assertRegex(flag_help("chat-server", "--max-queue"),
                         r"^--max-queue BYTES=1048576 .*\[1K to 1G\]$")
        self.assertRegex(flag_help("chat-server", "--max-clients"), r"^--max-clients N .*\[1 to 10000000\]$")
        self.assertRegex(flag_help("upload-server", "--max-size"), r"^--max-size BYTES .*\[1 to 1024T\]$")

    def test_help_fits_in_100_columns(self):
        for sub in ["", *SUBCOMMANDS]:
            with self.subTest(subcommand=sub):
                _, out, _ = mux(*([sub] if sub else []), "--help")
                for line in out.splitlines():
                    self.assertLessEqual(len(line), 100, line)

    def test_usage_line_names_mux_and_the_subcommand(self):
        for sub in SUBCOMMANDS:
            with self.subTest(subcommand=sub):
                _, out, _ = mux(sub, "--help")
                self.assertTrue(out.startswith(f"Usage: mux {sub} [OPTIONS]\n"), out)

    def test_help_speaks_to_clients_and_servers(self):
        for sub in SUBCOMMANDS:
            with self.subTest(subcommand=sub):
                _, out, _ = mux(sub, "--help")
                host = next(line for line in out.splitlines() if line.startswith("  --host"))
                port = next(line for line in out.splitlines() if line.startswith("  --port"))
                verbose = next(line for line in out.splitlines() if "--verbose" in line)
                if sub in SERVERS:
                    self.assertIn("listen on", host)
                    self.assertIn("this machine only", host)
                    self.assertIn("0 picks a free port", port)
                    self.assertIn("Log", verbose)
                else:
                    self.assertIn("connect to", host)
                    self.assertNotIn("listen", host + port)
                    self.assertNotIn("free port", port)
                    self.assertNotIn("Log", verbose)

    def test_capital_v_is_version(self):
        code, out, err = mux("-V")
        self.assertEqual((code, err), (0, ""))
        self.assertRegex(out, r"\Amux \d+\.\d+\.\d+\n\Z")

    def test_unwritable_stdout_is_a_failure(self):
        """`mux --help > /dev/full` must not claim success."""
        for args in [["--help"], ["--version"], ["-V"], ["chat-server", "--help"]]:
            with self.subTest(args=args):
                with open("/dev/full", "wb") as full:
                    result = subprocess.run([muxtest.MUX, *args], stdout=full, stderr=subprocess.PIPE,
                                            stdin=subprocess.DEVNULL, timeout=muxtest.DEFAULT_TIMEOUT)
                err = result.stderr.decode()
                self.assertEqual(result.returncode, 1, err)
                self.assertOneErrorLine(err, "mux: error: standard output: No space left on device")


class UsageErrorTest(CliTestCase):
    def assertUsageError(self, args, expected):
        code, out, err = mux(*args)
        self.assertNoCrash(code, err)
        self.assertEqual((code, out), (2, ""), f"mux {args}: stderr={err!r}")
        self.assertUsageLines(err, expected, args[0] if args[0] in SUBCOMMANDS else "")

    def test_no_subcommand_prints_usage_and_exits_2(self):
        code, out, err = mux()
        self.assertNoCrash(code, err)
        self.assertEqual((code, out), (2, ""))
        self.assertIn("Usage: mux", err)
        for sub in SUBCOMMANDS:
            self.assertIn(sub, err)
        self.assertEqual(err.count("mux: error: "), 1, err)
        self.assertTrue(err.endswith(
            "mux: error: missing subcommand: chat-server, chat-client, upload-server or upload-client\n"
            "Try 'mux --help' for more information.\n"), repr(err))

    def test_unknown_subcommand_is_one_line_and_a_hint(self):
        self.assertUsageError(["bogus"], "mux: error: unknown subcommand 'bogus'")
        self.assertUsageError(["chat-sever"],
                              "mux: error: unknown subcommand 'chat-sever' (did you mean 'chat-server'?)")
        self.assertUsageError(["uplod-client"],
                              "mux: error: unknown subcommand 'uplod-client' (did you mean 'upload-client'?)")

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
                                      "mux: error: --port needs a value (PORT)")

    def test_switch_takes_no_value(self):
        self.assertUsageError(["chat-server", "--verbose=3"], "mux: error: --verbose takes no value")

    def test_bad_serve_mode(self):
        for sub in SERVERS:
            with self.subTest(subcommand=sub):
                self.assertUsageError([sub, "--serve", "bogus"],
                                      "mux: error: --serve: 'bogus' is not a serving mode (single or fork)")

    def test_bad_sizes(self):
        not_a_size = "is not a size (a whole number of bytes, optionally followed by K, M, G or T: 64K, 1MiB, 2G)"
        cases = [
            (["chat-server", "--max-line", "0"], "mux: error: --max-line: 0 is below the minimum of 1"),
            (["chat-server", "--max-queue", "2X"], f"mux: error: --max-queue: '2X' {not_a_size}"),
            (["chat-server", "--max-queue", "1000"],
             "mux: error: --max-queue: 1000 is below the minimum of 1K"),
            (["chat-server", "--max-line", "1.5K"], f"mux: error: --max-line: '1.5K' {not_a_size}"),
            (["upload-server", "--max-size", "0"], "mux: error: --max-size: 0 is below the minimum of 1"),
            (["upload-server", "--max-size", "99999999999999999999G"],
             f"mux: error: --max-size: '99999999999999999999G' {not_a_size}"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                self.assertUsageError(args, expected)

    def test_every_size_and_count_flag_has_an_upper_bound(self):
        """Issue 9.6: absurd values are refused at parse time, before any arithmetic on them."""
        cases = [
            (["chat-server", "--max-line", "18446744073709551615"],
             "mux: error: --max-line: 18446744073709551615 is above the maximum of 1M"),
            (["chat-server", "--max-line", "1T"], "mux: error: --max-line: 1T is above the maximum of 1M"),
            (["chat-server", "--max-line", "1025K"], "mux: error: --max-line: 1025K is above the maximum of 1M"),
            (["chat-server", "--max-queue", "2G"], "mux: error: --max-queue: 2G is above the maximum of 1G"),
            (["upload-server", "--max-size", "1025T"],
             "mux: error: --max-size: 1025T is above the maximum of 1024T"),
        ]
        for sub in SERVERS:
            cases.append(([sub, "--max-clients", "18446744073709551616"],
                          "mux: error: --max-clients: 18446744073709551616 is above the maximum of 10000000"))
        for args, expected in cases:
            with self.subTest(args=args):
                self.assertUsageError(args, expected)

    def test_every_time_flag_takes_one_duration_syntax(self):
        """Issue 24: 500ms, 10s, 1m, 1h and a bare number (seconds) on every time flag; the same
        refusal wording on each."""
        time_flags = {"chat-server": ["--keepalive", "--flood-timeout"],
                      "chat-client": ["--connect-timeout", "--confirm-timeout", "--reconnect-timeout"],
                      "upload-server": ["--header-timeout", "--idle-timeout"],
                      "upload-client": ["--connect-timeout", "--timeout"]}
        not_a_duration = ("is not a duration (seconds, or a whole number followed by ms, s, m or h: "
                          "500ms, 30s, 5m)")
        for sub, flags in time_flags.items():
            extra = REQUIRED_ARGS.get(sub, [])
            for flag in flags:
                with self.subTest(subcommand=sub, flag=flag):
                    self.assertUsageError([sub, *extra, flag, "1.5m"],
                                          f"mux: error: {flag}: '1.5m' {not_a_duration}")
                    self.assertUsageError([sub, *extra, flag, "2d"],
                                          f"mux: error: {flag}: '2d' {not_a_duration}")
                    self.assertUsageError([sub, *extra, flag, "25h"],
                                          f"mux: error: {flag}: 25h is above the maximum of "
                                          f"{'1h' if flag in ('--connect-timeout', '--confirm-timeout') else '24h'}")
                    help_text = mux(sub, "--help")[1]
                    self.assertRegex(help_text, rf"{flag} DURATION=\S+")
        # And they are taken: a server started with each form is listening.
        for args in (["upload-server", "--header-timeout", "1500ms", "--idle-timeout", "1m"],
                     ["chat-server", "--keepalive", "2m", "--flood-timeout", "10"]):
            with self.subTest(args=args), muxtest.Server(*args) as server:
                self.assertTrue(server.port > 0)

    def test_bad_max_clients(self):
        for sub in SERVERS:
            with self.subTest(subcommand=sub):
                for bad, why in [("0", "0 is below the minimum of 1"),
                                 ("abc", "'abc' is not a whole number"),
                                 ("0x10", "'0x10' is not a whole number"),
                                 ("-1", "'-1' is not a whole number"),
                                 ("10000001", "10000001 is above the maximum of 10000000")]:
                    self.assertUsageError([sub, "--max-clients", bad], f"mux: error: --max-clients: {why}")

    def test_upload_client_requires_file(self):
        self.assertUsageError(["upload-client"], "mux: error: --file is required")
        self.assertUsageError(["upload-client", "--name", "x"], "mux: error: --file is required")

    def test_verbose_and_quiet_together(self):
        for sub in SUBCOMMANDS:
            for flags, named in [(["-v", "-q"], "--verbose and --quiet"),
                                 (["--quiet", "--verbose"], "--quiet and --verbose")]:
                with self.subTest(subcommand=sub, flags=flags):
                    self.assertUsageError([sub, *REQUIRED_ARGS.get(sub, []), *flags],
                                          f"mux: error: {named} cannot be used together")

    def test_unknown_flag(self):
        for sub in SUBCOMMANDS:
            with self.subTest(subcommand=sub):
                extra = REQUIRED_ARGS.get(sub, [])
                self.assertUsageError([sub, *extra, "--bogus", "stray"], "mux: error: unknown flag '--bogus'")
        self.assertUsageError(["--bogus"], "mux: error: unknown flag '--bogus'")

    def test_unexpected_argument(self):
        self.assertUsageError(["chat-server", "stray"], "mux: error: unexpected argument 'stray'")

    def test_typo_suggestions(self):
        self.assertUsageError(["chat-server", "--max-lines", "5"],
                              "mux: error: unknown flag '--max-lines' (did you mean '--max-line'?)")
        self.assertUsageError(["upload-client", "--file", "x", "--nmae=y"],
                              "mux: error: unknown flag '--nmae' (did you mean '--name'?)")
        self.assertUsageError(["chat-client", "--serve", "fork"],
                              "mux: error: chat-client takes no flag '--serve' "
                              "(that is a flag of chat-server and upload-server)")

    def test_no_parser_library_wording(self):
        """The phrases CLI11 uses never reach a person."""
        for args in [["chat-server", "--port"], ["chat-server", "--port", "1", "--port", "2", "--bogus"],
                     ["chat-server", "--max-clients", "0"], ["upload-client"], ["chat-server", "-v", "-q"]]:
            with self.subTest(args=args):
                _, _, err = mux(*args)
                for phrase in ["required PORT missing", "At Most", "'0' is not a whole number", "Excludes",
                               "The following argument", "A subcommand is required", "Run with --help"]:
                    self.assertNotIn(phrase, err)


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



class StartWarningTest(unittest.TestCase):
    """Issue 24: how a server is exposed is said once, at start, at warning level."""

    def warnings(self, server):
        return [line for line in server.stdout_lines if " warning: " in f" {line}"]

    def token_file(self):
        """A mode-600 token file in a directory removed after the test."""
        work = tempfile.mkdtemp(prefix="mux-warn-")
        self.addCleanup(shutil.rmtree, work, True)
        tokens = os.path.join(work, "tokens")
        with open(os.open(tokens, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("s3cret-0123456789\n")
        return tokens

    def test_tokens_without_tls(self):
        tokens = self.token_file()
        for sub in ("chat-server", "upload-server"):
            with self.subTest(server=sub), muxtest.Server(sub, "--token-file", tokens) as server:
                server.wait_for_log(r"warning: --token-file without TLS: tokens cross the network "
                                    r"readable \(add --tls or --tls-cert\)$")
                self.assertEqual(len(self.warnings(server)), 1, server.stdout_lines)
            with self.subTest(server=sub, tls=True), \
                    muxtest.Server(sub, "--token-file", tokens, "--tls") as server:
                server.wait_for_log(r"clients connect with --tls-pin")
                self.assertEqual(self.warnings(server), [])

    def test_sync_none_without_output_dir(self):
        with muxtest.Server("upload-server", "--sync", "none") as server:
            server.wait_for_log(r"warning: --sync none does nothing without --output-dir "
                                r"\(uploads are not saved\)$")
            self.assertEqual(len(self.warnings(server)), 1)

    def test_loopback_plaintext_is_not_warned_about(self):
        for sub in ("chat-server", "upload-server"):
            with self.subTest(server=sub), muxtest.Server(sub) as server:
                with server.connect():
                    pass
                self.assertEqual(self.warnings(server), [])

    def test_a_client_warns_only_off_loopback(self):
        tokens = self.token_file()
        with muxtest.Server("upload-server", "--token-file", tokens) as server:
            result = muxtest.run_mux("upload-client", "--port", str(server.port), "--token-file",
                                     tokens, "--file", "-", input=b"x")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertNotIn(b"warning", result.stderr)


if __name__ == "__main__":
    muxtest.main()
