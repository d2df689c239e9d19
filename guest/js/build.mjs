#!/usr/bin/env node
// Builds a JavaScript plugin into a WASI component with componentize-js:
//   node guest/js/build.mjs SOURCE.js OUT.wasm
// SOURCE imports the SDK as 'pulsewatch' (and may import modules beside it); the SDK is taken
// from beside this script. Run `npm ci` in guest/js first (componentize-js 0.23.0, pinned). The
// WIT it builds against: wit/world.wit, the repository's feed, and WASI 0.2 from the
// wasmtime-wasi crate the host builds with (in cargo's registry after a host build).
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
let componentize;
try {
  ({ componentize } = await import('@bytecodealliance/componentize-js'));
} catch {
  console.error(`build.mjs: componentize-js is not installed: run \`npm ci\` in ${here}`);
  process.exit(2);
}
const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: build.mjs SOURCE.js OUT.wasm');
  process.exit(2);
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
  for (const file of readdirSync(src).filter((f) => f.endsWith('.js'))) {
    const text = readFileSync(join(src, file), 'utf8');
    writeFileSync(join(src, file), text.replace(/from\s+(['"])pulsewatch\1/g, "from './pulsewatch.js'"));
  }
  const { component } = await componentize({
    sourcePath: join(src, basename(source)),
    witPath: join(work, 'wit'),
    worldName: 'plugin-js',
    disableFeatures: ['http', 'fetch-event'],
  });
  writeFileSync(out, component);
} finally {
  rmSync(work, { recursive: true, force: true });
}
