#!/usr/bin/env bash
# HTML parsing benchmark (issue 16, item 7, first half): luarun.html against Python's
# lxml (the reference), BeautifulSoup on html.parser and on lxml, and cheerio, in one
# run on the same generated pages (bench/html/gen_pages.py, seeded: a 300-byte page, a
# 20 KB article, a 120 KB forum page of nested tables with no charset, a 400 KB
# catalogue with <base href>, a 1 MB wiki page with 6,500 links; broken markup in all).
# The task per page, identical in every peer (bench/html/py_peers.py says it exactly):
# parse; every a[href] resolved against the page URL or <base href>, fragments
# dropped, http/https only, duplicates removed; the whitespace-collapsed text of every
# h2. cheerio runs with its default parser (parse5). Every peer runs on core 1 (taskset), times each task inside its own process
# (start-up excluded) and prints the median per page; the links and headings must be
# the same as lxml's (count and FNV-1a hash): a warning and a diff if not.
#   luarun         html.parse + doc:links() + h2 text (bench/html/luarun_html.lua)
#   luarun join    the same with select("a[href]") + http.url.join per link (when
#                  http.url exists): what doc:links() saves
#   libxml2 alone  htmlReadMemory + xmlFreeDoc in C (bench/html/libxml2_floor.c): the
#                  floor under both luarun and lxml
# Then where luarun's time goes (parse, links(), select, text, attr, url.join, each
# alone), and how long one parse of the 1 MB page holds luarun's loop (a 1 ms ticker
# beside 20 parses, and the loop thread's own CPU time; pinned to one core and on both).
#
#   bench/html.sh [--quick] [--reps=N]
#     --quick   3 repetitions instead of 11;  --reps  N repetitions (small pages
#               repeat more: tiny 20 N, article 5 N, forum 2 N)
#
# Environment: LUARUN_BUILD (build directory, default build; built if missing);
# HTML_BENCH_KEEP=1 keeps the work directory (pages, outputs) and prints its path.
# Installs cheerio with npm into bench/html/node_modules when missing.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
reps=11
for a in "$@"; do
  case "$a" in
    --quick) reps=3 ;;
    --reps=*) reps=${a#--reps=} ;;
    *) sed -n '2,/^set /p' "$0" | sed '$d'; exit 2 ;;
  esac
done
build=${LUARUN_BUILD:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
py=/usr/bin/python3
pin=""; [ "$(nproc)" -ge 2 ] && pin="taskset -c 1"

echo "bench/html.sh $*"
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# What is missing.
missing=()
for p in time python3-lxml python3-bs4 python3-cssselect libxml2-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v npm >/dev/null || { echo "installing npm"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
if ! (cd bench/html && node -e 'require("cheerio")' 2>/dev/null); then
  echo "installing cheerio (npm)"
  (cd bench/html && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
[ -x "$build/luarun" ] || { cmake -S . -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null; }

tmp=$(mktemp -d /tmp/luarun-htmlbench.XXXXXX)
if [ "${HTML_BENCH_KEEP:-}" = 1 ]; then echo "work directory $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
trap 'exit 130' INT TERM
mkdir -p "$tmp/out"
$py bench/html/gen_pages.py "$tmp" || exit 1
pages=$(cut -d' ' -f1 "$tmp/pages.txt")
gcc -O2 -Wall -Wextra -o "$tmp/floor" bench/html/libxml2_floor.c $(xml2-config --cflags --libs) || exit 1

# Which luarun rows this build can run.
have_html=0 have_join=0
"$build/luarun" - >/dev/null 2>&1 <<<'require "luarun.html"' && have_html=1
"$build/luarun" - >/dev/null 2>&1 <<<'assert(require("luarun.http").url.join)' && have_join=1
peers="luarun luarun-join lxml bs4-lxml bs4-html.parser cheerio"
peer_cmd() {
  case "$1" in
    luarun) [ $have_html = 1 ] && echo "$build/luarun bench/html/luarun_html.lua links $tmp/pages.txt $reps $tmp/out" ;;
    luarun-join) [ $have_html$have_join = 11 ] && echo "$build/luarun bench/html/luarun_html.lua join $tmp/pages.txt $reps $tmp/out" ;;
    cheerio) echo "node bench/html/node_cheerio.js $tmp/pages.txt $reps $tmp/out" ;;
    *) echo "$py bench/html/py_peers.py $1 $tmp/pages.txt $reps $tmp/out" ;;
  esac
}
declare -A ms cpu n_links n_h2 hash rss
failures="" warnings=""
for peer in $peers; do
  cmd=$(peer_cmd "$peer")
  [ -n "$cmd" ] || { echo "  $peer: not in this build" >&2; continue; }
  $pin /usr/bin/time -f %M -o "$tmp/rss" timeout 1800 $cmd >"$tmp/o" 2>"$tmp/e" </dev/null
  rss[$peer]=$(( $(tail -1 "$tmp/rss" | grep -E '^[0-9]+$' || echo 0) / 1024 ))
  while read -r _ name _ l _ h _ f _ t _ c; do
    ms[$name,$peer]=$t cpu[$name,$peer]=$c n_links[$name,$peer]=$l n_h2[$name,$peer]=$h hash[$name,$peer]=$f
  done < <(grep '^page ' "$tmp/o")
  if [ "$(grep -c '^page ' "$tmp/o")" -ne "$(wc -l <"$tmp/pages.txt")" ]; then
    failures+="$peer: $(grep -v '^Command exited' "$tmp/e" | grep . | head -3 | cut -c1-300)"$'\n'
  fi
  echo "  $peer: $(grep '^page ' "$tmp/o" | awk '{ printf "%s %s ms (cpu %s); ", $2, $(NF - 2), $NF }')${rss[$peer]} MB" >&2
