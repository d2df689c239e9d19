#!/usr/bin/env node
// Builds a JavaScript plugin into a WASI component with componentize-js:
//   node guest/js/build.mjs [--aot] SOURCE.js OUT.wasm
// --aot compiles the plugin's JavaScript ahead of time with weval (0.5.0, from crates.io:
// `cargo install weval --version 0.5.0 --locked`): about a third less CPU per event, a larger
// component.
// SOURCE imports the SDK as 'pulsewatch' (and may import modules beside it); the SDK is taken
// from beside this script. A SOURCE that itself imports 'pulsewatch/transform' is built as a
// transform: its world imports pulse:watch/output as well, which the host grants only to a
// plugin given outputs. Run `npm ci` in guest/js first (componentize-js 0.23.0, pinned). The
// WIT it builds against: wit/world.wit, the repository's feed, and WASI 0.2 from the
// wasmtime-wasi crate the host builds with (in cargo's registry after a host build).
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
let componentize;
try {
  ({ componentize } = await import('@bytecodealliance/componentize-js'));
} catch {
  console.error(`build.mjs: componentize-js is not installed: run \`npm ci\` in ${here}`);
  process.exit(2);
}
const usage = 'usage: build.mjs [--aot] SOURCE.js OUT.wasm';
const args = process.argv.slice(2);
const aot = args[0] === '--aot';
const [source, out, extra] = aot ? args.slice(1) : args;
if (!source || !out || extra !== undefined || source.startsWith('--')) {
  console.error(usage);
  process.exit(2);
}

/** weval, for `--aot`: $WEVAL, or `weval` on the PATH. */
function weval() {
  const candidates = process.env.WEVAL
    ? [process.env.WEVAL]
    : (process.env.PATH || '').split(delimiter).filter(Boolean).map((dir) => join(dir, 'weval'));
  const found = candidates.find((path) => existsSync(path));
  if (!found) {
    console.error(
      'build.mjs --aot: weval is not installed (not on the PATH, and $WEVAL is not set): ' +
        'cargo install weval --version 0.5.0 --locked (.ci/run does)',
    );
    process.exit(2);
  }
  return found;
}

function wasiWit() {
  const registry = join(process.env.CARGO_HOME || join(homedir(), '.cargo'), 'registry', 'src');
  const indexes = existsSync(registry) ? readdirSync(registry, { withFileTypes: true }) : [];
  for (const index of indexes.filter((d) => d.isDirectory())) {
    const crates = readdirSync(join(registry, index.name)).filter((c) => c.startsWith('wasmtime-wasi-48.'));
    // The newest patch release: by number, not by text (48.0.10 after 48.0.9).
    const patch = (c) => Number(c.split('.').pop());
    if (crates.length > 0) {
      const newest = crates.sort((a, b) => patch(a) - patch(b)).pop();
      return join(registry, index.name, newest, 'src/p2/wit/deps');
    }
  }
  console.error("build.mjs: wasmtime-wasi 48's WIT not found in cargo's registry; build the host first (cargo build)");
  process.exit(2);
}

const work = mkdtempSync(join(tmpdir(), 'pulsewatch-js-'));
try {
  // The WIT: the world, the feed, WASI.
  mkdirSync(join(work, 'wit/deps/pulse'), { recursive: true });
  cpSync(join(here, 'wit/world.wit'), join(work, 'wit/world.wit'));
  cpSync(join(here, '../../wit/feed.wit'), join(work, 'wit/deps/pulse/feed.wit'));
  const wasi = wasiWit();
  for (const file of readdirSync(wasi).filter((f) => f.endsWith('.wit'))) {
    mkdirSync(join(work, 'wit/deps', basename(file, '.wit')), { recursive: true });
    cpSync(join(wasi, file), join(work, 'wit/deps', basename(file, '.wit'), file));
  }
  // The sources, with the SDK beside them: componentize-js resolves relative imports only.
  const src = join(work, 'src');
  cpSync(dirname(resolve(source)), src, { recursive: true, filter: (f) => !f.includes('node_modules') });
  cpSync(join(here, 'pulsewatch.js'), join(src, 'pulsewatch.js'));
  cpSync(join(here, 'transform.js'), join(src, 'pulsewatch-transform.js'));
  for (const file of readdirSync(src).filter((f) => f.endsWith('.js'))) {
    const text = readFileSync(join(src, file), 'utf8');
    writeFileSync(
      join(src, file),
      text
        .replace(/from\s+(['"])pulsewatch\1/g, "from './pulsewatch.js'")
        .replace(/from\s+(['"])pulsewatch\/transform\1/g, "from './pulsewatch-transform.js'"),
    );
  }
  const transform = /from\s+(['"])pulsewatch\/transform\1/.test(readFileSync(source, 'utf8'));
  // A failed build leaves no component behind, not even an earlier one.
  rmSync(out, { force: true });
  let built;
  try {
    built = await componentize({
      sourcePath: join(src, basename(source)),
      witPath: join(work, 'wit'),
      worldName: transform ? 'transform-js' : 'plugin-js',
      disableFeatures: ['http', 'fetch-event'],
      // Ahead-of-time: weval specializes the engine's interpreter to the plugin's code (a
      // component cannot JIT). Given weval's path, componentize-js downloads nothing.
      ...(aot ? { enableAot: true, wevalBin: weval() } : {}),
    });
  } catch (e) {
    if (transform || !String(e).includes('pulse:watch/output')) throw e;
    console.error(String(e));
    console.error(
      `build.mjs: ${source} does not import 'pulsewatch/transform' itself (a module it imports ` +
        'does), so it was built as a plain plugin, without pulse:watch/output: import it in ' +
        `${basename(source)} too`,
    );
    process.exitCode = 1;
  }
  if (built) writeFileSync(out, built.component);
} finally {
  rmSync(work, { recursive: true, force: true });
}
