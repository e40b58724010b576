#!/usr/bin/env python3
"""Soak run: both servers in both serve modes under honest and hostile load at once, then
invariants that must hold whatever defenses the servers have.

Each of the four phases (chat-server single/fork, upload-server single/fork) starts the real
binary, records its fd count and RSS, and for a bounded time runs:
  honest clients from 127.0.0.1   chat: stayers that send numbered lines and read everything,
                                  and short-lived clients that do the same, then /quit;
                                  uploads: the real `mux upload-client` with random files
  hostile clients from 127.0.0.2+ idle, dripping a byte at a time, flooding, malformed input,
                                  connection resets (one address per kind)
  in fork mode                    random SIGKILLs of the processes serving hostile clients
Afterwards every client is gone and the run checks: the server's fd count is back to its
baseline, its RSS grew by less than a bound, it has no zombie children (nor any children left),
the output directory holds no temporary file, every honest line reached every honest stayer
exactly once and in order, every honest upload was verified by the client and saved byte for
byte; and the server exits 0 on SIGTERM with nothing on stderr. The figures are printed.

    tests/soak/soak.py [--mux build/mux] [--duration 150] [--seed N] [--only chat-fork ...]

Standard library only; every loop is bounded in time, every socket has a timeout.
"""

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import muxtest  # noqa: E402  (Server: the real binary, its log lines collected)

HONEST = "127.0.0.1"
HOSTILE = {"idle": "127.0.0.2", "drip": "127.0.0.3", "flood": "127.0.0.4",
           "malformed": "127.0.0.5", "reset": "127.0.0.6"}
SOCKET_TIMEOUT = 15.0  # a welcome from a fork-mode server took over 5 s at load 37 (CI beside four builds)
SETTLE_TIMEOUT = 20.0         # after the load: for fds, children and temp files to settle
RSS_GROWTH_LIMIT = 64 << 20   # bytes


# ---------------------------------------------------------------- process figures

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def children(pid):
    """(child pid, state letter) for every process whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def describe_fds(pid):
    """The open fds of `pid`, sockets shown with their TCP state and peer (for failures)."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for row in f:
                    fields = row.split()
                    remote_ip, remote_port = fields[2].split(":")
                    peer = ".".join(str(int(remote_ip[i:i + 2], 16)) for i in (6, 4, 2, 0)) \
                        if len(remote_ip) == 8 else remote_ip
                    sockets[fields[9]] = (f"{TCP_STATES.get(fields[3], fields[3])} peer {peer}:"
                                          f"{int(remote_port, 16)} sendq {int(fields[4].split(':')[0], 16)} "
                                          f"recvq {int(fields[4].split(':')[1], 16)}")
        except OSError:
            pass
    shown = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        match = re.match(r"socket:\[(\d+)\]", target)
        shown.append(f"{fd}={sockets.get(match.group(1), target) if match else target}")
    return shown


