// Process groups over Gloo with two real processes on 127.0.0.1 (scripts/dist-worker.ts is one rank):
// collective values against hand-computed ones, data-parallel gradients against the single-process
// gradients of the combined batch, and a dead or absent peer becoming a clear error within the timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  loadModel, PeftModel, readSafetensors, syntheticTask, collate, toTensors, lossParts, itemCount, tidy, setNumThreads,
  initProcessGroup, shardRange, buckets, distributedAvailable, zeros,
} from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'ak-dist-'));
const skip = distributedAvailable() ? false : 'the addon was built without c10d';

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

interface Ran { code: number | null; stdout: string; stderr: string; ms: number; exitedAt: number }

/** Starts both ranks of a worker mode; `onReady` runs once every rank printed "ready". */
async function ranks(mode: string, extra: string[] = [], onReady?: (pids: number[]) => void): Promise<Ran[]> {
  const port = String(await freePort());
  const t0 = Date.now();
  let ready = 0;
  const kids = [0, 1].map((r) => spawn(process.execPath, [join(root, 'dist/scripts/dist-worker.js'), mode, String(r), '2', port, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] }));
  return Promise.all(kids.map((k) => new Promise<Ran>((resolve) => {
    let stdout = '';
    let stderr = '';
    k.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (d.toString().includes('ready') && ++ready === kids.length) onReady?.(kids.map((c) => c.pid!));
    });
    k.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    k.on('exit', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0, exitedAt: Date.now() }));
  })));
}

test('allReduce (sum, avg, max, min), broadcast and allGather give the hand-computed values on every rank', { skip }, async () => {
  const rs = await ranks('collectives');
  for (const r of rs) {
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      sum: [3, 30, -1], avg: [1.5, 15, -0.5], max: [2, 20, 0], min: [1, 10, -1], sumInt: [3, 2 * 2 ** 40 + 0], broadcast: [1, 101], allGather: [[0, 1], [2, 3]],
    });
  }
});

test('data-parallel gradients equal the single-process gradients of the combined batch', { skip }, async () => {
  const out = join(work, 'grads');
  const rs = await ranks('grads', [out]);
  rs.forEach((r) => assert.equal(r.code, 0, r.stderr));
  const [g0, g1] = [0, 1].map((r) => readSafetensors(`${out}-${r}.safetensors`));
  // The reference: rank 0's initialisation (which it broadcast), the whole batch in one process.
  setNumThreads(1);
  const m = loadModel(join(root, 'test/fixtures/hf-ref/llama'));
  const peft = PeftModel.create(m, { r: 4, loraAlpha: 8, loraDropout: 0, targetModules: ['q_proj', 'v_proj'], initLoraWeights: false }, { seed: 3 });
  const { train } = syntheticTask(96, 8, 0);
  tidy(() => {
    const batch = collate(train, { padId: 0 });
    const t = toTensors(batch);
    lossParts('causal-lm', peft.forward({ inputIds: t.inputIds, attentionMask: t.attentionMask }).logits, t.labels).div(itemCount('causal-lm', batch.labels)).backward();
  });
  const named = m.namedParameters().filter(([, t]) => t.requiresGrad);
  assert.equal(named.length, 8);
  for (const [n, p] of named) {
    tidy(() => {
      const g = p.grad!;
      assert.ok(g.abs().max().item() > 1e-6, `${n} has a non-zero gradient`);
      for (const saved of [g0!, g1!]) {
        assert.ok(saved.get(`weight.${n}`)!.sub(p).abs().max().item() === 0, `${n}: rank 0's weights were broadcast`);
        const d = saved.get(`grad.${n}`)!.sub(g).abs().max().item();
        assert.ok(d < 1e-6, `${n}: gradient differs by ${d}`);
      }
    });
  }
  peft.dispose();
});

test('killing one peer makes the other fail with a clear error, well within the timeout', { skip }, async () => {
  let killedAt = 0;
  const rs = await ranks('loop', [], (pids) => setTimeout(() => { killedAt = Date.now(); process.kill(pids[1]!, 'SIGKILL'); }, 200));
  const r0 = rs[0]!;
  assert.equal(r0.code, 1);
  assert.match(r0.stderr, /TorchError: allReduce\(.*\): allReduce failed on rank 0 of 2: .*(Connection|closed|reset|timed out).*a peer process died/);
  // The timeout is 30 s: a dead peer is noticed by its closed connection, not by waiting.
  assert.ok(killedAt > 0 && r0.exitedAt - killedAt < 5000, `rank 0 left ${r0.exitedAt - killedAt} ms after the kill (timeout 30000 ms)`);
});

test('a peer that never reaches the collective is a timeout error, not a hang', { skip }, async () => {
  const rs = await ranks('stall');
  const r0 = rs[0]!;
  assert.equal(r0.code, 1);
  assert.match(r0.stderr, /allReduce failed on rank 0 of 2: Operation timed out!.*within 5000 ms/);
  assert.ok(r0.ms < 15000, `rank 0 gave up after ${r0.ms} ms (timeout 5000 ms)`);
});

test('nccl is refused with the reason; bad options name the value', () => {
  assert.throws(() => initProcessGroup({ backend: 'nccl', rank: 0, worldSize: 1 }), /'nccl' is not available: .*without CUDA\/NCCL|built without c10d/);
  assert.throws(() => initProcessGroup({ rank: 2, worldSize: 2 }), /rank must be an integer in 0\.\.1, got 2/);
  assert.throws(() => initProcessGroup({ rank: 0, worldSize: 1, masterPort: 70000 }), /masterPort/);
});

test('shardRange splits a global batch into contiguous rank slices; buckets cap their bytes', () => {
  assert.deepEqual([0, 1].map((r) => shardRange(8, r, 2)), [[0, 4], [4, 8]]);
  assert.deepEqual([0, 1, 2].map((r) => shardRange(5, r, 3)), [[0, 1], [1, 3], [3, 5]]);
  const ps = [zeros([10]), zeros([10]), zeros([30]), zeros([5])];
  assert.deepEqual(buckets(ps, 80).map((b) => b.map((t) => t.numel)), [[10, 10], [30], [5]]);
  ps.forEach((t) => t.dispose());
});
