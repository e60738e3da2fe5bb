// The adapterkit command line: help, version (in step with package.json), info, unknown commands.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VERSION } from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = `${root}/bin/adapterkit.js`;
const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

test('--version prints the package version', () => {
  const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8')) as { version: string };
  assert.equal(VERSION, pkg.version);
  const r = cli('--version');
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), pkg.version);
});

test('--help lists the commands', () => {
  const r = cli('--help');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /usage: adapterkit <command>/);
  assert.match(r.stdout, /info/);
});

test('info reports the engine: CPU and features, BLAS, threads, and the dtype auto picks with its reason', () => {
  const r = cli('info');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /libtorch +\d+\.\d+/);
  assert.match(r.stdout, /cpu +\S.*\(x64|arm64/);
  assert.match(r.stdout, /features /);
  assert.match(r.stdout, /blas +\S/);
  assert.match(r.stdout, /threads +\d+/);
  assert.match(r.stdout, /dtype auto (float32|bfloat16): \S/);
});

test('an unknown command is an error with the help', () => {
  const r = cli('frobnicate');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command "frobnicate"/);
});
