-- A realistic-enough page for luarun.html's own measurements (bench/html/loop.lua):
-- nested tables, many links (relative, absolute, fragments), h2 headings, some broken
-- markup (unclosed <p>, <li>, <td>), entities and non-ASCII text, of about `kb` KB.
-- Deterministic: the same kb gives the same page.
return function(kb)
  local parts, size, i = {}, 0, 0
  local function add(s)
    parts[#parts + 1] = s
    size = size + #s
  end
  add('<!DOCTYPE html><html><head><meta charset="utf-8"><title>Page of ' .. kb ..
      ' KB &amp; more</title><link rel=stylesheet href="/s.css"><script>var x = "<p>";</script>' ..
      '<style>p { color: red }</style></head><body><nav><ul>')
  for k = 1, 20 do add(('<li><a href="/nav/%d">Section %d</a>'):format(k, k)) end
  add('</ul></nav><main>')
  while size < kb * 1024 do
    i = i + 1
    add(('<section id="s%d"><h2 class="title">Heading %d — caf\u{e9} <em>n\u{ba}%d</em></h2>'):format(i, i, i))
    add('<p>Some text with <a href="article/' .. i .. '.html#top">a relative link</a>, ' ..
        '<a href="https://other.example/x?' .. i .. '">an absolute one</a> and ' ..
        '<a href="#frag' .. i .. '">a fragment</a>. Unclosed paragraph<p>Another &lt;one&gt; &eacute;')
    add('<table class=data><tr><th>Name<th>Value<th>Link')
    for r = 1, 6 do
      add(('<tr><td>row %d<td><table><tr><td>%d.%d</td><td><b>nested</b></td></tr></table><td><a href="../t/%d/%d">t%d</a>')
          :format(r, i, r, i, r, r))
    end
    add('</table><ul>')
    for l = 1, 5 do add(('<li class="item i%d"><span>item %d</span> <a href="/item/%d-%d">more</a>'):format(l, l, i, l)) end
    add('</ul><div class="c"><div><div><p>deep <i>text</i> here</div></div></div></section>')
  end
  add('</main><footer><p>&copy; 2026</footer></body></html>')
  return table.concat(parts)
end
