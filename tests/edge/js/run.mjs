// Run a Python file under real MicroPython (the WebAssembly port, from npm) with Node.
//
//   node tests/edge/js/run.mjs [--heap BYTES] [--mount HOSTDIR:MPDIR]... [--input FILE]
//                              [--arg STRING]... SCRIPT.py
//
// Each --mount copies HOSTDIR's .py, .mpy and .json files (recursively) into MicroPython's
// in-memory filesystem at MPDIR and puts MPDIR on sys.path; --input copies FILE to
// /input.json; --arg values are appended to sys.argv. Then SCRIPT runs as __main__.
//
// The package's own CLI exits 0 even when the Python code raised, so this runner decides
// the exit code itself: 0 only when the script ran to its end without an exception AND
// printed the sentinel line "EDGE-SENTINEL-OK" (the harness prints it only when every test
// passed); 1 otherwise; 2 for a usage error. --heap sets MicroPython's GC heap (default
// 1 MiB): a small heap checks that the agent fits a board.

import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const SENTINEL = "EDGE-SENTINEL-OK";

function usage(message) {
  process.stderr.write(`run.mjs: ${message}\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
let heap = 1024 * 1024;
const mounts = [];
const extra = [];
let input = null;
let script = null;
while (args.length) {
  const a = args.shift();
  if (a === "--heap") heap = Number.parseInt(args.shift(), 10);
  else if (a === "--mount") mounts.push(args.shift());
  else if (a === "--input") input = args.shift();
  else if (a === "--arg") extra.push(args.shift());
  else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else script = a;
}
if (!script) usage("no script given");
if (!Number.isFinite(heap) || heap < 16 * 1024) usage("--heap: expected bytes >= 16384");

let sawSentinel = false;
function forward(stream, text) {
  // linebuffer mode hands over one line at a time, without its newline
  stream.write(`${text}\n`);
  if (text.trim() === SENTINEL) sawSentinel = true;
}

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => forward(process.stdout, line),
  stderr: (line) => forward(process.stderr, line),
});

function mkdirs(path) {
  let cur = "";
  for (const part of path.split("/").filter(Boolean)) {
    cur += `/${part}`;
    try {
      mp.FS.mkdir(cur);
    } catch {
      // exists already
    }
  }
}

function copyTree(hostDir, mpDir) {
  mkdirs(mpDir);
  for (const name of readdirSync(hostDir)) {
    const src = join(hostDir, name);
    if (statSync(src).isDirectory()) {
      if (name !== "__pycache__" && name !== "node_modules") copyTree(src, `${mpDir}/${name}`);
    } else if (/\.(py|mpy|json)$/.test(name)) {
      mp.FS.writeFile(`${mpDir}/${name}`, readFileSync(src));
    }
  }
}

const paths = [];
for (const m of mounts) {
  const i = m.lastIndexOf(":");
  if (i <= 0) usage(`--mount ${m}: expected HOSTDIR:MPDIR`);
  copyTree(m.slice(0, i), m.slice(i + 1));
  paths.push(m.slice(i + 1));
}
if (input) mp.FS.writeFile("/input.json", readFileSync(input));

const code = readFileSync(script, "utf8");
const prelude = [
  "import sys",
  ...paths.map((p) => `sys.path.insert(0, ${JSON.stringify(p)})`),
  `sys.argv[:] = ${JSON.stringify([script, ...extra])}`,
].join("\n");

let failed = false;
try {
  mp.runPython(prelude);
  mp.runPython(code);
} catch (err) {
  failed = true;
  process.stderr.write(`run.mjs: the script raised:\n${err && err.message ? err.message : err}\n`);
}
if (!failed && !sawSentinel) {
  failed = true;
  process.stderr.write(`run.mjs: the script ended without printing ${SENTINEL}\n`);
}
process.exitCode = failed ? 1 : 0;
