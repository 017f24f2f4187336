#!/usr/bin/env bash
# URL joining (issue 16): the cost of one join, which doc:links() pays for every link
# of a page (~6,000 on a 1 MB wiki page).
#   - C: lr_url_join against a base parsed once (build/test_http_url bench), mixed
#     references (relative, absolute, fragment-only, scheme-relative).
#   - Lua: http.url.join(base, ref) in a loop with one base (parsed once and kept),
#     then with the base changing at every call (parsed each time), and
#     http.url.normalize, and http.robots(...):allowed on a 200-rule file.
#   - Python's urllib.parse.urljoin for scale, same references.
#
#   bench/url.sh          (uses build/, LUARUN_BUILD to override)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${LUARUN_BUILD:-build}
[ -x "$B/test_http_url" ] || cmake --build "$B" -j2 >/dev/null
"$B/test_http_url" bench
"$B/luarun" -e '
local http = require "luarun.http"
local join, norm = http.url.join, http.url.normalize
local refs = {"/wiki/Main_Page", "../b/c.html", "x.html?y=1#z", "https://other.example/a",
              "#top", "//cdn.example/x.js"}
local base = "https://en.wikipedia.org/wiki/Lua_(programming_language)"
local bases = {base, base .. "?x", base .. "#y"}
local N = 200000
local function time(name, fn)
  local t0 = os.clock() -- CPU time: the machine is shared
  for i = 1, N do fn(i) end
  print(("%-40s %.2f us of CPU per call"):format(name, (os.clock() - t0) / N * 1e6))
end
time("http.url.join, one base", function(i) join(base, refs[i % 6 + 1]) end)
time("http.url.join, base changing each call", function(i) join(bases[i % 3 + 1], refs[i % 6 + 1]) end)
time("http.url.normalize", function(i) norm("HTTP://Example.com:80/a/./b/../c%7e?q=" .. (i % 100)) end)
local lines = {"User-agent: *"}
for i = 1, 200 do lines[#lines + 1] = ("Disallow: /dir%d/*/page*.html$"):format(i) end
local r = http.robots(table.concat(lines, "\n"))
N = 20000
time("robots:allowed, 200 wildcard rules", function(i) r:allowed("/dir" .. (i % 300) .. "/x/page1.html") end)
'
python3 - <<'PY'
import time
from urllib.parse import urljoin
refs = ["/wiki/Main_Page", "../b/c.html", "x.html?y=1#z", "https://other.example/a", "#top", "//cdn.example/x.js"]
base = "https://en.wikipedia.org/wiki/Lua_(programming_language)"
n = 200000
t0 = time.process_time()
for i in range(n): urljoin(base, refs[i % 6])
print("%-40s %.2f us of CPU per call" % ("python3 urllib.parse.urljoin", (time.process_time() - t0) / n * 1e6))
PY
