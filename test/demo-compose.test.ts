// `adapterkit demo --compose` end to end with tiny budgets: the held-out table and the last line's
// format (not the accuracy values), and that it refuses a non-empty --output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = join(root, 'bin', 'adapterkit.js');
const run = (args: string[]) => spawnSync(process.execPath, [bin, 'demo', '--compose', ...args], { encoding: 'utf8', timeout: 120_000 });

test('demo --compose: steps, the held-out table and the compose: line', { timeout: 150_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'ak-compose-test-'));
  try {
    const r = run(['--steps', '2', '--domain-steps', '2', '--output', join(out, 'run')]);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const s = r.stdout;
    assert.match(s, /\[1\] domain adapter "domain"/);
    assert.match(s, /held-out Moby-Dick perplexity: base \d+\.\d+ -> with the domain adapter \d+\.\d+/);
    assert.match(s, /\| setup +\| what trains +\| trainable params \| held-out accuracy \|/);
    for (const setup of ['sent', 'Stack(domain, sent_on_domain)', 'Average(sent_imdb, sent_yelp, sent_amazon)', 'Fuse(sent_imdb, sent_yelp, sent_amazon)', 'mixda', 'lora_sent merged', 'majority baseline']) {
      assert.ok(s.split('\n').some((l) => l.startsWith(`  | ${setup} `)), `table row ${setup}`);
    }
    assert.match(s, /merged vs unmerged: the same prediction on \d+ of \d+ held-out sentences/);
    const lines = s.trimEnd().split('\n');
    const last = lines[lines.length - 1]!;
    assert.match(last, /^compose: (?:[a-z_]+=\d\.\d{3} )+majority=\d\.\d{3}$/);
    const keys = [...last.matchAll(/([a-z_]+)=/g)].map((m) => m[1]);
    assert.deepEqual(keys, ['sent', 'stack', 'sent_imdb', 'sent_yelp', 'sent_amazon', 'average', 'fuse', 'lora_imdb', 'lora_yelp', 'lora_amazon', 'mixda', 'lora_sent', 'merged', 'majority']);
    // The adapters and the fusion were saved into --output.
    const saved = readdirSync(join(out, 'run', 'adapters'));
    for (const a of ['domain', 'sent', 'sent_on_domain', 'mixda', 'lora_sent', 'fusion']) assert.ok(saved.includes(a), `saved ${a}: ${saved.join(', ')}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('demo --compose never writes into a non-empty --output', () => {
  const out = mkdtempSync(join(tmpdir(), 'ak-compose-test-'));
  try {
    writeFileSync(join(out, 'keep.txt'), 'mine');
    const r = run(['--steps', '1', '--output', out]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /is not empty/);
    assert.deepEqual(readdirSync(out), ['keep.txt']);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