def wait_until(predicate, timeout):
    """Polls `predicate` until true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def connect_from(source, port, timeout=SOCKET_TIMEOUT):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect((HONEST, port))
    except OSError:
        sock.close()
        raise
    return sock


def reset(sock):
    """Closes with an RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Phase:
    """What every phase shares: the server, a stop flag, counters and the list of failures."""

    def __init__(self, name, args, load_seconds, rng):
        self.name = name
        self.load_seconds = load_seconds
        self.rng = rng
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.threads = []
        self.server = muxtest.Server(*args)
        self.pid = self.server.proc.pid
        self.port = self.server.port
        # The loop makes its signalfd after the first log line: a served probe shows it runs. Each
        # client holds one fd in the server while connected (its socket, or its fork-mode link).
        probe = connect_from(HONEST, self.port)
        if args[0] == "chat-server":
            muxtest.LineReader(probe).line(SOCKET_TIMEOUT)
            self.fd_baseline = fd_count(self.pid) - 1
        else:
            time.sleep(0.2)  # upload-server answers nothing before an upload; give it time
            self.fd_baseline = fd_count(self.pid) - 1
        probe.close()
        self.rss_baseline = rss_bytes(self.pid)
        self.rss_peak = self.rss_baseline

    def count(self, key, by=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + by

    def fail(self, message):
        with self.lock:
            self.failures.append(message)

    def spawn(self, target, *args):
        thread = threading.Thread(target=self.guarded, args=(target, *args), daemon=True)
        thread.start()
        self.threads.append(thread)

    def guarded(self, target, *args):
        try:
            target(*args)
        except Exception as error:  # a harness bug must show, not vanish with its thread
            self.fail(f"{target.__name__}: {type(error).__name__}: {error}")

    def run_load(self):
        deadline = time.monotonic() + self.load_seconds
        while time.monotonic() < deadline and self.server.proc.poll() is None:
            self.rss_peak = max(self.rss_peak, rss_bytes(self.pid))
            time.sleep(0.25)
        self.stop.set()

    def join_threads(self, timeout=30):
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                self.fail(f"a load thread did not stop within {timeout}s")
                return

    # ------------------------------------------------------------ hostile clients (shared)

    def hostile_loop(self, kind, make_one, pause=0.05):
        """Makes hostile connections from the kind's own address until the phase stops."""
        while not self.stop.is_set():
            try:
                sock = connect_from(HOSTILE[kind], self.port)
            except OSError:
                self.count(f"{kind} refused at connect")
                time.sleep(0.2)
                continue
            self.count(f"{kind} connections")
            try:
                make_one(sock)
            except OSError:
                pass  # the server closed or reset it: that is its right
            finally:
                sock.close()
            time.sleep(pause)

    def idle(self, _preamble):
        def one(sock):
            # Holds the connection until the server drops it or the phase ends.
            sock.settimeout(0.5)
            while not self.stop.is_set():
                try:
                    if not sock.recv(65536):
                        self.count("idle closed by server")
                        return
                except socket.timeout:
                    continue
        for _ in range(6):
            self.spawn(self.hostile_loop, "idle", one)

    def drip(self, preamble):
        def one(sock):
            if preamble:
                sock.sendall(preamble)
            while not self.stop.is_set():
                sock.sendall(b"d")  # never a newline, never the whole upload
                time.sleep(0.2)
        for _ in range(4):
            self.spawn(self.hostile_loop, "drip", one)

    def resets(self, preamble):
        def one(sock):
            sock.sendall(preamble + bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(0, 3000))))
            reset(sock)
        self.spawn(self.hostile_loop, "reset", one, 0.02)

    def killer(self, joined_pattern):
        """Fork mode: SIGKILLs a random process serving a hostile client now and then. Pids come
        from the server's log and are checked to still be its children before the kill."""
        pattern = re.compile(joined_pattern)
        while not self.stop.wait(self.rng.uniform(0.3, 1.0)):
            with self.server._cond:
                lines = list(self.server.stdout_lines)
            pids = set()
            for line in lines:
                match = pattern.search(line)
                if match and match.group("ip") != HONEST:
                    pids.add(int(match.group("pid")))
            alive = [pid for pid, state in children(self.pid) if pid in pids and state != "Z"]
            if alive:
                victim = self.rng.choice(alive)
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.count("children killed")
                except ProcessLookupError:
                    pass

    # ------------------------------------------------------------ after the load

    def settle_and_check(self, extra_check=None):
        """Waits for the server to be back at rest, then checks fds, RSS and children."""
        no_children = wait_until(lambda: not children(self.pid), SETTLE_TIMEOUT)
        if not no_children:  # what they hold, before they go
            self.fail(f"children still running {SETTLE_TIMEOUT:.0f} s after the load: "
                      f"{[(pid, state, describe_fds(pid)) for pid, state in children(self.pid)][:5]}")
        fds_back = wait_until(lambda: fd_count(self.pid) <= self.fd_baseline, SETTLE_TIMEOUT)
        self.fd_final = fd_count(self.pid)
        self.rss_final = rss_bytes(self.pid)
        self.rss_peak = max(self.rss_peak, self.rss_final)
        left = children(self.pid)
        self.zombies = [pid for pid, state in left if state == "Z"]
        if self.zombies:
            self.fail(f"zombie children: {self.zombies}")
        if not fds_back:
            self.fail(f"fd count {self.fd_final}, baseline {self.fd_baseline}: {describe_fds(self.pid)}")
        growth = self.rss_final - self.rss_baseline
        if growth > RSS_GROWTH_LIMIT:
            self.fail(f"RSS grew by {growth >> 20} MiB (limit {RSS_GROWTH_LIMIT >> 20} MiB)")
        if extra_check:
            extra_check()
        if self.server.proc.poll() is not None:
            self.fail(f"the server died during the run: status {self.server.proc.returncode}")
            return
        self.server.signal(signal.SIGTERM)
        try:
            status = self.server.wait(timeout=SETTLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.server.proc.kill()
            status = self.server.wait()
            self.fail("the server did not stop within {SETTLE_TIMEOUT}s of SIGTERM")
        if status != 0:
            self.fail(f"exit status {status} after SIGTERM")
        if self.server.stderr_lines:
            self.fail(f"stderr: {self.server.stderr_lines[:20]}")

    def report(self, honest_figures):
        print(f"== {self.name}: {'FAILED' if self.failures else 'ok'}")
        print(f"   fds: baseline {self.fd_baseline}, after {self.fd_final}; "
              f"RSS: baseline {self.rss_baseline >> 10} KiB, peak {self.rss_peak >> 10} KiB, "
              f"after {self.rss_final >> 10} KiB (growth {(self.rss_final - self.rss_baseline) >> 10} KiB, "
              f"limit {RSS_GROWTH_LIMIT >> 20} MiB); zombies {len(self.zombies)}")
        print(f"   honest: {honest_figures}")
        print("   hostile: " + ", ".join(f"{key} {value}" for key, value in sorted(self.counts.items())))
        for failure in self.failures:
            print(f"   FAIL: {failure}")


# ---------------------------------------------------------------- chat

WELCOME = re.compile(r"^\* welcome, you are (Client \d+) ")
HONEST_LINE = re.compile(r"^\[(Client \d+)\]: (h\d+) (\d+) ")


class HonestChatter:
    """One honest chat client: a reader thread that records every line, and a sender that sends
    numbered lines a few times a second. `stays` clients are checked for what they received."""

    def __init__(self, phase, ident, stays):
        self.phase = phase
        self.ident = ident
        self.stays = stays
        self.sent = []
        self.received = []  # (sender name, ident, seq)
        self.sock = connect_from(HONEST, phase.port)
        reader = muxtest.LineReader(self.sock)
        match = WELCOME.match(reader.line(SOCKET_TIMEOUT))
        if not match:
            raise AssertionError("no welcome line")
        self.pending = reader.buffer
        self.name = match.group(1)
        self.closed = False
        self.reader_thread = threading.Thread(target=self.read_all, daemon=True)
        self.reader_thread.start()

    def read_all(self):
        # Whole chunks split at once: a reader that falls behind a flood would be dropped as too
        # slow, and that would be the harness's fault, not the server's.
        self.sock.settimeout(60)
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            *lines, self.pending = (self.pending + chunk).split(b"\n")
            for line in lines:
                if line.startswith(b"[Client "):
                    match = HONEST_LINE.match(line.decode("utf-8", "replace"))
                    if match:
                        self.received.append((match.group(1), match.group(2), int(match.group(3))))

    def send_lines(self, count=None, interval=0.1):
        seq = 0
        while not self.phase.stop.is_set() and (count is None or seq < count):
            line = f"{self.ident} {seq} " + "honest text " * self.phase.rng.randint(0, 6)
            self.sock.sendall(line.encode() + b"\n")
            self.sent.append(seq)
            seq += 1
            time.sleep(interval)


def run_chat(mode, load_seconds, rng):
    # A large --max-queue: the honest readers here are Python threads on a shared machine, and
    # falling 64 KiB behind a flood must not count as the server's fault.
    phase = Phase(f"chat-server --serve {mode}", ["chat-server", "--serve", mode, "--max-queue", "16M"],
                  load_seconds, rng)
    stayers = [HonestChatter(phase, f"h{k}", True) for k in range(5)]
    transients = []
    transients_lock = threading.Lock()

    def transient_loop():
        number = 100
        while not phase.stop.is_set():
            chatter = HonestChatter(phase, f"h{number}", False)
            with transients_lock:
                transients.append(chatter)
            number += 1
            chatter.send_lines(count=rng.randint(5, 30), interval=0.05)
            chatter.sock.sendall(b"/quit\n")
            chatter.reader_thread.join(SOCKET_TIMEOUT)
            chatter.sock.close()

    for chatter in stayers:
        phase.spawn(chatter.send_lines)
    phase.spawn(transient_loop)
    phase.idle(b"")
    phase.drip(b"")
    phase.resets(b"hello without an end")

    def flood(sock):
        # Reads nothing; sends lines as fast as the server takes them, a bounded amount.
        block = b"".join(b"flood %06d %s\n" % (i, b"f" * 80) for i in range(2000))
        for _ in range(3):
            if phase.stop.is_set():
                return
            sock.sendall(block)
    phase.spawn(phase.hostile_loop, "flood", flood, 0.5)

    garbage = [b"\x1b[2J\x1b]0;pwned\x07", b"\xff\xfe\xc0\xaf\xed\xa0\x80", b"\x00" * 100,
               b"x" * 20000, b"/nick \xe2\x80\xae evil\n", b"/nick " + b"A" * 100 + b"\n",
               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"MUXUP/1 10 x\n", b"/who\n" * 50,
               b"\r\r\r\n\n\n", "\u202eevil\u2066 bidi\n".encode()]

    def malformed(sock):
        for _ in range(rng.randint(1, 6)):
            sock.sendall(rng.choice(garbage) + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))))
        if rng.random() < 0.5:
            sock.sendall(b"/quit\n")
    phase.spawn(phase.hostile_loop, "malformed", malformed, 0.05)
    if mode == "fork":
        phase.spawn(phase.killer, r"joined from (?P<ip>[\d.]+):\d+ \(pid (?P<pid>\d+)\)")

    phase.run_load()
    phase.join_threads()

    # Every honest line is delivered to every stayer: wait for the tails to arrive, then compare.
    senders = stayers + transients

    def all_delivered():
        for reader in stayers:
            for sender in senders:
                if sender is not reader and sum(1 for r in reader.received if r[1] == sender.ident) < len(sender.sent):
                    return False
        return True
    wait_until(all_delivered, SETTLE_TIMEOUT)
    lines_sent = sum(len(sender.sent) for sender in senders)
    deliveries = 0
    for reader in stayers:
        if reader.closed:
            phase.fail(f"honest stayer {reader.name} was disconnected")
        for sender in senders:
            if sender is reader:
                continue
            got = [(name, seq) for name, ident, seq in reader.received if ident == sender.ident]
            expected = [(sender.name, seq) for seq in sender.sent]
            deliveries += len(got)
            if got != expected:
                phase.fail(f"{reader.name} got {len(got)} lines of {sender.ident} ({sender.name}), "
                           f"expected {len(expected)} in order; first difference at "
                           f"{next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))}")
    for chatter in stayers:
        # shutdown, not just close: close() would wait for the reader thread's recv to let go
        # of the socket, and no FIN would go out until then.
        chatter.sock.shutdown(socket.SHUT_RDWR)
        chatter.reader_thread.join(SOCKET_TIMEOUT)
        chatter.sock.close()
    phase.settle_and_check()
    phase.report(f"{len(stayers)} stayers and {len(transients)} short-lived clients sent {lines_sent} lines; "
                 f"{deliveries} deliveries to stayers checked in order")
    return phase.failures


