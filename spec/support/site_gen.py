#!/usr/bin/python3
"""A generated shop site for the crawler's test and benchmark (issue 16).

    site_gen.py OUT_DIR [--seed N] [--crawl-delay S]

writes, the same for the same seed:
  OUT_DIR/root/...          the site's files (about 300 HTML pages, robots.txt, a text
                            file and a PDF), to be served by nginx
  OUT_DIR/locations.conf    nginx location blocks: the redirects (301), a page that
                            always answers 503, a session cookie set by the home page
  OUT_DIR/expected.json     what a crawler starting at / must find, per URL path

Pages link with every kind of reference a crawler meets: root-relative, relative
(../x.html, ./x.html, x.html), absolute (@ORIGIN@, which nginx's sub_filter replaces with
the server's own scheme://host:port), with fragments, through a <base href>, to other
hosts (never to be followed: example.com, and localhost:@PORT@, the same server under
another name), mailto: and javascript:. robots.txt disallows a subtree (with an Allow
inside it) and uses `*` and `$` patterns.

expected.json gives, for a crawl from / that follows same-host links only, checks
robots.txt (agent "luarun-crawler") before each request, does not follow redirects by
itself (a Location is one more hop, like a link) and counts depth in hops:
  pages      {path: depth}    200 text/html answers
  files      {path: depth}    200 answers of another type
  broken     {path: {depth, status, linked_from = [paths]}}   4xx and 5xx answers
  redirects  {path: {depth, to}}                               301 answers
  disallowed {path: depth}    links robots.txt refuses (never requested)
  products   {path: {name, price, currency, sku, tags, in_stock}}
  titles     {path: title}
Each depth is the shortest; a crawl to depth D finds exactly the entries with depth <= D.
"""
import json
import os
import posixpath
import random
import re
import sys
from urllib.parse import urljoin, urlsplit

ORIGIN = "http://site.test"          # stands for the server while resolving links here
OTHER = "http://localhost.test"      # stands for http://localhost:PORT (another host)

WORDS = ("oak walnut linen copper brass enamel ceramic woollen cotton bamboo slate "
         "marble cedar pine rattan glass steel iron velvet wicker hand-thrown rustic "
         "nordic classic compact folding stackable outdoor indoor vintage modern").split()
THINGS = ("lamp chair table stool shelf bowl mug vase rug cushion basket planter "
          "kettle teapot clock mirror bench crate tray candle").split()
CATEGORIES = ["garden", "kitchen", "lighting", "living", "bedroom", "bath", "office", "kids"]
PER_CAT, PER_LISTING = 25, 10
POSTS, GUIDES, ARCHIVE = 36, 15, 14

STYLE = "<style>\n%s</style>" % "".join(
    ".%s-%d { margin: %dpx; padding: %dpx %dpx; color: #%03x }\n" % (w, i, i % 7, i % 5, i % 9, i * 37 % 4096)
    for i, w in enumerate(WORDS))

SESSION_COOKIE = "shop_session=s16"

ROBOTS_GROUPS = [
    (["badbot"], [("disallow", "/")]),
    (["*"], [("disallow", "/private/"), ("allow", "/private/open/"),
             ("disallow", "/*/print$"), ("disallow", "/*?sort="),
             ("disallow", "/*.pdf$"), ("disallow", "/search")]),
]


def robots_text(crawl_delay):
    out = ["# robots.txt of the generated shop (spec/support/site_gen.py)", ""]
    for agents, rules in ROBOTS_GROUPS:
        out += ["User-agent: %s" % a for a in agents]
        out += ["%s: %s" % (kind.capitalize(), path) for kind, path in rules]
        if agents == ["*"] and crawl_delay:
            out.append("Crawl-delay: %s" % crawl_delay)
        out.append("")
    return "\n".join(out)


def robots_allowed(path):
    """RFC 9309 for the `*` group: the longest matching rule wins, Allow on a tie."""
    if path == "/robots.txt":
        return True
    best, allow = -1, True
    for kind, pat in ROBOTS_GROUPS[1][1]:
        rx = "".join(".*" if c == "*" else re.escape(c) for c in pat.rstrip("$"))
        rx = "^" + rx + ("$" if pat.endswith("$") else "")
        if re.match(rx, path) and (len(pat) > best or (len(pat) == best and kind == "allow")):
            best, allow = len(pat), kind == "allow"
    return allow


