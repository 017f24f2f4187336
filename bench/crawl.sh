#!/usr/bin/env bash
# A whole crawl (issue 16): the generated shop of spec/support/site_gen.py (298 HTML
# pages, a text file, 17 broken links, 5 redirects, a robots.txt with Disallow rules)
# served by nginx pinned to core 0, crawled from / with no depth limit, 50 requests at
# once, by three crawlers pinned to core 1, each in turn:
#   luarun   examples/crawler.lua --delay 0 --concurrency 50 --depth 1000
#   httpx    the same crawler in httpx + asyncio + lxml     bench/crawl/crawl_httpx.py
#   scrapy   a Scrapy spider, CONCURRENT_REQUESTS=50, no delay, no autothrottle,
#            robots.txt obeyed                              bench/crawl/crawl_scrapy.py
# All three read robots.txt (no Crawl-delay in the bench's copy), pull the same fields
# with the same CSS selectors, resolve links against <base href>, and write JSON.
#
#   bench/crawl.sh [--head]          REPS=5 repetitions (default 5)
#
# The site's always-503 page is left out here (it is a 404): its retries and their
# backoff would add the same fixed sleep to every crawler. pages/s is pages over
# crawl_s, the crawl's own time, taken inside each program from the same point (modules
# loaded, just before robots.txt is asked for) to the end of the crawl (results not yet
# written):
#   luarun  lr.now() before robots.txt (the client is made after it, as it needs the
#           Crawl-delay) to the end of the last level
#   httpx   time.monotonic() after the AsyncClient is made, to the end of the last level
#   scrapy  spider_opened to spider_closed (signals): the engine, spider and middlewares
#           are made, the reactor's start and stop are outside
# elapsed_s, cpu_s and rss_MB are the whole process's (/usr/bin/time). Medians of REPS,
# with the range in brackets. The script fails loudly unless the three outputs (of the
# last repetition) agree: the same pages (URLs normalised), the same fields pulled out
# of each, the same files and broken links, the same depths for luarun and httpx (both
# crawl a level at a time) and for Scrapy no depth below theirs (its scheduler is
# breadth-first but not level by level, so a page may first be reached by a longer path).
# Goal (issue 16): luarun's pages/s ahead of httpx + asyncio + lxml and of Scrapy.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
reps=${REPS:-5}
head=0
if [ "${1:-}" = --head ]; then head=1; shift; fi
. bench/build_under_test.sh
py=/usr/bin/python3
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
$py -c 'import httpx, lxml.cssselect, scrapy, protego' 2>/dev/null || bash .ci/setup bench

tmp=$(mktemp -d /tmp/luarun-crawl.XXXXXX)
ngx=
cleanup() {
  if [ -n "$ngx" ]; then kill "$ngx" 2>/dev/null || true; wait "$ngx" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---- the site, and nginx serving it (the config of spec/support/nginx.lua, no access log) ----
$py spec/support/site_gen.py "$tmp/site"
grep -v 'return 503' "$tmp/site/locations.conf" > "$tmp/locations.conf"
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$tmp/t"
cat > "$tmp/nginx.conf" <<EOF
daemon off;
master_process off;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 1024; }
http {
  types { text/html html; text/plain txt; text/css css; application/pdf pdf; }
  default_type application/octet-stream;
  access_log off;
  client_body_temp_path $tmp/t/body; proxy_temp_path $tmp/t/proxy; fastcgi_temp_path $tmp/t/fcgi;
  uwsgi_temp_path $tmp/t/uwsgi; scgi_temp_path $tmp/t/scgi;
  keepalive_requests 100000;
  absolute_redirect off;
  server {
    listen 127.0.0.1:$port;
    root $tmp/site/root;
    index index.html;
    sub_filter '@ORIGIN@' '\$scheme://\$http_host';
    sub_filter '@PORT@' '\$server_port';
    sub_filter_once off;
    include $tmp/locations.conf;
  }
}
EOF
taskset -c 0 /usr/sbin/nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/error.log" </dev/null >/dev/null 2>&1 &
ngx=$!
for _ in $(seq 100); do [ -s "$tmp/nginx.pid" ] && break; sleep 0.05; done
[ -s "$tmp/nginx.pid" ] || { cat "$tmp/error.log" >&2; exit 1; }
url=http://127.0.0.1:$port/

# ---- the crawlers ----
run() { # label command...: appends "label pages seconds pages_s elapsed cpu rss" to $tmp/rows
  local label=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" taskset -c 1 "$@" > "$tmp/out" 2> "$tmp/err" || {
    echo "$label failed:" >&2; cat "$tmp/out" "$tmp/err" >&2; exit 1; }
  local pages secs
  if [ "$label" = luarun ]; then
    read -r pages secs < <(sed -n 's/^crawled \([0-9]*\) pages .* in \([0-9.]*\) s .*/\1 \2/p' "$tmp/out")
  else
    read -r pages secs < <(sed -n 's/^pages \([0-9]*\) .* seconds \([0-9.]*\) .*/\1 \2/p' "$tmp/out")
  fi
  read -r el us sy rss < "$tmp/time"
  echo "$label $pages $secs $(echo "$pages / $secs" | bc -l) $el $(echo "$us + $sy" | bc -l) $((rss / 1024))" >> "$tmp/rows"
}
echo "site: $url (nginx pid $ngx on core 0); luarun: $built; $reps repetitions; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$reps"); do
  run luarun "$build/luarun" examples/crawler.lua "$url" --depth 1000 --concurrency 50 --delay 0 --out "$tmp/luarun.json"
  run httpx $py bench/crawl/crawl_httpx.py "$url" --depth 1000 --concurrency 50 --out "$tmp/httpx.json"
  run scrapy $py bench/crawl/crawl_scrapy.py "$url" --depth 1000 --concurrency 50 --out "$tmp/scrapy.json"
  echo "  repetition $r done" >&2
