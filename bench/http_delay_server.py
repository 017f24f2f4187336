#!/usr/bin/python3
"""A fast delay server for the HTTP benchmarks: asyncio, HTTP/1.1 keep-alive.

    http_delay_server.py PORT_FILE PID_FILE

GET /delay/S answers {"delay": S} after S seconds; anything else answers at once
with a small body. One event loop, no thread per connection, so 100 or 1,000
concurrent delays cost nothing and the client under test is what is measured.
"""
import asyncio
import os
import sys

SMALL = b'{"ok": true}'


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            close = b"connection: close" in head.lower()
            body = SMALL
            if path.startswith("/delay/"):
                s = float(path[7:].split("?")[0])
                await asyncio.sleep(s)
                body = b'{"delay": %g}' % s
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n%s\r\n%s"
                         % (len(body), b"Connection: close\r\n" if close else b"", body))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port_file, pid_file):
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    with open(pid_file, "w") as f:
        f.write("%d\n" % os.getpid())
    with open(port_file + ".tmp", "w") as f:
        f.write("%d\n" % port)
    os.rename(port_file + ".tmp", port_file)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