class Site:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pages = {}        # path -> dict(title, base, links, html parts)
        self.order = []        # paths in the order they were made
        self.redirects = {}    # path -> target (301)
        self.failing = {"/status/flaky.html": 503}
        self.files = {}        # path -> (content type, bytes)
        self.products = {}

    # ---- references: the same target written the ways real pages write it ----
    def ref(self, page, base, target, style=None):
        rng = self.rng
        style = style or rng.choice(["root", "root", "rel", "rel", "abs", "frag"])
        if style == "abs":
            href = "@ORIGIN@" + target
        elif style == "rel":
            bdir = base if base.endswith("/") else posixpath.dirname(base) + "/"
            rel = posixpath.relpath(target.split("?")[0], bdir)
            if target.endswith("/") and rel != ".":
                rel += "/"
            elif rel == ".":
                rel = "./"
            if rel.startswith("../") or rng.random() < 0.5:
                href = rel
            else:
                href = "./" + rel
            if "?" in target:
                href += "?" + target.split("?", 1)[1]
        elif style == "frag":
            href = target + "#" + rng.choice(["reviews", "specs", "top", "comments"])
        else:
            href = target
        # the reference must resolve to the target, as a browser (and urljoin) does it
        got = urljoin(ORIGIN + base, href.replace("@ORIGIN@", ORIGIN)).split("#")[0]
        assert got == ORIGIN + target, (page, base, target, href, got)
        return href

    def words(self, n):
        return " ".join(self.rng.choice(WORDS + THINGS) for _ in range(n))

    def add(self, path, title, body, base=None, base_href=None):
        """body: a list of ("h1"|"h2"|"p"|"raw", text) and ("a", target, text[, style])."""
        assert path not in self.pages
        self.pages[path] = dict(title=title, body=body + [self.footer], base=base or path, base_href=base_href)
        self.order.append(path)

    # ---- the site ----
    def build(self):
        rng = self.rng
        cats = {}
        for c in CATEGORIES:
            items = []
            for i in range(PER_CAT):
                name = "%s %s %s" % (rng.choice(WORDS).capitalize(), rng.choice(WORDS), rng.choice(THINGS))
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + "-%d" % i
                path = "/shop/%s/%s.html" % (c, slug)
                self.products[path] = dict(
                    name=name, price="%d.%02d" % (rng.randint(3, 400), rng.choice([0, 50, 95, 99])),
                    currency=rng.choice(["EUR", "EUR", "GBP"]), sku="SKU-%s-%03d" % (c[:3].upper(), i),
                    tags=sorted(rng.sample(WORDS, rng.randint(1, 3))), in_stock=rng.random() < 0.8)
                items.append(path)
            cats[c] = items
        all_products = [p for c in CATEGORIES for p in cats[c]]
        posts = ["/blog/%d/%s-%d.html" % (2021 + i % 4, rng.choice(THINGS), i) for i in range(POSTS)]
        guides = ["/guides/%s-%s-%d.html" % (rng.choice(WORDS), rng.choice(THINGS), i) for i in range(GUIDES)]
        broken = ["/shop/%s/discontinued-%d.html" % (rng.choice(CATEGORIES), i) for i in range(14)] + \
                 ["/blog/2020/missing-%d.html" % i for i in range(4)] + ["/guides/old-guide.html"]
        hidden = all_products[-1]   # linked only from the end of the archive chain

        # Every page carries what real shop pages carry: a mega menu (each department,
        # its listing pages and three popular items), a footer of links and small print,
        # inline style and script. It makes pages of 15-20 KB with ~80 links each.
        menu = []
        for c in CATEGORIES:
            menu.append((c.capitalize(), ["/shop/%s/" % c, "/shop/%s/page-2.html" % c] +
                         rng.sample([p for p in cats[c] if p != hidden], 3)))
        nav = [("a", "/", "Home", "root"), ("a", "/shop/", "Shop"), ("a", "/blog/", "Blog"),
               ("a", "/guides/", "Guides"), ("a", "/about.html", "About"), ("menu", menu)]
        self.footer = ("footer", guides[:6] + posts[:6] + ["/about.html", "/shop/"],
                       [self.words(45) for _ in range(4)])
        self.script = "window.shopConfig = %s;" % json.dumps(
            {"region": "eu", "experiments": [{"id": i, "variant": self.words(2)} for i in range(25)],
             "strings": {w: self.words(6) for w in WORDS}})
        foot = [("raw", '<a href="#top">Top</a> <a href="mailto:shop@example.com">Mail</a> '
                        '<a href="javascript:void(0)">Menu</a> '
                        '<a href="https://example.com/partner">Partner</a> '
                        '<a href="http://www.example.org/feed.xml">Feed</a> '
                        '<a href="@OTHER@/">Mirror</a>')]

        self.add("/", "Shop home", nav + [
            ("h1", "Welcome to the shop"),
            ("h2", "Featured")] + [("a", p, self.products[p]["name"]) for p in rng.sample(all_products[:-1], 6)] + [
            ("h2", "From the blog")] + [("a", p, "post") for p in posts[:3]] + [
            ("a", "/search?q=lamp", "Search"), ("a", "/old/spring-sale.html", "Spring sale"),
            ("a", "/files/price-list.txt", "Price list"), ("a", "/files/catalogue.pdf", "Catalogue (PDF)"),
            ("a", "/", "Home again", "frag")] + foot)

        self.add("/shop/", "All departments", nav + [("h1", "Departments")] +
                 [("a", "/shop/%s/" % c, c.capitalize()) for c in CATEGORIES] + foot)

        for c in CATEGORIES:
            items = [p for p in cats[c] if p != hidden]
            pages = ["/shop/%s/" % c] + ["/shop/%s/page-%d.html" % (c, k) for k in range(2, 4)]
            for k, lp in enumerate(pages):
                chunk = items[k * PER_LISTING:(k + 1) * PER_LISTING]
                body = nav + [("h1", "%s, page %d" % (c.capitalize(), k + 1)),
                              ("a", "/shop/%s/?sort=price" % c, "Sort by price", "root")]
                for p in chunk:
                    body += [("h2", self.products[p]["name"]), ("a", p, "details")]
                if k + 1 < len(pages):
                    body.append(("a", pages[k + 1], "Next page"))
                if k == 0 and rng.random() < 0.5:
                    body.append(("a", rng.choice(broken), "Clearance"))
                self.add(lp, "%s - page %d" % (c.capitalize(), k + 1), body + foot)

        for c in CATEGORIES:
            for i, p in enumerate(cats[c]):
                body = nav + [("a", "/shop/%s/" % c, c.capitalize()), ("product", p), ("h2", "Description"),
                              ("p", self.words(40)), ("h2", "Related")]
                if p != hidden:
                    # related items come from the same listing page or later ones, so that
                    # the last listing's items are also reachable one hop earlier, sometimes
                    rel = rng.sample([q for q in cats[c][i // PER_LISTING * PER_LISTING:] if q != p and q != hidden], 2)
                    rel.append(rng.choice([q for q in all_products[:-1] if q != p]))
                    body += [("a", q, "related") for q in rel]
                body += [("a", p, "Reviews", "frag")]
                if rng.random() < 0.06:
                    body.append(("a", rng.choice(broken), "See also"))
                self.add(p, self.products[p]["name"], body + foot)

        blog_pages = ["/blog/"] + ["/blog/page-%d.html" % k for k in range(2, POSTS // 10 + 2)]
        for k, bp in enumerate(blog_pages):
            body = nav + [("h1", "Blog, page %d" % (k + 1))]
            for p in posts[k * 10:(k + 1) * 10]:
                body += [("h2", "Post " + p.rsplit("-", 1)[1].split(".")[0]), ("a", p, "read")]
            if k + 1 < len(blog_pages):
                body.append(("a", blog_pages[k + 1], "Older posts"))
            self.add(bp, "Blog - page %d" % (k + 1), body + foot)

        for i, p in enumerate(posts):
            # a third of the posts set <base href>: their relative links resolve against it
            base, base_href = None, None
            if i % 3 == 1:
                base, base_href = "/shop/", "/shop/"
            elif i % 3 == 2:
                base, base_href = "/shop/%s/" % CATEGORIES[i % 8], "@ORIGIN@/shop/%s/" % CATEGORIES[i % 8]
            body = nav + [("h1", "Post %d" % i)]
            for s in range(3):
                body += [("h2", "Section %d: %s" % (s + 1, self.words(3))), ("p", self.words(60))]
            for q in rng.sample(all_products[:-1], 3):
                body.append(("a", q, "product", "rel" if base else None))
            body.append(("a", p[:-5] + "/print", "Print", "root"))
            if i + 1 < len(posts):
                body.append(("a", posts[i + 1], "Next post"))
            if rng.random() < 0.15:
                body.append(("a", rng.choice(broken), "Old link"))
            self.add(p, "Post %d" % i, body + foot, base=base, base_href=base_href)

        self.add("/guides/", "Guides", nav + [("h1", "Guides")] + [("a", g, "guide") for g in guides] + foot)
        for i, g in enumerate(guides):
            body = nav + [("h1", "Guide %d" % i), ("raw", "<table><tr><td><table><tr><td>nested"
                                                          "<td>cells</table><p>unclosed <b>bold <i>both</b></i>")]
            for s in range(4):
                body += [("h2", "Step %d" % (s + 1)), ("p", self.words(30))]
            body += [("a", q, "product") for q in rng.sample(all_products[:-1], 2)]
            if i % 5 == 0:
                body.append(("a", broken[-1], "Older guide"))
            self.add(g, "Guide %d" % i, body + foot)

        self.add("/about.html", "About us", nav + [
            ("h1", "About us"), ("p", self.words(50)),
            ("a", "/archive/1.html", "Archive"), ("a", "/private/", "Staff only"),
            ("a", "/private/open/notes.html", "Open notes"), ("a", "/go/private", "Reports"),
            ("a", "/status/flaky.html", "Status"), ("a", "/old/gone.html", "Old offer"),
            ("a", "/old/chain-1.html", "Older offer")] + foot)

        for k in range(1, ARCHIVE + 1):
            body = nav + [("h1", "Archive %d" % k), ("p", self.words(20))]
            if k < ARCHIVE:
                body.append(("a", "/archive/%d.html" % (k + 1), "Next"))
            else:
                body.append(("a", hidden, "A forgotten product"))
                body.append(("a", "/archive/gone-%d.html" % k, "Gone"))
            self.add("/archive/%d.html" % k, "Archive %d" % k, body + foot)

        self.add("/private/", "Staff", nav + [("h1", "Staff")] +
                 [("a", "/private/report-%d.html" % k, "report") for k in range(1, 5)] + foot)
        for k in range(1, 5):
            self.add("/private/report-%d.html" % k, "Report %d" % k, nav + [("p", self.words(10))] + foot)
        self.add("/private/open/notes.html", "Open notes", nav + [
            ("h1", "Notes"), ("a", "/private/report-2.html", "A report"),
            ("a", guides[0], "A guide")] + foot)

        self.redirects["/old/spring-sale.html"] = "/shop/garden/"
        self.redirects["/go/private"] = "/private/report-1.html"
        self.redirects["/old/gone.html"] = "/shop/nothing-here.html"
        self.redirects["/old/chain-1.html"] = "/old/chain-2.html"
        self.redirects["/old/chain-2.html"] = "/guides/"
        self.files["/files/price-list.txt"] = ("text/plain", b"price list\n")
        self.files["/files/catalogue.pdf"] = ("application/pdf", b"%PDF-1.4\n% not really\n")

    # ---- output ----
    def render(self, path):
        pg = self.pages[path]
        out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
               "<title>%s</title>" % pg["title"], '<link rel="stylesheet" href="/style.css">', STYLE]
        if pg["base_href"]:
            out.append('<base href="%s">' % pg["base_href"])
        out.append('</head><body><a name="top"></a><nav class="menu">')
        in_nav = True
        for item in pg["body"]:
            kind = item[0]
            if in_nav and kind not in ("a", "menu"):
                out.append('</nav><main>')
                in_nav = False
            if kind == "a":
                href = self.ref(path, pg["base"], item[1], item[3] if len(item) > 3 else None)
                out.append('<a href="%s">%s</a>' % (href, item[2]))
            elif kind == "product":
                p = self.products[item[1]]
                out.append('<div class="product" id="item-%s">' % p["sku"].lower())
                out.append('<h1 class="name">%s</h1>' % p["name"])
                out.append('<p>Price: <span class="price" data-currency="%s">%s</span></p>' % (p["currency"], p["price"]))
                out.append('<span class="sku">%s</span>' % p["sku"])
                out.append('<ul class="tags">%s</ul>' % "".join("<li>%s</li>" % t for t in p["tags"]))
                out.append('<div class="stock %s">%s</div></div>' % (("in", "In stock") if p["in_stock"] else ("out", "Sold out")))
            elif kind == "raw":
                out.append(item[1])
            elif kind == "menu":
                out.append('<ul class="mega">')
                for name, targets in item[1]:
                    out.append('<li class="dept"><a href="%s">%s</a><ul>' % (self.ref(path, pg["base"], targets[0]), name))
                    out += ['<li><a href="%s">%s</a></li>' % (self.ref(path, pg["base"], t), t.rsplit("/", 1)[-1] or name)
                            for t in targets[1:]]
                    out.append("</ul></li>")
                out.append("</ul>")
            elif kind == "footer":
                out.append('</main><footer><div class="links">')
                out += ['<a href="%s">%s</a>' % (self.ref(path, pg["base"], t, "root"), t.rsplit("/", 1)[-1] or "home")
                        for t in item[1]]
                out.append("</div>" + "".join("<p class=\"small\">%s</p>" % t for t in item[2]) + "</footer>")
                out.append("<script>%s</script>" % self.script)
            else:
                out.append("<%s>%s</%s>" % (kind, item[1], kind))
        out.append("</body></html>\n")
        return "\n".join(out)

    def links(self, path):
        """The resolved same-host link targets of a page, in document order."""
        pg = self.pages[path]
        out = []
        for item in pg["body"]:
            if item[0] == "a":
                out.append(item[1])
            elif item[0] == "menu":
                out += [t for _, targets in item[1] for t in targets]
            elif item[0] == "footer":
                out += item[1]
            elif item[0] == "raw":
                for href in re.findall(r'href="([^"]*)"', item[1]):
                    u = urljoin(ORIGIN + pg["base"], href.replace("@OTHER@", OTHER))
                    if u.startswith(ORIGIN + "/"):
                        out.append(u[len(ORIGIN):].split("#")[0])
        return out

    def expected(self):
        exp = dict(pages={}, files={}, broken={}, redirects={}, disallowed={}, products={}, titles={})
        linked_from = {}
        depth = {"/": 0}
        level = ["/"]
        d = 0
        while level:
            nxt = []
            for u in level:
                if not robots_allowed(u):
                    exp["disallowed"][u] = d
                    continue
                if u in self.pages:
                    exp["pages"][u] = d
                    exp["titles"][u] = self.pages[u]["title"]
                    if u in self.products:
                        exp["products"][u] = self.products[u]
                    targets = self.links(u)
                elif u in self.files:
                    exp["files"][u] = d
                    targets = []
                elif u in self.redirects:
                    exp["redirects"][u] = dict(depth=d, to=self.redirects[u])
                    targets = [self.redirects[u]]
                else:
                    exp["broken"][u] = dict(depth=d, status=self.failing.get(u, 404))
                    targets = []
                for t in targets:
                    linked_from.setdefault(t, set()).add(u)
                    if t not in depth:
                        depth[t] = d + 1
                        nxt.append(t)
            level, d = nxt, d + 1
        for u, b in exp["broken"].items():
            b["linked_from"] = sorted(linked_from[u])
        return exp

    def write(self, out, crawl_delay):
        root = os.path.join(out, "root")
        for path in self.order:
            f = path + "index.html" if path.endswith("/") else path
            os.makedirs(os.path.dirname(root + f), exist_ok=True)
            with open(root + f, "w") as fh:
                fh.write(self.render(path).replace("@OTHER@", "http://localhost:@PORT@"))
        for path, (_, data) in self.files.items():
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            with open(root + path, "wb") as fh:
                fh.write(data)
        with open(root + "/robots.txt", "w") as fh:
            fh.write(robots_text(crawl_delay))
        with open(root + "/style.css", "w") as fh:
            fh.write("body { font-family: sans-serif }\n")
        with open(os.path.join(out, "locations.conf"), "w") as fh:
            for src, dst in sorted(self.redirects.items()):
                fh.write("location = %s { return 301 %s; }\n" % (src, dst))
            for src, status in sorted(self.failing.items()):
                fh.write("location = %s { return %d; }\n" % (src, status))
            # the home page starts a session, as shops do: a crawler that keeps cookies
            # sends it with every later request
            fh.write('location = /index.html { add_header Set-Cookie "%s; Path=/"; }\n' % SESSION_COOKIE)
        with open(os.path.join(out, "expected.json"), "w") as fh:
            json.dump(self.expected(), fh, indent=1, sort_keys=True)


def main(argv):
    out, seed, delay = None, 16, None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--seed":
            seed = int(args.pop(0))
        elif a == "--crawl-delay":
            delay = args.pop(0)
        else:
            out = a
    if not out:
        sys.exit("usage: site_gen.py OUT_DIR [--seed N] [--crawl-delay S]")
    site = Site(seed)
    site.build()
    site.write(out, delay)


if __name__ == "__main__":
    main(sys.argv[1:])