done

# ---- the same crawl everywhere: pages, fields, files, broken links, depths ----
$py - "$tmp/luarun.json" "$tmp/httpx.json" "$tmp/scrapy.json" <<'EOF'
import json, sys
from urllib.parse import urlsplit
PORTS = {"http": 80, "https": 443}
FIELDS = ("name", "price", "sku", "currency", "tags", "in_stock")
def norm(u):
    p = urlsplit(u)
    port = ":%d" % p.port if p.port and p.port != PORTS[p.scheme.lower()] else ""
    return "%s://%s%s%s%s" % (p.scheme.lower(), p.hostname.lower(), port, p.path or "/", "?" + p.query if p.query else "")
def load(path):
    d = json.load(open(path))
    pages = {norm(p["url"]): p for p in d["pages"]}
    product = lambda p: p.get("product") and {k: p["product"].get(k) for k in FIELDS}
    return dict(pages=set(pages), depth={u: p["depth"] for u, p in pages.items()},
                fields={u: (p.get("title"), p.get("headings"), product(p)) for u, p in pages.items()},
                files={norm(f["url"]) for f in d["files"]},
                broken={(norm(b["url"]), b["status"]) for b in d["broken"]})
names = ("luarun", "httpx", "scrapy")
got = dict(zip(names, map(load, sys.argv[1:])))
bad = []
def differ(what, a, b, x, y):
    if isinstance(x, set):
        if x != y:
            bad.append("%s: only %s %s; only %s %s" % (what, a, sorted(x - y)[:5], b, sorted(y - x)[:5]))
    else:
        diff = [u for u in x if x[u] != y.get(u)]
        if diff:
            bad.append("%s differ on %d pages between %s and %s, e.g. %s: %r / %r" % (
                what, len(diff), a, b, diff[0], x[diff[0]], y.get(diff[0])))
for peer in ("httpx", "scrapy"):
    for what in ("pages", "fields", "files", "broken"):
        differ(what, "luarun", peer, got["luarun"][what], got[peer][what])
differ("depths", "luarun", "httpx", got["luarun"]["depth"], got["httpx"]["depth"])
shallower = [u for u, d in got["scrapy"]["depth"].items() if d < got["luarun"]["depth"].get(u, d)]
if shallower:
    bad.append("scrapy found %d pages shallower than the shortest path, e.g. %s" % (len(shallower), shallower[0]))
deeper = sum(d > got["luarun"]["depth"].get(u, d) for u, d in got["scrapy"]["depth"].items())
if bad:
    sys.exit("THE CRAWLERS DID NOT DO THE SAME CRAWL:\n  " + "\n  ".join(bad))
print("same crawl: %d pages (fields equal), %d files, %d broken links in all three; depths equal for luarun and"
      " httpx, scrapy deeper on %d pages" % (len(got["luarun"]["pages"]), len(got["luarun"]["files"]),
                                             len(got["luarun"]["broken"]), deeper))
EOF

# ---- the table: medians [ranges], the same pages everywhere, ratios ----
$py - "$tmp/rows" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, *v = line.split()
    rows.setdefault(label, []).append([float(x) for x in v])
pages = {label: {int(r[0]) for r in rs} for label, rs in rows.items()}
if len({p for s in pages.values() for p in s}) != 1:
    sys.exit("the crawlers did not crawl the same number of pages: %s" % pages)
def cell(rs, i, fmt):
    xs = sorted(r[i] for r in rs)
    return ("%s [%s-%s]" % (fmt, fmt, fmt)) % (statistics.median(xs), xs[0], xs[-1])
print("| crawler | pages | crawl_s | pages/s | elapsed_s | cpu_s | rss_MB |")
print("|:---|---:|---:|---:|---:|---:|---:|")
for label, rs in rows.items():
    print("| %s | %d | %s | %s | %s | %s | %d |" % (label, rs[0][0], cell(rs, 1, "%.3f"), cell(rs, 2, "%.0f"),
          cell(rs, 3, "%.2f"), cell(rs, 4, "%.2f"), statistics.median(r[5] for r in rs)))
rate = {label: statistics.median(r[2] for r in rs) for label, rs in rows.items()}
cpu = {label: statistics.median(r[4] for r in rs) for label, rs in rows.items()}
for peer in ("httpx", "scrapy"):
    print("luarun against %s: %.2fx the pages/s, %.2fx less CPU" % (peer, rate["luarun"] / rate[peer], cpu[peer] / cpu["luarun"]))
EOF
