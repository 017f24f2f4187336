#!/usr/bin/python3
"""examples/crawler.lua written with httpx + asyncio + lxml, for bench/crawl.sh.

    crawl_httpx.py URL [--depth N] [--concurrency N] [--out FILE.json]

The same crawl, step for step: robots.txt first (Protego, Scrapy's parser), then one
level of links at a time with at most N requests at once, redirects not followed (a
Location is one more hop), retries on 429/5xx, fields pulled out with precompiled CSS
selectors (lxml.cssselect), links resolved against <base href>, results to JSON.
Like crawler.lua it asks for the start URL once on its own (following redirects) to
learn where it leads, and crawls from there.
The clock runs from after the client is made (modules loaded, event loop running)
to the end of the last level, before the JSON is written.
Prints: pages N files N broken N seconds S pages/s R
"""
import asyncio
import json
import sys
import time
from urllib.parse import urljoin, urlsplit

import httpx
import lxml.html
from lxml.cssselect import CSSSelector
from protego import Protego

AGENT = "luarun-crawler"
DEFAULT_PORT = {"http": 80, "https": 443}


def normalise(u):
    try:
        p = urlsplit(u)
        port = p.port
    except ValueError:
        return None, None
    if p.scheme not in DEFAULT_PORT or not p.hostname:
        return None, None
    host = p.hostname.lower() + (":%d" % port if port and port != DEFAULT_PORT[p.scheme] else "")
    return "%s://%s%s%s" % (p.scheme, host, p.path or "/", "?" + p.query if p.query else ""), host


SEL = {name: CSSSelector(css) for name, css in
       dict(name=".product h1.name", price=".product .price", sku=".product .sku").items()}
H2, PRODUCT, TAGS = CSSSelector("h2"), CSSSelector(".product"), CSSSelector(".product ul.tags > li")
IN_STOCK, A, BASE = CSSSelector(".product .stock:not(.out)"), CSSSelector("a[href]"), CSSSelector("base[href]")


def text(el):
    return " ".join(el.text_content().split())


def parse(body, url):
    doc = lxml.html.fromstring(body)
    title = doc.find(".//title")
    page = dict(title=text(title) if title is not None else None, headings=[text(h) for h in H2(doc)])
    if PRODUCT(doc):
        p = {}
        for name, sel in SEL.items():
            found = sel(doc)
            p[name] = text(found[0]) if found else None
        p["currency"] = SEL["price"](doc)[0].get("data-currency")
        p["tags"] = [text(li) for li in TAGS(doc)]
        p["in_stock"] = bool(IN_STOCK(doc))
        page["product"] = p
    base = BASE(doc)
    base = urljoin(url, base[0].get("href").strip()) if base else url
    links, seen = [], set()
    for a in A(doc):
        u = urljoin(base, a.get("href").strip()).split("#")[0]
        if u.startswith(("http://", "https://")) and u not in seen:
            seen.add(u)
            links.append(u)
    return page, links


async def get(client, url):
    for attempt in range(3):
        res = await client.get(url)
        if res.status_code not in (429, 500, 502, 503, 504) or attempt == 2:
            return res
        await asyncio.sleep(0.2 * 2 ** attempt)


async def crawl(start, depth_limit, concurrency):
    start, site = normalise(start)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers={"User-Agent": AGENT + "/1.0 (httpx)"}) as client:
        t0 = time.monotonic()
        res = await client.get(urljoin(start, "/robots.txt"))
        robots = Protego.parse(res.text if res.status_code == 200 else "")
        if robots.can_fetch(start, AGENT):  # where the start URL leads (crawler.lua does the same)
            try:
                res = await client.get(start, follow_redirects=True)
                u, s = normalise(str(res.url))
                if u and u != start:
                    start, site = u, s  # (a new site would need its own robots.txt; not in the bench)
            except httpx.HTTPError:
                pass
        sem = asyncio.Semaphore(concurrency)

        async def fetch(url):
            async with sem:
                try:
                    res = await get(client, url)
                except httpx.HTTPError as e:
                    return dict(url=url, error=repr(e))
            r = dict(url=url, status=res.status_code)
            ctype = res.headers.get("content-type", "")
            if 300 <= res.status_code < 400 and "location" in res.headers:
                r["redirect"] = urljoin(url, res.headers["location"])
                r["links"] = [r["redirect"]]
            elif res.status_code == 200 and "text/html" in ctype:
                r["page"], r["links"] = parse(res.content, url)
            elif res.status_code == 200:
                r["type"] = ctype
            return r

        out = dict(start=start, pages=[], files=[], broken=[], redirects=[], disallowed=[], errors=[])
        seen, spelled, found_on = {start}, set(), {}
        level = [start] if robots.can_fetch(start, AGENT) else []
        for depth in range(depth_limit + 1):
            if not level:
                break
            results = await asyncio.gather(*(fetch(u) for u in level))
            nxt = []
            for r in results:
                if "error" in r:
                    out["errors"].append(dict(url=r["url"], error=r["error"]))
                elif "redirect" in r:
                    out["redirects"].append(dict(url=r["url"], to=r["redirect"], depth=depth))
                elif r["status"] >= 400:
                    out["broken"].append(dict(url=r["url"], status=r["status"], found_on=found_on.get(r["url"])))
                elif "page" in r:
                    r["page"].update(url=r["url"], depth=depth)
                    out["pages"].append(r["page"])
                elif "type" in r:
                    out["files"].append(dict(url=r["url"], type=r["type"], depth=depth))
                for link in (r.get("links", []) if depth < depth_limit else []):
                    if link in spelled:  # each spelling looked at once, as crawler.lua does
                        continue
                    spelled.add(link)
                    u, host = normalise(link)
                    if u and host == site and u not in seen:
                        seen.add(u)
                        found_on[u] = r["url"]
                        (nxt if robots.can_fetch(u, AGENT) else out["disallowed"]).append(u)
            level = nxt
        out["seconds"] = time.monotonic() - t0
        return out


def main(argv):
    args = dict(depth=3, concurrency=16, out="crawl-httpx.json")
    start = argv[0]
    for i in range(1, len(argv), 2):
        args[argv[i].lstrip("-")] = argv[i + 1]
    out = asyncio.run(crawl(start, int(args["depth"]), int(args["concurrency"])))
    took = out["seconds"]
    out["pages"].sort(key=lambda p: p["url"])
    with open(args["out"], "w") as fh:
        json.dump(out, fh)
    print("pages %d files %d broken %d seconds %.3f pages/s %.1f" % (
        len(out["pages"]), len(out["files"]), len(out["broken"]), took, len(out["pages"]) / took))


if __name__ == "__main__":
    main(sys.argv[1:])
