#!/usr/bin/python3
"""A misbehaving PostgreSQL server for spec/db_pg_faults_spec.lua (standard library only).

    pgbad.py --port-file F --pid-file F [--watch-pid P]

Binds 127.0.0.1 on ephemeral ports, writes "name port" lines to --port-file (once every
port listens) and its pid to --pid-file; exits when the process --watch-pid is gone.
The ports:

  silent          accepts and never says a word
  close           reads the startup packet and closes
  garbage         reads the startup packet and answers with bytes that are no protocol
  ready_silent    a good handshake (trust), then never answers a query
  ready_garbage   a good handshake, then answers a query with a DataRow whose length
                  runs past what follows, and closes
  ready_cut       a good handshake, then half a RowDescription, and closes

A CancelRequest (on any port) is read and the connection closed, as a server does.
"""
import argparse
import os
import socket
import struct
import threading
import time

SSL_REQ, GSS_REQ, CANCEL_REQ = 80877103, 80877104, 80877102


def read_exact(c, n):
    buf = b""
    while len(buf) < n:
        part = c.recv(n - len(buf))
        if not part:
            raise EOFError
        buf += part
    return buf


def startup(c):
    """Reads the startup packet, answering SSL/GSS requests with 'N'. False: a cancel."""
    while True:
        n = struct.unpack("!I", read_exact(c, 4))[0]
        body = read_exact(c, n - 4)
        code = struct.unpack("!I", body[:4])[0]
        if code in (SSL_REQ, GSS_REQ):
            c.sendall(b"N")
            continue
        return code != CANCEL_REQ


def msg(kind, payload=b""):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def ready(c):
    c.sendall(msg(b"R", struct.pack("!I", 0)) +
              msg(b"S", b"server_version\x0015.0\x00") +
              msg(b"K", struct.pack("!II", 4242, 99)) +
              msg(b"Z", b"I"))


def read_message(c):
    head = read_exact(c, 5)
    n = struct.unpack("!I", head[1:])[0]
    return head[:1], read_exact(c, n - 4)


def handle(name, c):
    try:
        if name == "silent":
            time.sleep(3600)
        if not startup(c):
            return
        if name == "close":
            return
        if name == "garbage":
            c.sendall(b"\xff\x00garbage that is not the protocol\x00" * 4)
            time.sleep(3600)
        ready(c)
        # the client's first query: read up to its Sync (or a simple Query)
        while True:
            kind, _ = read_message(c)
            if kind in (b"S", b"Q"):
                break
        if name == "ready_silent":
            time.sleep(3600)
        if name == "ready_garbage":
            c.sendall(msg(b"1") + msg(b"2") +
                      msg(b"T", struct.pack("!H", 1) + b"x\x00" + struct.pack("!IHIhih", 0, 0, 23, 4, -1, 0)) +
                      b"D" + struct.pack("!I", 1 << 20) + b"\x00\x01short")
            time.sleep(0.2)
        if name == "ready_cut":
            c.sendall(msg(b"1") + msg(b"2") + b"T\x00\x00\x00\x40\x00\x01ab")
            time.sleep(0.2)
    except (EOFError, OSError):
        pass
    finally:
        try:
            c.close()
        except OSError:
            pass


def serve(name, s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(name, c), daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--watch-pid", type=int)
    a = ap.parse_args()
    with open(a.pid_file, "w") as f:
        f.write(str(os.getpid()))
    lines = []
    for name in ("silent", "close", "garbage", "ready_silent", "ready_garbage", "ready_cut"):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        lines.append("%s %d\n" % (name, s.getsockname()[1]))
        threading.Thread(target=serve, args=(name, s), daemon=True).start()
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(lines))
    os.rename(tmp, a.port_file)
    while True:
        time.sleep(0.5)
        if a.watch_pid:
            try:
                os.kill(a.watch_pid, 0)
            except OSError:
                return


if __name__ == "__main__":
    main()
