"""Python side of bench/fs.sh.
    python3 fs_python.py small DIR aiofiles|to_thread|seq
    python3 fs_python.py large FILE aiofiles|to_thread|seq
aiofiles (Debian's python3-aiofiles) and asyncio.to_thread gather every file at once;
seq is plain sequential open()."""
import asyncio
import sys
import time

mode, path, how = sys.argv[1], sys.argv[2], sys.argv[3]
DATA = b"x" * 4096
NAMES = [f"{path}/f{i + 1}" for i in range(2000)]


def write_sync(p, data):
    with open(p, "wb") as f:
        f.write(data)


def read_sync(p):
    with open(p, "rb") as f:
        return f.read()


async def write_aiofiles(p, data):
    import aiofiles
    async with aiofiles.open(p, "wb") as f:
        await f.write(data)


async def read_aiofiles(p):
    import aiofiles
    async with aiofiles.open(p, "rb") as f:
        return await f.read()


async def main():
    if how == "aiofiles":
        w, r = write_aiofiles, read_aiofiles
    else:
        async def w(p, d):
            return await asyncio.to_thread(write_sync, p, d)

        async def r(p):
            return await asyncio.to_thread(read_sync, p)
    if mode == "small":
        t0 = time.monotonic()
        await asyncio.gather(*(w(p, DATA) for p in NAMES))
        t1 = time.monotonic()
        got = await asyncio.gather(*(r(p) for p in NAMES))
        t2 = time.monotonic()
        assert all(g == DATA for g in got)
        print(f"{t1 - t0:.4f} {t2 - t1:.4f}")
    else:
        t0 = time.monotonic()
        b = await r(path)
        t1 = time.monotonic()
        assert len(b) > 0
        print(f"{t1 - t0:.4f}")


if how == "seq":
    if mode == "small":
        t0 = time.monotonic()
        for p in NAMES:
            write_sync(p, DATA)
        t1 = time.monotonic()
        got = [read_sync(p) for p in NAMES]
        t2 = time.monotonic()
        assert all(g == DATA for g in got)
        print(f"{t1 - t0:.4f} {t2 - t1:.4f}")
    else:
        t0 = time.monotonic()
        b = read_sync(path)
        t1 = time.monotonic()
        print(f"{t1 - t0:.4f}")
else:
    asyncio.run(main())
