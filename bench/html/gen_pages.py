"""bench/html.sh's pages: writes five seeded, deterministic HTML pages and a manifest.

    /usr/bin/python3 gen_pages.py OUTDIR

OUTDIR/pages.txt has one line per page: NAME URL FILE MULT, where URL is the address
the page was "fetched" from (links resolve against it, or against its <base href>)
and MULT multiplies the repetitions for small pages (their medians need more samples).

The pages, all UTF-8 (only the article and the catalogue and wiki say so):
  tiny       a few hundred bytes: the fixed cost of a document
  article    ~20 KB news article: meta charset, style, scripts, inline links
  forum      ~120 KB forum thread: NO charset declared, posts in nested tables,
             query-only pagination links (?page=N), a NUL byte in a post
  catalogue  ~400 KB shop listing with <base href> and relative links (../, /, ?)
  wiki       ~1 MB encyclopaedia page with ~6,000 links, fragments, citations
Broken markup throughout: unclosed <p>, <li>, <td> and <div>, stray </div>, unquoted
attribute values, comments (some holding markup), entities, non-ASCII text in titles and
headings, <script> blocks holding markup. Hrefs stay in forms every peer's URL joiner
agrees on (ASCII, lower-case hosts, non-empty paths), except where the difference is
the point: leading/trailing whitespace (WHATWG strips it), fragment-only and
query-only references, dot segments, javascript:/mailto: (dropped: not http/https).
"""
import os
import random
import sys

R = random.Random(16)

WORDS = ("the of and to in is was for on that with as by at from his her an were which "
         "are this be or had it not but also have they first one their its new after who "
         "two has been other when more into time all some would there can during most "
         "city year river music team war party church school film house state world "
         "early between about under while century number system group known major").split()
NONASCII = ["Zürich", "São Paulo", "Kraków", "Ελλάδα", "Москва", "東京", "Đà Nẵng",
            "Reykjavík", "Ñandú", "İstanbul", "Łódź", "naïve café", "Ærø", "Şişli"]
ENT = ["&amp;", "&eacute;", "&#8212;", "&lt;3", "&quot;ok&quot;", "&copy;", "&#x2013;"]


def words(n):
    return " ".join(R.choice(WORDS) for _ in range(n))


def sentence(n=12):
    s = words(n)
    return s[0].upper() + s[1:] + "."


def para(nsent, link=None):
    """A paragraph; link(i) may return an <a> to splice in after some sentences."""
    out = []
    for i in range(nsent):
        out.append(sentence(R.randint(8, 20)))
        if link and R.random() < 0.5:
            out.append(link(i))
        if R.random() < 0.1:
            out.append(R.choice(ENT))
    return " ".join(out)


def heading(i):
    """An h2's inner HTML: inline tags, a comment, entities, non-ASCII, line breaks."""
    kind = i % 5
    t = "%s %s" % (words(R.randint(1, 4)).title(), R.choice(NONASCII))
    if kind == 0:
        return t
    if kind == 1:
        return '<span class="mw-headline" id="s%d">%s</span>' % (i, t)
    if kind == 2:
        return "\n    %s <em>%s</em> %s\n  " % (t, words(2), R.choice(ENT))
    if kind == 3:
        return "%s<!-- edit %d --> <a href=\"#s%d\">\u00b6</a>" % (t, i, i)
    return "%s\t&amp;\t%s" % (t, words(1))


SCRIPT = """<script type="text/javascript">
var cfg = {page: %d, html: '<a href="/from-script">not a link</a></div>'};
if (a < b && c > d) { document.write("<p>" + cfg.page + "</p>"); }
</script>"""
STYLE = """<style>
body { font: 14px/1.4 sans-serif } a[href^="http"]:after { content: "\\2197" }
table.posts td > div { padding: 2px } /* </div> in a comment */
</style>"""


def head(title, charset=True, base=None, extra=""):
    h = ["<!DOCTYPE html>", "<html lang=en>", "<head>"]
    if charset:
        h.append('<meta charset="utf-8">')
    h.append("<title>%s</title>" % title)
    if base:
        h.append('<base href="%s">' % base)
    h += [STYLE, SCRIPT % R.randint(1, 99), extra, "</head>"]
    return "\n".join(h)


# ---- tiny -------------------------------------------------------------------------

def tiny():
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>Tiny — café</title>'
            '</head><body><h2>Hello, wörld</h2><p>One <a href="/a">a</a>, '
            '<a href="b.html#top">b</a>, <a href="https://other.example.org/c">c</a>, '
            '<a href="mailto:x@example.org">mail</a>.<p>Unclosed <b>bold'
            '<h2>Second &amp; last</h2></body></html>\n')


# ---- article (~20 KB) ---------------------------------------------------------------

