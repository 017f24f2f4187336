"""Runs a command with its stderr on a pseudo-terminal, as a person's terminal would be.

usage: ptyrun.py COLS TIMEOUT STDERR_OUT STDOUT_OUT -- command args...

The terminal is COLS columns wide (COLS as "60:30:0.4": 60, then 30 from 0.4 s on, as
a window being resized), with output processing off (so a "\\n" arrives as
written, not as "\\r\\n"). Everything the command writes to the terminal is saved in
STDERR_OUT, its stdout in STDOUT_OUT. Exits with the command's status, or 124 if it did
not end within TIMEOUT seconds (it is then killed, by its pid).
"""
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time


def main():
    sizes = sys.argv[1].split(":")
    cols = int(sizes[0])
    resize = (int(sizes[1]), float(sizes[2])) if len(sizes) == 3 else None
    timeout, err_path, out_path = float(sys.argv[2]), sys.argv[3], sys.argv[4]
    assert sys.argv[5] == "--"
    cmd = sys.argv[6:]
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # oflag: no "\n" -> "\r\n"
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=slave)
    os.close(slave)
    got = bytearray()
    start = time.monotonic()
    deadline = start + timeout
    timed_out = False
    while True:
        if resize and time.monotonic() - start >= resize[1]:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, resize[0], 0, 0))
            resize = None
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([master], [], [], min(left, 0.05))
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            got += chunk
        elif proc.poll() is not None:
            # Ended; take what is still buffered in the terminal, then stop.
            while select.select([master], [], [], 0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                got += chunk
            break
    if timed_out and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    status = proc.wait()
    os.close(master)
    with open(err_path, "wb") as f:
        f.write(got)
    sys.exit(124 if timed_out else (status if status >= 0 else 128 - status))


main()
