"""The man page and `--help` cannot drift apart: every long flag that `mux --help` and
`mux <sub> --help` print is documented (roff-escaped) in man/mux.1, in that subcommand's own
section with its default, and the page lints clean with mandoc."""

import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import muxtest

MAN_PAGE = os.environ.get(
    "MUX_MAN_PAGE", os.path.join(os.path.dirname(__file__), "..", "..", "man", "mux.1"))

REQUIRED_SECTIONS = [
    "NAME", "SYNOPSIS", "DESCRIPTION", "CHAT-SERVER", "CHAT-CLIENT", "UPLOAD-SERVER",
    "UPLOAD-CLIENT", "PROTOCOL", "LISTEN ADDRESS", "SIGNALS", "RUNNING UNDER SYSTEMD",
    "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO",
]
ENVIRONMENT = ["LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID",
               "NOTIFY_SOCKET", "EDITRC", "HOME"]
README = os.path.join(os.path.dirname(MAN_PAGE), "..", "README.md")
COMPLETION_DIR = os.environ.get("MUX_COMPLETION_DIR", "")
REQUIRED_EXAMPLES = ["mux chat-server --port 5000", "mux upload-client --port 5001 --file test-file.txt"]
SEE_ALSO = ["nc(1)", "ncat(1)", "socat(1)", "iperf3(1)", "xxhsum(1)", "epoll(7)"]

# One option line of CLI11's help: "  --port PORT=5000   TCP port ...", "  -v,--verbose Excludes: ...",
# "  --file PATH REQUIRED ...", "  --max-clients N:UINT in [1 - 10000000]"; the argument follows
# after one space, the description after two or more.
OPTION_LINE = re.compile(r"^\s+(?:-[A-Za-z],)?(--[a-z][a-z0-9-]*)(?: (\S+))?(.*)$")


class Option:
    def __init__(self, flag, argument, rest):
        self.flag = flag
        self.takes_value = argument is not None and not argument.endswith(":")
        self.default = argument.split("=", 1)[1] if self.takes_value and "=" in argument else None
        self.required = self.takes_value and "REQUIRED" in rest

    def __repr__(self):
        return f"Option({self.flag!r}, default={self.default!r})"


def help_text(*args):
    result = muxtest.run_mux(*args, "--help")
    if result.returncode != 0:
        raise AssertionError(f"mux {' '.join(args)} --help exited {result.returncode}: {result.stderr!r}")
    return result.stdout.decode()


def options_of(*args):
    options = []
    for line in help_text(*args).splitlines():
        match = OPTION_LINE.match(line)
        if match:
            options.append(Option(*match.groups()))
    return options


def subcommands():
    """The subcommands `mux --help` lists, in order."""
    names = []
    in_list = False
    for line in help_text().splitlines():
        if line.startswith("Subcommands:"):
            in_list = True
        elif in_list and line.strip():
            names.append(line.split()[0])
    return names


def roff(text):
    """How a literal flag or command is written in roff source: every '-' escaped."""
    return text.replace("-", r"\-")


def unroff(text):
    return text.replace(r"\-", "-").replace(r"\(aq", "'").replace(r"\e", "\\")


def flag_pattern(flag):
    # `\-\-max` must not match inside `\-\-max\-line`.
    return re.compile(re.escape(roff(flag)) + r"(?![A-Za-z0-9]|\\-)")


def heading(line):
    """'CHAT-SERVER' for '.SH CHAT\\-SERVER' or '.SH "CHAT\\-SERVER"'; None for other lines."""
    match = re.match(r'^\.(?:SH|SS)\s+"?(.*?)"?\s*$', line)
    return unroff(match.group(1)).upper() if match else None


def sections(source):
    """Maps each .SH heading to its source lines (up to the next .SH)."""
    result = {}
    current = None
    for line in source.splitlines():
        if line.startswith(".SH"):
            current = heading(line)
            result[current] = []
        elif current is not None:
            result[current].append(line)
    return result


def option_item(lines, flag):
    """The body of the first tagged paragraph (.TP) whose tag names `flag`, or None."""
    pattern = flag_pattern(flag)
    for index, line in enumerate(lines):
        if line.startswith(".TP") and index + 1 < len(lines) and pattern.search(lines[index + 1]):
            body = []
            for following in lines[index + 1:]:
                if re.match(r"^\.(TP|SH|SS|PP|LP|P|IP)\b", following):
                    break
                body.append(following)
            return "\n".join(body)
    return None


