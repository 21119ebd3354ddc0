// Copies the MessagePack library the page uses from node_modules (pinned in package.json and
// package-lock.json) into static/vendor/, which the node embeds. `--check` only compares, and
// fails when the committed copy differs from the pinned package (run by scripts/test.sh).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(web, 'node_modules/@msgpack/msgpack/dist.umd/msgpack.min.js');
const target = join(web, 'static/vendor/msgpack.min.js');

const wanted = readFileSync(source);
if (process.argv.includes('--check')) {
  const have = readFileSync(target);
  if (!have.equals(wanted)) {
    console.error(`${target} differs from ${source}: run \`npm run vendor\` in web/ and commit it`);
    process.exit(1);
  }
  console.log('static/vendor/msgpack.min.js matches the pinned @msgpack/msgpack');
} else {
  writeFileSync(target, wanted);
  console.log(`copied ${source} -> ${target}`);
}