done
$pin "$tmp/floor" "$tmp/pages.txt" "$reps" >"$tmp/floor.txt" || failures+="libxml2 floor failed"$'\n'
declare -A floor
declare -A floor_cpu floor_all # parse (+ free: what any binding of libxml2 pays at least)
while read -r _ name _ p _ fr _ pc _ fc; do
  floor[$name]=$p floor_cpu[$name]=$pc
  floor_all[$name]=$(awk -v a="$pc" -v b="$fc" 'BEGIN { printf "%.3f", a + b }')
done <"$tmp/floor.txt"

# Agreement with lxml: count of links, of h2, and the hash; a diff when they differ.
for page in $pages; do
  for peer in $peers; do
    [ "$peer" = lxml ] || [ -z "${hash[$page,$peer]:-}" ] && continue
    [ "${hash[$page,$peer]}" = "${hash[$page,lxml]:-}" ] && continue
    a=$tmp/out/lxml.$page.txt b=$tmp/out/$peer.$page.txt
    warnings+="WARNING $page: $peer gives ${n_links[$page,$peer]} links, ${n_h2[$page,$peer]} h2 (lxml ${n_links[$page,lxml]:-?}, ${n_h2[$page,lxml]:-?})"
    warnings+=", $(comm -23 <(sort -u "$a") <(sort -u "$b") | wc -l) lines only lxml has, $(comm -13 <(sort -u "$a") <(sort -u "$b") | wc -l) only $peer has"$'\n'
    warnings+="$(diff "$a" "$b" | grep '^[<>]' | head -6 | cut -c1-160 | sed 's/^/    /')"$'\n'
  done
done

# The tables: ms per page (wall, then CPU), then how many times luarun's time each
# peer takes, and the goals on both clocks.
fmt() { [ -n "${1:-}" ] && printf '%s' "$1" || printf 'n/a'; }
ratio() { # peer luarun -> "N.N" (peer's time / luarun's: above 1, luarun is ahead)
  [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }' || printf 'n/a'
}
size() { awk '{ if ($1 < 1024) printf "%d B", $1; else printf "%.0f KB", $1 / 1024 }' <<<"$(stat -c %s "$tmp/$1.html")"; }
table() { # the associative arrays' names: the peers', the floor's
  local -n v=$1 fl=$2
  echo "| page | luarun | luarun, select + url.join | lxml | bs4 + lxml | bs4 + html.parser | cheerio | libxml2 parse alone (C) |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for page in $pages; do
    printf '| %s (%s, %s links) |' "$page" "$(size "$page")" "$(fmt "${n_links[$page,lxml]:-}")"
    for peer in $peers; do printf ' %s |' "$(fmt "${v[$page,$peer]:-}")"; done
    printf ' %s |\n' "$(fmt "${fl[$page]:-}")"
  done
}
echo
echo "bench/html.sh $* (pinned to core 1; median of $reps x MULT runs after a warm-up"
echo "of max(2, MULT) runs of the task per page, the same count in every peer, node included;"
echo "cheerio parses with its default parser, parse5, a WHATWG parser in JavaScript, not htmlparser2)"
echo
echo "Wall ms per page (peak RSS of each whole run below):"
echo
table ms floor
printf '| peak RSS |'; for peer in $peers; do printf ' %s |' "${rss[$peer]:+${rss[$peer]} MB}"; done; echo ' |'
echo
echo "CPU ms per page (the process's CPU time over the same task: less disturbed by the"
echo "machine's other load; luarun's includes its pool thread's parse):"
echo
table cpu floor_cpu
echo
echo "How many times luarun's time each peer takes, wall / CPU (above 1.0: luarun is ahead):"
echo
echo "| page | lxml | bs4 + lxml | bs4 + html.parser | cheerio | luarun select + url.join | ceiling: bs4 + lxml / libxml2 parse + free |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for page in $pages; do
  printf '| %s |' "$page"
  for peer in lxml bs4-lxml bs4-html.parser cheerio luarun-join; do
    printf ' %s / %s |' "$(ratio "${ms[$page,$peer]:-}" "${ms[$page,luarun]:-}")" \
      "$(ratio "${cpu[$page,$peer]:-}" "${cpu[$page,luarun]:-}")"
  done
  printf ' %s |\n' "$(ratio "${cpu[$page,bs4-lxml]:-}" "${floor_all[$page]:-}")"
