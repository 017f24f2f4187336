// bench/html.sh's Node peer: cheerio (its default parser, parse5) and WHATWG URL.
//   node node_cheerio.js MANIFEST REPS [DUMPDIR]
// The task, the warm-up, the clock and the output are py_peers.py's (see there): the
// bytes are decoded as UTF-8 on the clock; new URL() strips the href's surrounding
// whitespace itself; the clock is process.hrtime.bigint() around the task alone, the
// CPU time process.cpuUsage() (every thread: V8's collector helpers count).
"use strict";
const fs = require("fs");
const cheerio = require("cheerio");

const WS = /[ \t\n\r\f]+/g;
const collapse = (s) => s.replace(WS, " ").replace(/^ | $/g, "");

function task(data, url) {
  const $ = cheerio.load(data.toString("utf8"));
  let base = url;
  const b = $("base[href]").first();
  if (b.length) {
    try { base = new URL(b.attr("href"), url).href; } catch (e) { /* keep the page URL */ }
  }
  const seen = new Set(), links = [];
  $("a[href]").each((_, a) => {
    let u;
    try { u = new URL(a.attribs.href, base); } catch (e) { return; }
    if (u.protocol !== "http:" && u.protocol !== "https:") return;
    const s = u.href.split("#", 1)[0];
    if (!seen.has(s)) { seen.add(s); links.push(s); }
  });
  const heads = [];
  $("h2").each((_, h) => { heads.push(collapse($(h).text())); });
  return [links, heads];
}

function fnv(text) {
  let h = 0x811c9dc5;
  for (const c of Buffer.from(text, "utf8")) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

const [manifest, repsArg, dump] = process.argv.slice(2);
const reps = parseInt(repsArg, 10);
for (const line of fs.readFileSync(manifest, "utf8").split("\n")) {
  if (!line) continue;
  const [name, url, path, multArg] = line.split(" ");
  const mult = parseInt(multArg, 10);
  const data = fs.readFileSync(path);
  for (let i = 0; i < Math.max(2, mult); i++) task(data, url);
  const times = [], cpu = [];
  let links, heads;
  for (let i = 0; i < reps * mult; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    [links, heads] = task(data, url);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e3);
  }
  times.sort((x, y) => x - y);
  cpu.sort((x, y) => x - y);
  const text = links.concat(heads).map((x) => x + "\n").join("");
  if (dump) fs.writeFileSync(`${dump}/cheerio.${name}.txt`, text);
  console.log(`page ${name} links ${links.length} h2 ${heads.length} fnv ${fnv(text)} ms ${times[times.length >> 1].toFixed(3)} cpu ${cpu[cpu.length >> 1].toFixed(3)}`);
}