def render(path):
    result = subprocess.run(["mandoc", "-T", "ascii", "-O", "width=200", path], capture_output=True)
    if result.returncode != 0:
        raise AssertionError(f"mandoc could not render {path}: {result.stderr!r}")
    return re.sub(r".\x08", "", result.stdout.decode())


class ManPageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(MAN_PAGE, encoding="utf-8") as page:
            cls.source = page.read()
        cls.sections = sections(cls.source)

    def test_mandoc_lint_is_silent(self):
        if shutil.which("mandoc") is None:
            self.fail("mandoc is not installed (CI installs it: apt-get install mandoc)")
        result = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", MAN_PAGE], capture_output=True)
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, b"", b""))

    def test_required_sections_in_order(self):
        present = list(self.sections)
        for name in REQUIRED_SECTIONS:
            self.assertIn(name, present)
        self.assertEqual([name for name in present if name in REQUIRED_SECTIONS], REQUIRED_SECTIONS)

    def test_help_lists_the_four_subcommands(self):
        self.assertEqual(subcommands(), ["chat-server", "chat-client", "upload-server", "upload-client"])

    def test_top_level_flags_are_documented(self):
        options = options_of()
        self.assertEqual([option.flag for option in options], ["--help", "--version"])
        for option in options:
            self.assertRegex(self.source, flag_pattern(option.flag))

    def test_every_subcommand_flag_is_in_its_section_with_its_default(self):
        for sub in subcommands():
            section = self.sections.get(sub.upper())
            self.assertIsNotNone(section, f"no .SH {roff(sub.upper())} section")
            options = options_of(sub)
            self.assertGreaterEqual(len(options), 5, f"{sub} --help: {options!r}")
            for option in options:
                with self.subTest(subcommand=sub, flag=option.flag):
                    # Anywhere in the page, roff-escaped...
                    self.assertRegex(self.source, flag_pattern(option.flag))
                    # ...and as an item of the subcommand's own section.
                    body = option_item(section, option.flag)
                    self.assertIsNotNone(body, f"no .TP item for {roff(option.flag)} under {sub}")
                    if option.takes_value and not option.required:
                        self.assertIn("Default", body)
                    if option.default is not None:
                        self.assertIn(roff(option.default), body)
                    if option.required:
                        self.assertIn("required", body)

    def test_synopsis_names_every_flag_of_its_subcommand(self):
        """Issue 24 (M12): the SYNOPSIS line of each subcommand names every flag --help lists."""
        synopsis = "\n".join(self.sections["SYNOPSIS"])
        parts = re.split(r"^\.B mux ", synopsis, flags=re.M)
        for sub in subcommands():
            with self.subTest(subcommand=sub):
                part = next(p for p in parts if p.startswith(roff(sub) + "\n"))
                for option in options_of(sub):
                    # -v | -q stand for these; --config and --check are in every subcommand (OPTIONS)
                    if option.flag in ("--help", "--verbose", "--quiet", "--config", "--check"):
                        continue
                    self.assertRegex(part, flag_pattern(option.flag))

    def test_synopsis_names_every_subcommand(self):
        synopsis = "\n".join(self.sections["SYNOPSIS"])
        for sub in subcommands():
            self.assertIn(roff(sub), synopsis)

    def test_required_examples_are_exact_lines(self):
        lines = [unroff(line).strip() for line in self.sections["EXAMPLES"]]
        for example in REQUIRED_EXAMPLES:
            self.assertIn(example, lines)

    def test_see_also(self):
        text = render(MAN_PAGE)
        see_also = text.split("SEE ALSO", 1)[1]
        for reference in SEE_ALSO:
            self.assertIn(reference, see_also)

    def test_protocol_and_exit_status_contents(self):
        text = " ".join(render(MAN_PAGE).split())
        for fragment in ["[NAME]: TEXT", "MUXUP/1 size name[ key=value]...\\n", "OK bytes hash\\n", "OK bytes hash name=saved\\n", "reply-name=1", "ERR reason\\n",
                         "/nick NAME", "/who", "/help", "/quit", "* server full",
                         "* server shutting down", "listening on HOST:PORT (serve mode)",
                         "Received bytes bytes from [Client N] address in seconds s (rate)",
                         "Sent bytes bytes in seconds s (rate), verified hash", "upload-N.bin"]:
            self.assertIn(fragment, text)
        status = "\n".join(self.sections["EXIT STATUS"])
        for code in ["0", "1", "2"]:
            self.assertRegex(status, rf"(?m)^\.TP\n\.B {code}$")