def article():
    def link(i):
        k = R.randint(1, 400)
        return R.choice([
            '<a href="/news/2026/%d/story-%d.html">%s</a>' % (k % 12 + 1, k, words(2)),
            '<a href="../topics/%s">%s</a>' % (R.choice(WORDS), words(1)),
            '<a href="https://www.example.net/ref/%d">%s</a>' % (k, words(2)),
            '<a href=related/%d.html>%s</a>' % (k, words(1)),
        ])
    b = [head("Élections à Zürich: what changed — Example News"), "<body>"]
    b.append('<div id=top><nav><ul>')
    for s in ["world", "politics", "business", "science", "culture", "sport"]:
        b.append('<li><a href="/section/%s/">%s</a>' % (s, s.title()))  # unclosed li
    b.append('</ul></nav></div></div>')  # stray </div>
    b.append('<article><h1>Élections à Zürich</h1><p class=byline>By <a href="/people/ana">Ana</a>')
    sec = 0
    while sum(len(x) for x in b) < 18000:
        if sec % 2 == 0:
            b.append("<h2>%s</h2>" % heading(sec))
        sec += 1
        b.append("<p>" + para(R.randint(3, 6), link))  # unclosed p
        if sec % 4 == 0:
            b.append("<!-- ad slot %d <a href=\"/ads/%d\">x</a> -->" % (sec, sec))
        if sec % 5 == 0:
            b.append('<figure><img src=img/%d.jpg alt="photo %s"><figcaption>%s</figure>'
                     % (sec, R.choice(NONASCII), words(6)))
    b.append('<p>Share: <a href="javascript:share()">share</a> <a href="#top">top</a> '
             '<a href="mailto:tips@example.org">tips</a></article>')
    b.append('<footer><a href="/about">About</a> | <a href="/about">About again</a> | '
             '<a href="?print=1">Print</a></footer>')
    b.append(SCRIPT % 2)
    b.append("</body></html>\n")
    return "\n".join(b)


# ---- forum (~120 KB, no charset) ----------------------------------------------------

def forum():
    b = [head("Forum » Reisen nach Kraków und Łódź — Seite 3", charset=False), "<body>"]
    b.append('<table width=100% class=outer><tr><td class=nav>')
    for p in range(1, 9):
        b.append('<a href="?page=%d">%d</a>' % (p, p))
    b.append('<a href="showthread.php?t=4821&amp;page=4">next</a></td></tr>')
    post = 0
    while sum(len(x) for x in b) < 118000:
        post += 1
        user = R.randint(1, 300)
        if post % 6 == 1:
            b.append("<tr><td colspan=2><h2>%s</h2></td></tr>" % heading(post))
        b.append('<tr><td class=post id=post%d>' % post)
        b.append('<table class=inner cellpadding=2><tr><td class=user>'
                 '<a href="member.php?u=%d">user%d</a><br>Posts: %d'
                 '<td class=body><div class=msg>' % (user, user, R.randint(1, 9999)))
        if post % 3 == 0:  # a quote: a table inside the table inside the table
            b.append('<table class=quote><tr><td>Quote: <a href="showpost.php?p=%d#post%d">'
                     'user%d</a> %s</td></tr></table>'
                     % (post - 1, post - 1, R.randint(1, 300), para(2)))
        text = para(R.randint(2, 6), lambda i: '<a href="/forum/t/%d/">thread %d</a>'
                    % (R.randint(1, 5000), i))
        if post == 7:
            text = text.replace(" ", " \x00 ", 1)  # a NUL byte in a post's text
        b.append(text)
        if post % 4 == 0:
            b.append('</div></div>')  # one stray </div>
        else:
            b.append('</div>')
        b.append('<div class=sig>-- <a href=http://blog.example.com/u%d/>my blog</a> '
                 '<a href="../forum/./u/../u/%d">profile</a></div>'
                 % (user, user))
        b.append('</td></tr></table>')  # inner table; the outer <td> left open
    b.append('<tr><td><a href="#top">top</a> <a href="./">index</a> '
             '<a href="../">up</a></td></tr></table>')
    b.append("</body></html>\n")
    return "\n".join(b)


# ---- catalogue (~400 KB, <base href>) ---------------------------------------------

