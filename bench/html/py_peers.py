"""bench/html.sh's Python peers: lxml (the reference), BeautifulSoup on html.parser and
on lxml.

    /usr/bin/python3 py_peers.py PEER MANIFEST REPS [DUMPDIR]
    PEER: lxml | bs4-html.parser | bs4-lxml

The task per page, the same in every peer: parse the bytes (UTF-8, as a Content-Type
would say); every a[href] resolved against the page URL, or against <base href> when
the page has one; leading and trailing ASCII whitespace stripped from the href (as
WHATWG URL parsing does); fragments dropped; only http and https kept; duplicates
removed, first seen kept. Then the text of every h2, ASCII whitespace collapsed to one
space and trimmed. Each page runs max(2, MULT) times to warm up, then REPS * MULT
times on the clock (time.perf_counter around the task alone); prints per page

    page NAME links N h2 M fnv HEX ms MEDIAN cpu MEDIAN

where cpu is the process's CPU time (time.process_time: every thread), which the other
processes on a shared machine disturb less than the wall clock, and HEX is FNV-1a (32 bits) of the UTF-8 of every link and heading, one per line,
links first. With DUMPDIR, that text is also written to DUMPDIR/PEER.NAME.txt.
"""
import re
import sys
import time
from urllib.parse import urljoin

WS = re.compile(r"[ \t\n\r\f]+")
STRIP = " \t\n\r\f"


def collapse(s):
    return WS.sub(" ", s).strip(STRIP)


def keep(base, href, seen, out):
    u = urljoin(base, href.strip(STRIP)).split("#", 1)[0]
    scheme = u.split(":", 1)[0].lower()
    if (scheme == "http" or scheme == "https") and u not in seen:
        seen.add(u)
        out.append(u)


def make_lxml():
    import lxml.html
    from lxml.cssselect import CSSSelector
    # huge_tree: XML_PARSE_HUGE, as luarun and parsel pass (no depth or text-node cap)
    parser = lxml.html.HTMLParser(encoding="utf-8", huge_tree=True)
    sel_a, sel_h2 = CSSSelector("a[href]"), CSSSelector("h2")

    def task(data, url):
        doc = lxml.html.fromstring(data, parser=parser)
        base = url
        # <base> lives in <head>: a path from the root, not a search of the whole document
        b = doc.find("head/base[@href]")
        if b is not None:
            base = urljoin(url, b.get("href").strip(STRIP))
        seen, links = set(), []
        for a in sel_a(doc):
            keep(base, a.get("href"), seen, links)
        heads = [collapse(h.text_content()) for h in sel_h2(doc)]
        return links, heads
    return task


def make_bs4(builder):
    from bs4 import BeautifulSoup

    def task(data, url):
        soup = BeautifulSoup(data, builder, from_encoding="utf-8")
        base = url
        b = soup.head.find("base", href=True) if soup.head else None  # in <head> only
        if b:
            base = urljoin(url, b["href"].strip(STRIP))
        seen, links = set(), []
        # find_all(href=True) rather than select("a[href]"): the faster of bs4's two ways
        for a in soup.find_all("a", href=True):
            keep(base, a["href"], seen, links)
        heads = [collapse(h.get_text()) for h in soup.find_all("h2")]
        return links, heads
    return task


def fnv(text):
    h = 0x811C9DC5
    for c in text.encode("utf-8"):
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    return "%08x" % h


def main():
    peer, manifest, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dump = sys.argv[4] if len(sys.argv) > 4 else None
    task = {"lxml": make_lxml,
            "bs4-html.parser": lambda: make_bs4("html.parser"),
            "bs4-lxml": lambda: make_bs4("lxml")}[peer]()
    for line in open(manifest):
        name, url, path, mult = line.split()
        mult = int(mult)
        with open(path, "rb") as f:
            data = f.read()
        for _ in range(max(2, mult)):
            task(data, url)
        times, cpu = [], []
        for _ in range(reps * mult):
            c0 = time.process_time()
            t0 = time.perf_counter()
            links, heads = task(data, url)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        times.sort()
        cpu.sort()
        text = "".join(x + "\n" for x in links + heads)
        if dump:
            with open("%s/%s.%s.txt" % (dump, peer, name), "w", encoding="utf-8") as f:
                f.write(text)
        print("page %s links %d h2 %d fnv %s ms %.3f cpu %.3f" % (
            name, len(links), len(heads), fnv(text), times[len(times) // 2] * 1000,
            cpu[len(cpu) // 2] * 1000), flush=True)


if __name__ == "__main__":
    main()
