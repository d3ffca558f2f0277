// saveCache / restoreCache with GitHub's own client (@actions/cache) against `workbench gha-server`.
// Usage: node cache-roundtrip.mjs KEY   (cwd: a scratch dir; env: ACTIONS_* and RUNNER_TEMP)
// Prints one JSON line: the cache id, the keys restored (exact, then by prefix) and the restored text.
import * as cache from '@actions/cache';
import fs from 'node:fs';

const key = process.argv[2];
fs.mkdirSync('data', { recursive: true });
fs.writeFileSync('data/hello.txt', `hello from ${key}\n`);
fs.writeFileSync('data/big.bin', Buffer.alloc(3 * 1024 * 1024, 7));
const id = await cache.saveCache(['data'], key);
fs.rmSync('data', { recursive: true });
const exact = await cache.restoreCache(['data'], key);
const text = fs.readFileSync('data/hello.txt', 'utf8');
const big = fs.statSync('data/big.bin').size;
fs.rmSync('data', { recursive: true });
const byPrefix = await cache.restoreCache(['data'], 'no-such-key', [key.slice(0, -3)]);
const miss = await cache.restoreCache(['data'], 'never-saved-' + key);
console.log(JSON.stringify({ id, exact, byPrefix, miss: miss ?? null, text, big }));