def catalogue():
    b = [head("Catalogue: Ærø knitwear & Reykjavík boots", base="https://shop.example.com/catalogue/"),
         "<body>", '<div class=page><div class=header><a href="/">Home</a> '
         '<a href="../cart">Cart</a> <a href=" search?q=boots ">Search</a></div>']
    cat = 0
    item = 0
    while sum(len(x) for x in b) < 400000:
        cat += 1
        b.append('<div class=category><h2>%s</h2><ul class=grid>' % heading(cat))
        for _ in range(R.randint(12, 30)):
            item += 1
            price = R.randint(100, 99999)
            b.append('<li class="item card"><div class=thumb><a href="item/%d.html">'
                     '<img src="img/%d.jpg" alt="%s" width=120 height=120></a></div>'
                     % (item, item, R.choice(NONASCII)))
            b.append('<div class=info><a class=name href="item/%d.html">%s %s</a>'
                     '<span class=price>%d,%02d&nbsp;&euro;</span>'
                     % (item, words(3).title(), R.choice(NONASCII), price // 100, price % 100))
            b.append('<a href="../brand/%s/">%s</a> <a href="/cart?add=%d&amp;qty=1">add</a>'
                     % (R.choice(WORDS), words(1), item))
            if item % 7 == 0:
                b.append('<a href="item/%d.html#reviews">reviews</a>' % item)
            if item % 11 == 0:
                b.append('<a href="javascript:void(0)" onclick=wish(%d)>wish</a>' % item)
            if item % 13 == 0:
                b.append('<a href="\n  item/%d.html?variant=%d  ">variant</a>' % (item, item % 5))
            b.append('</div><p class=desc>%s' % para(R.randint(1, 3)))  # unclosed p and li
        b.append('</ul></div>')
        if cat % 3 == 0:
            b.append('</div>')  # stray
    b.append('<div class=pager><a href="?p=2">2</a> <a href="?p=3">3</a> '
             '<a href="//cdn.example.com/catalogue.pdf">PDF</a></div>')
    b.append("</div></body></html>\n")
    return "\n".join(b)


# ---- wiki (~1 MB, ~6,000 links) -------------------------------------------------------

def wiki():
    titles = ["%s_%s" % (R.choice(WORDS).title(), R.choice(WORDS)) for _ in range(1600)]

    def link(i):
        r = R.random()
        if r < 0.70:
            t = R.choice(titles)
            return '<a href="/wiki/%s" title="%s">%s</a>' % (t, t.replace("_", " "), t.replace("_", " "))
        if r < 0.80:
            n = R.randint(1, 400)
            return '<sup class=reference><a href="#cite_note-%d">[%d]</a></sup>' % (n, n)
        if r < 0.90:
            return ('<a rel=nofollow class="external text" href="http://www.example.org/doc/%d?id=%d&amp;lang=en">%s</a>'
                    % (R.randint(1, 3000), R.randint(1, 99), words(2)))
        return '<a href=/w/index.php?title=%s&amp;action=edit class=new>%s</a>' % (R.choice(titles), words(1))

    b = [head("Östergötland — Wikipedia-like (Ελλάδα, 東京)"), "<body>",
         '<div id=content><h1 id=firstHeading>Östergötland</h1>',
         '<table class="infobox vcard"><tbody>']
    for i in range(30):
        b.append('<tr><th scope=row>%s<td>%s' % (words(2).title(), link(i)))  # unclosed cells
    b.append("</tbody></table>")
    sec = 0
    while sum(len(x) for x in b) < 930000:
        sec += 1
        b.append('<h2>%s</h2>' % heading(sec))
        for _ in range(R.randint(3, 8)):
            b.append("<p>" + para(R.randint(3, 7), link) + "</p>")
        if sec % 4 == 0:
            b.append('<ul>' + "".join("<li>%s %s" % (link(0), words(5)) for _ in range(12)) + '</ul>')
        if sec % 9 == 0:
            b.append('<div class=navbox><table><tr><td>' +
                     " · ".join(link(0) for _ in range(40)) + '</table></div></div>')
        if sec % 10 == 0:
            b.append("<!-- section %d: <h2>not a heading</h2> -->" % sec)
    b.append('<h2>References</h2><ol class=references>')
    for n in range(1, 401):
        b.append('<li id="cite_note-%d"><a href="#cite_ref-%d">^</a> <a href="https://doi.example.org/10.%d/%d">%s</a>'
                 % (n, n, 1000 + n, R.randint(1, 99999), words(6)))
    b.append('</ol></div>')
    b.append(SCRIPT % 3)
    b.append("</body></html>\n")
    return "\n".join(b)


PAGES = [  # name, url, generator, repetition multiplier
    ("tiny", "https://example.com/tiny/index.html", tiny, 20),
    ("article", "https://news.example.com/world/2026/12/elections.html", article, 5),
    ("forum", "http://forum.example.de/showthread.php?t=4821&page=3", forum, 2),
    ("catalogue", "https://www.example.com/shop/list.html?cat=7", catalogue, 1),
    ("wiki", "https://wiki.example.org/wiki/%C3%96sterg%C3%B6tland", wiki, 1),
]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pages.txt"), "w") as m:
        for name, url, gen, mult in PAGES:
            path = os.path.join(out, name + ".html")
            with open(path, "wb") as f:
                f.write(gen().encode("utf-8"))
            m.write("%s %s %s %d\n" % (name, url, path, mult))


if __name__ == "__main__":
    main()
