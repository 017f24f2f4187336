"""Slowloris for bench/serve.sh (g): python3 drip.py PORT CONNECTIONS SECONDS READY_FILE
Opens CONNECTIONS connections to 127.0.0.1:PORT, sends each a request line and a Host
header, then one more header byte per second per connection, never ending the head. A
connection the server closes is counted and opened again. READY_FILE is written once all
are open; at the end one line: open=N closed_by_server=M connect_failures=K."""
import asyncio
import sys

port, count, seconds, ready_file = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: "
stats = {"closed": 0, "failed": 0}
open_now = set()


async def one(i, opened):
    first = True
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["failed"] += 1
            await asyncio.sleep(1)
            continue
        open_now.add(i)
        if first:
            opened.release()
            first = False
        try:
            writer.write(HEAD)
            await asyncio.sleep(i % 100 / 100)  # spread the drips over the second
            while True:
                writer.write(b"a")
                await writer.drain()
                try:
                    # the server may answer (408/400) or close: either ends this connection
                    await asyncio.wait_for(reader.read(4096), 1.0)
                    raise ConnectionError
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, OSError):
            stats["closed"] += 1
        finally:
            open_now.discard(i)
            writer.close()


async def main():
    opened = asyncio.Semaphore(0)
    tasks = [asyncio.create_task(one(i, opened)) for i in range(count)]
    for _ in range(count):
        await opened.acquire()
    with open(ready_file, "w") as f:
        f.write("ready\n")
    await asyncio.sleep(seconds)
    print(f"open={len(open_now)} closed_by_server={stats['closed']} connect_failures={stats['failed']}", flush=True)
    for t in tasks:
        t.cancel()


asyncio.run(main())