# ---------------------------------------------------------------- uploads

def run_upload(mode, load_seconds, rng, mux):
    work = tempfile.mkdtemp(prefix="mux-soak-")
    out = os.path.join(work, "out")
    os.mkdir(out)
    phase = Phase(f"upload-server --serve {mode}",
                  ["upload-server", "--serve", mode, "-v", "--output-dir", out, "--max-size", "64M"],
                  load_seconds, rng)
    honest = []  # (name, sha256, size)
    honest_lock = threading.Lock()

    def uploader(k):
        seq = 0
        while not phase.stop.is_set():
            size = rng.choice([0, 1, 1000, 65536, rng.randint(1, 3 << 20)])
            path = os.path.join(work, f"src-{k}.bin")
            data = os.urandom(size)
            with open(path, "wb") as f:
                f.write(data)
            name = f"honest-{k}-{seq}.bin"
            seq += 1
            result = subprocess.run([mux, "upload-client", "--host", HONEST, "--port", str(phase.port),
                                     "--file", path, "--name", name, "-q"],
                                    capture_output=True, timeout=60)
            if result.returncode != 0:
                phase.fail(f"honest upload {name} ({size} bytes): status {result.returncode}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
                continue
            with honest_lock:
                honest.append((name, hashlib.sha256(data).hexdigest(), size))

    for k in range(3):
        phase.spawn(uploader, k)
    phase.idle(b"")
    phase.drip(b"MUXUP/1 100000 drip.bin\n")
    phase.resets(b"MUXUP/1 5000000 reset.bin\n")

    def flood(sock):
        # Announces more than it sends, sends fast, then resets: an incomplete upload.
        sock.sendall(b"MUXUP/1 60000000 flood.bin\n")
        chunk = os.urandom(1 << 20)
        for _ in range(rng.randint(1, 8)):
            if phase.stop.is_set():
                break
            sock.sendall(chunk)
        reset(sock)
    phase.spawn(phase.hostile_loop, "flood", flood, 0.3)

    bad = [b"MUXUP/1 abc x\n", b"MUXUP/1 5\n", b"MUXUP/1 99999999999999999999999 x\n",
           b"MUXUP/1 " + b"9" * 5000, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"MUXUP/1 3 ../../evil\nab",
           b"MUXUP/1 100 %2e%2e%2fx\n" + b"y" * 50, b"MUXUP/1 999999999999 huge.bin\n", b"\x00\xff" * 100]

    def malformed(sock):
        sock.sendall(rng.choice(bad))
        if rng.random() < 0.5:
            sock.shutdown(socket.SHUT_WR)
            try:
                sock.recv(4096)
            except OSError:
                pass
    phase.spawn(phase.hostile_loop, "malformed", malformed, 0.05)
    if mode == "fork":
        phase.spawn(upload_killer, phase)

    phase.run_load()
    phase.join_threads(timeout=90)

    verified = 0
    total_bytes = 0

    def check_output_dir():
        nonlocal verified, total_bytes
        temp_left = wait_until(lambda: not [n for n in os.listdir(out) if n.startswith(".")], SETTLE_TIMEOUT)
        hidden = [n for n in os.listdir(out) if n.startswith(".")]
        if not temp_left:
            phase.fail(f"temporary files left in the output directory: {hidden[:10]}")
        phase.temp_files = len(hidden)
        for name, digest, size in honest:
            path = os.path.join(out, name)
            try:
                with open(path, "rb") as f:
                    saved = hashlib.sha256(f.read()).hexdigest()
            except OSError as error:
                phase.fail(f"honest upload {name} not saved: {error}")
                continue
            if saved != digest:
                phase.fail(f"honest upload {name} saved with different bytes")
                continue
            verified += 1
            total_bytes += size
    phase.temp_files = 0
    phase.settle_and_check(check_output_dir)
    phase.report(f"{len(honest)} uploads confirmed by the client, {verified} saved byte-identical "
                 f"({total_bytes >> 10} KiB); temporary files left: {phase.temp_files}")
    shutil.rmtree(work, ignore_errors=True)
    return phase.failures


def upload_killer(phase):
    """The fork-mode killer for upload-server: joins the two -v lines per client to find the
    processes serving hostile addresses."""
    connected = re.compile(r"\[Client (\d+)\] ([\d.]+):\d+ connected")
    served = re.compile(r"\[Client (\d+)\] served by process (\d+)")
    while not phase.stop.wait(phase.rng.uniform(0.3, 1.0)):
        with phase.server._cond:
            lines = list(phase.server.stdout_lines)
        address = {}
        pids = set()
        for line in lines:
            match = connected.search(line)
            if match:
                address[match.group(1)] = match.group(2)
                continue
            match = served.search(line)
            if match and address.get(match.group(1), HONEST) != HONEST:
                pids.add(int(match.group(2)))
        alive = [pid for pid, state in children(phase.pid) if pid in pids and state != "Z"]
        if alive:
            try:
                os.kill(phase.rng.choice(alive), signal.SIGKILL)
                phase.count("children killed")
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------- main

PHASES = ["chat-single", "chat-fork", "upload-single", "upload-fork"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mux", default=muxtest.MUX, help="the mux binary (default: $MUX or build/mux)")
    parser.add_argument("--duration", type=float, default=150,
                        help="seconds of load in all, shared by the phases (default 150)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed; default: from time)")
    parser.add_argument("--only", nargs="+", choices=PHASES, default=PHASES)
    args = parser.parse_args()
    muxtest.MUX = os.path.abspath(args.mux)
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"soak: {args.mux}, {args.duration:.0f} s of load over {len(args.only)} phases, seed {seed}")
    load_seconds = args.duration / len(args.only)
    failures = []
    started = time.monotonic()
    for name in args.only:
        rng = random.Random(f"{seed}-{name}")
        kind, mode = name.split("-")
        if kind == "chat":
            failures += run_chat(mode, load_seconds, rng)
        else:
            failures += run_upload(mode, load_seconds, rng, muxtest.MUX)
        sys.stdout.flush()
    print(f"soak: {'FAILED' if failures else 'passed'} in {time.monotonic() - started:.0f} s "
          f"({len(failures)} failures)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