done
echo
echo "(The ceiling: bs4 on lxml runs libxml2's HTML parser too, its push parser calling Python"
echo "instead of building a tree, so a binding that builds libxml2's tree is at most about this"
echo "many times faster than it; CPU time, the floor measured after the peers.)"
verdict() { # label peer threshold
  local miss="" page r clk
  [ $have_html = 1 ] || { echo "- $1: no luarun.html in this build"; return; }
  for clk in ms cpu; do
    local -n v=$clk
    for page in $pages; do
      r=$(awk -v a="${v[$page,$2]:-0}" -v b="${v[$page,luarun]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
      [ -n "$r" ] && awk -v r="$r" -v t="$3" 'BEGIN { exit !(r > t) }' || miss+=" $page ${clk/ms/wall} (${r:-n/a}x)"
    done
  done
  [ -z "$miss" ] && echo "- $1: met on every page, wall and CPU" || echo "- $1: NOT met on:$miss"
}
echo
echo "Goals:"
verdict "ahead of lxml" lxml 1
verdict "at least 10x BeautifulSoup (html.parser)" bs4-html.parser 9.999
verdict "at least 10x BeautifulSoup (lxml)" bs4-lxml 9.999
verdict "ahead of cheerio" cheerio 1
[ -n "$warnings" ] && { echo; printf '%s' "$warnings"; }
[ -n "$failures" ] && { echo; echo "failed:"; printf '%s' "$failures"; }

# Where luarun's time goes, and how long a parse holds the loop.
if [ $have_html = 1 ]; then
  echo
  echo "Where luarun's time goes (CPU ms, each part alone, median; a[href] and h2 counts before dedup):"
  echo
  $pin "$build/luarun" bench/html/luarun_html.lua phases "$tmp/pages.txt" "$reps" >"$tmp/ph" 2>&1 ||
    { echo "phases failed: $(head -3 "$tmp/ph")"; }
  echo "| page | a[href] | h2 | parse | links() | select h2 | text of h2s | select a[href] | attr href | url.join each |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk '$1 == "phase" { delete v; for (i = 7; i < NF; i += 2) v[$i] = $(i + 1)
         printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, $4, $6, v["parse"],
           v["links"], v["select_h2"], v["text_h2"], v["select_a"], v["attr_href"],
           ("url_join" in v) ? v["url_join"] : "n/a" }' "$tmp/ph"
  echo
  wiki_url=$(awk '$1 == "wiki" { print $2 }' "$tmp/pages.txt")
  echo "Loop hold, 1 MB wiki page, 20 runs beside a 1 ms ticker: the worst gap between ticks"
  echo "(ms; on a busy machine it includes waiting for a core), the median wall ms of one run,"
  echo "and the median CPU ms the loop thread itself spent per run (ticker included; idle: a"
  echo "10 ms sleep):"
  echo
  echo "| cores | idle: gap, loop CPU | html.parse: gap, ms, loop CPU | parse + links() + h2 text: gap, ms, loop CPU |"
  echo "|---|---:|---:|---:|"
  for how in pinned both; do
    p=$pin; [ $how = both ] && p=""
    $p "$build/luarun" bench/html/luarun_tick.lua "$tmp/wiki.html" "$wiki_url" 20 >"$tmp/tick" 2>&1
    awk -v how="$how" '$1 == "tick" { printf "| %s | %s, %s | %s, %s, %s | %s, %s, %s |\n",
      (how == "pinned" ? "1 (taskset -c 1)" : "2"), $3, $17, $5, $7, $9, $11, $13, $15 }' "$tmp/tick"
    grep -q '^tick' "$tmp/tick" || echo "| $how | failed: $(head -1 "$tmp/tick" | cut -c1-120) | | |"
  done
  echo
  echo "libxml2 floor (C, pinned; wall): $(awk '{ printf "%s %s ms + free %s; ", $2, $4, $6 }' "$tmp/floor.txt")"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