class EnvironmentFilesAndListenAddressTest(unittest.TestCase):
    """The sections a person reads before running mux as a service or on a network."""

    @classmethod
    def setUpClass(cls):
        with open(MAN_PAGE, encoding="utf-8") as page:
            cls.sections = sections(page.read())
        with open(README, encoding="utf-8") as readme:
            cls.readme = readme.read()

    def section_text(self, name):
        return " ".join(render_lines(self.sections[name]).split())

    def test_environment_names_every_variable_mux_reads(self):
        items = [unroff(line) for index, line in enumerate(self.sections["ENVIRONMENT"])
                 if index > 0 and self.sections["ENVIRONMENT"][index - 1] == ".TP"]
        named = {word.strip(",") for item in items for word in item.split()[1:]}
        for variable in ENVIRONMENT:
            self.assertIn(variable, named)

    def test_files_names_what_mux_reads_writes_and_installs(self):
        files = unroff("\n".join(self.sections["FILES"]))
        for fragment in ["~/.editrc", "DIR /.mux-upload- PID - N .part", "mux-chat.service",
                         "mux-chat.socket", "mux-upload.service", "mux-upload.socket",
                         "/var/lib/mux-upload", "share/bash-completion/completions/mux",
                         "share/zsh/vendor-completions/_mux", "LICENSE", "NEWS.md"]:
            self.assertIn(fragment, files)

    def test_the_temporary_upload_file_is_named_as_files_says(self):
        """.mux-upload-PID-N.part, from the outside: a real server, a half-sent upload."""
        out = tempfile.mkdtemp(prefix="mux-man-e2e-")
        self.addCleanup(shutil.rmtree, out, True)
        with muxtest.Server("upload-server", "--output-dir", out) as server:
            with server.connect() as sock:
                sock.sendall(b"MUXUP/1 1000 half.bin\n" + b"h" * 10)
                deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
                while not os.listdir(out):
                    self.assertLess(time.monotonic(), deadline, "no temporary file appeared")
                    time.sleep(0.02)
                self.assertEqual(os.listdir(out), [f".mux-upload-{server.proc.pid}-1.part"])

    def test_listen_address_says_what_listening_everywhere_exposes(self):
        for text in [" ".join(unroff("\n".join(self.sections["LISTEN ADDRESS"])).split()),
                     " ".join(self.readme.split())]:
            for fragment in ["127.0.0.1", "this machine only", "0.0.0.0", "::", "--tls-cert",
                             "--tls-client-ca", "--allow", "--deny", "readable"]:
                self.assertIn(fragment, text.replace("This machine only", "this machine only"))

    def test_examples_create_the_output_directory_first(self):
        """Every example runs as written on a fresh machine: --output-dir DIR needs DIR."""
        blocks = re.findall(r"```sh\n(.*?)```", self.readme, re.S)
        blocks.append(unroff("\n".join(self.sections["EXAMPLES"])))
        for block in blocks:
            block = "\n".join(re.sub(r"\s+#.*", "", line) for line in block.splitlines())
            made = set(re.findall(r"mkdir -p (\S+)", block))
            for directory in re.findall(r"--output-dir (\S+)", block):
                if directory.startswith("DIR") or directory.startswith("$"):
                    continue
                self.assertIn(directory, made, block)
            for file in re.findall(r"--file (\S+)", block):
                if file != "-":
                    self.assertRegex(block, rf"> {re.escape(file)}\b|{re.escape(file)} <", block)

    def test_readme_lists_every_test_suite(self):
        e2e = os.path.dirname(os.path.abspath(__file__))
        for name in sorted(os.listdir(e2e)):
            match = re.match(r"^test_(\w+)\.py$", name)
            if match:
                self.assertIn(f"| e2e-{match.group(1)} |", self.readme,
                              f"README.md's table of test suites has no line for e2e-{match.group(1)}")

    @unittest.skipUnless(COMPLETION_DIR, "MUX_COMPLETION_DIR not set (run through meson test)")
    def test_the_bash_completion_offers_every_documented_flag(self):
        for sub in subcommands():
            with self.subTest(subcommand=sub):
                script = ("source \"$1\"; COMP_WORDS=(mux \"$2\" --); COMP_CWORD=2; _mux; "
                          "printf '%s\\n' \"${COMPREPLY[@]}\"")
                result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash",
                                         os.path.join(COMPLETION_DIR, "mux"), sub],
                                        capture_output=True, text=True, timeout=30)
                offered = {word for word in result.stdout.split() if word.startswith("--")}
                documented = {option.flag for option in options_of(sub)}
                self.assertEqual(offered, documented)


def render_lines(lines):
    return unroff("\n".join(line for line in lines if not line.startswith(".")))


if __name__ == "__main__":
    muxtest.main()
