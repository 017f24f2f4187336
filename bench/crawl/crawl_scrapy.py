#!/usr/bin/python3
"""examples/crawler.lua as a Scrapy spider, for bench/crawl.sh.

    crawl_scrapy.py URL [--depth N] [--concurrency N] [--out FILE.json]

Scrapy's own way: robots.txt obeyed by its middleware (Protego), redirects followed by
its middleware (each target goes through the scheduler and robots.txt again),
duplicates dropped by its fingerprint filter, retries on 429/5xx, DEPTH_LIMIT, no
delay, no autothrottle, CONCURRENT_REQUESTS = N (and as many per domain), breadth-first
order (DEPTH_PRIORITY = 1 and FIFO queues, Scrapy's documented setting for it, as the
other two crawl a level at a time). Fields are pulled out with the same CSS selectors
through parsel; links resolved with response.urljoin (which honours <base href>), same
site only. As crawler.lua and crawl_httpx.py do, each spelling of a link (after
urljoin) is looked at once: menus and footers repeat on every page, and without that
set the spider would build a Request for every <a> of every page and send it through
the middlewares and the duplicate filter, work the other two do not do.
A page's depth is Scrapy's (links followed) plus the redirects followed to reach it,
as the other two count a Location as one more hop.
The clock runs from spider_opened (the engine, the spider and the middlewares made,
before robots.txt is asked for) to spider_closed (after the last response): the
reactor's start and stop are outside it, as module loading is.
Prints: pages N files N broken N seconds S pages/s R
"""
import json
import sys
import time
from urllib.parse import urlsplit

import scrapy
from scrapy import signals
from scrapy.crawler import CrawlerProcess

AGENT = "luarun-crawler"


def squash(strings):
    return " ".join(" ".join(strings).split())


class Shop(scrapy.Spider):
    name = "shop"
    handle_httpstatus_list = [404, 410, 429, 500, 502, 503, 504]

    def __init__(self, start, out, **kw):
        super().__init__(**kw)
        self.start_urls = [start]
        self.site = urlsplit(start).netloc.lower()
        self.out = out
        self.spelled = set()

    def start_requests(self):
        # filtered like any other request, so that a later link to the start page is
        # not fetched again (start URLs skip the duplicate filter by default)
        for u in self.start_urls:
            yield scrapy.Request(u, callback=self.parse)

    def parse(self, response):
        if response.status >= 400:
            self.out["broken"].append(dict(url=response.url, status=response.status,
                                           found_on=response.request.headers.get("Referer", b"").decode()))
            return
        ctype = response.headers.get("Content-Type", b"").decode()
        if "text/html" not in ctype:
            self.out["files"].append(dict(url=response.url, type=ctype))
            return
        depth = response.meta.get("depth", 0) + len(response.meta.get("redirect_urls", []))
        page = dict(url=response.url, depth=depth,
                    title=squash(response.css("title ::text").getall()) or None,
                    headings=[squash(h.css("::text").getall()) for h in response.css("h2")])
        if response.css(".product"):
            page["product"] = dict(
                name=squash(response.css(".product h1.name ::text").getall()),
                price=squash(response.css(".product .price ::text").getall()),
                sku=squash(response.css(".product .sku ::text").getall()),
                currency=response.css(".product .price::attr(data-currency)").get(),
                tags=[squash(li.css("::text").getall()) for li in response.css(".product ul.tags > li")],
                in_stock=bool(response.css(".product .stock:not(.out)")))
        self.out["pages"].append(page)
        for href in response.css("a::attr(href)").getall():
            u = response.urljoin(href.strip())
            if u in self.spelled:  # each spelling looked at once, as the other two do
                continue
            self.spelled.add(u)
            p = urlsplit(u)
            if p.scheme in ("http", "https") and p.netloc.lower() == self.site:
                yield scrapy.Request(u.split("#")[0], callback=self.parse)


def main(argv):
    args = dict(depth=3, concurrency=16, out="crawl-scrapy.json")
    start = argv[0]
    for i in range(1, len(argv), 2):
        args[argv[i].lstrip("-")] = argv[i + 1]
    n = int(args["concurrency"])
    out = dict(start=start, pages=[], files=[], broken=[])
    process = CrawlerProcess(settings=dict(
        USER_AGENT=AGENT + "/1.0 (scrapy)", ROBOTSTXT_OBEY=True, LOG_LEVEL="ERROR",
        CONCURRENT_REQUESTS=n, CONCURRENT_REQUESTS_PER_DOMAIN=n, DOWNLOAD_DELAY=0,
        AUTOTHROTTLE_ENABLED=False, DEPTH_LIMIT=int(args["depth"]), RETRY_TIMES=2,
        RETRY_HTTP_CODES=[429, 500, 502, 503, 504], TELNETCONSOLE_ENABLED=False,
        REQUEST_FINGERPRINTER_IMPLEMENTATION="2.7", DEPTH_PRIORITY=1,
        SCHEDULER_DISK_QUEUE="scrapy.squeues.PickleFifoDiskQueue",
        SCHEDULER_MEMORY_QUEUE="scrapy.squeues.FifoMemoryQueue"))
    crawler = process.create_crawler(Shop)
    clock = {}

    def opened(spider):
        clock["open"] = time.monotonic()

    def closed(spider, reason):
        clock["closed"] = time.monotonic()
    # (Scrapy holds receivers weakly: these two live as long as main does)
    crawler.signals.connect(opened, signal=signals.spider_opened)
    crawler.signals.connect(closed, signal=signals.spider_closed)
    process.crawl(crawler, start=start, out=out)
    process.start()
    took = clock["closed"] - clock["open"]
    out["pages"].sort(key=lambda p: p["url"])
    with open(args["out"], "w") as fh:
        json.dump(out, fh)
    print("pages %d files %d broken %d seconds %.3f pages/s %.1f" % (
        len(out["pages"]), len(out["files"]), len(out["broken"]), took, len(out["pages"]) / took))


if __name__ == "__main__":
    main(sys.argv[1:])
