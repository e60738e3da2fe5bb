// PEFT conformance, a table of cases: adapter folders written the way PEFT writes them today (every
// adapter_config.json field, peft_version, bias modes, lora_bias, layers_pattern lists, init strings,
// modules_to_save ["classifier", "score"]) load here and give the outputs of the independent loader
// in scripts/make_peft_conformance.py (fixtures in test/fixtures/peft-conformance/). Then the round
// trip: what adapterkit saves is re-read by that script's loader, which must give the same outputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { noGrad, tensor, loadModel, score, loadPeftAdapter, savePeftAdapters, type PretrainedModel, type PeftModel } from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const CONF = join(root, 'test/fixtures/peft-conformance');
const SCRIPT = join(root, 'scripts/make_peft_conformance.py');

interface Expected {
  base_case: string;
  input_ids: number[][];
  attention_mask: number[][] | null;
  token_type_ids: number[][] | null;
  outputs: number[];
  base_outputs: number[];
  output_kind: 'logprobs' | 'logits';
  adapted_modules: string[];
}

function outputsOf(m: PretrainedModel, e: Expected): number[] {
  if (e.output_kind === 'logprobs') return score(m, e.input_ids[0]!).logprobs;
  return noGrad(() => {
    const out = m.forward({
      inputIds: tensor(e.input_ids, { dtype: 'int64' }),
      attentionMask: e.attention_mask ? tensor(e.attention_mask, { dtype: 'int64' }) : null,
      tokenTypeIds: e.token_type_ids ? tensor(e.token_type_ids, { dtype: 'int64' }) : null,
    }).logits.select(0, 0).reshape(-1);
    const v = Array.from(out.data(), Number);
    out.dispose();
    return v;
  });
}

function close(got: number[], want: number[], what: string, tol = 1e-4): void {
  assert.equal(got.length, want.length, `${what}: ${got.length} outputs, want ${want.length}`);
  const d = Math.max(...got.map((g, i) => Math.abs(g - want[i]!)));
  assert.ok(d < tol, `${what}: max |diff| ${d}`);
}

/** A python3 with torch for the independent loader, or null (the round trip is then skipped). */
function python(): string | null {
  for (const p of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(p, ['-c', 'import torch'], { encoding: 'utf8' });
    if (r.status === 0) return p;
  }
  return null;
}

const json = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const cases = readdirSync(CONF).filter((d) => !d.includes('.')).sort();

test('the table has the cases the issue asks for', () => {
  assert.deepEqual(cases, [
    'bert-tokcls-all-linear-eva', 'gpt2-bias-all-layers', 'gpt2-trainable-tokens-tied', 'llama-layer-int-olora', 'llama-layer-replication', 'llama-trainable-tokens-dict',
    'qwen2-lora-bias-exclude', 'roberta-seqcls-classifier-score',
  ]);
});

test('the README classifies every field PEFT writes into adapter_config.json', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf("### PEFT's adapter_config.json, field by field"));
  const fields = new Set(cases.flatMap((c) => Object.keys(JSON.parse(readFileSync(join(CONF, c, 'adapter_config.json'), 'utf8')) as object)));
  assert.ok(fields.size >= 40, `${fields.size} fields`);
  for (const f of fields) assert.ok(table.includes('`' + f + '`'), `README does not list ${f}`);
});

for (const c of cases) {
  test(`${c}: a PEFT-written folder loads without warnings and gives the reference outputs (unmerged and merged)`, () => {
    const e = JSON.parse(readFileSync(join(CONF, c, 'expected.json'), 'utf8')) as Expected;
    const base = join(root, 'test/fixtures', e.base_case);
    const m = loadModel(base, { dtype: 'float32' });
    close(outputsOf(m, e), e.base_outputs, `${c} base`);
    const warnings: string[] = [];
    const peft = loadPeftAdapter(m, join(CONF, c), { warn: (s) => warnings.push(s) });
    try {
      assert.deepEqual(warnings, []);
      assert.deepEqual(peft.tunerLayers().map(([p]) => p).sort(), [...e.adapted_modules].sort());
      close(outputsOf(m, e), e.outputs, `${c} unmerged`);
      if (json(join(CONF, c, 'adapter_config.json')).layer_replication) {
        assert.throws(() => peft.merge(), /cannot merge adapters into replicated layers/);
      } else {
        peft.merge();
        close(outputsOf(m, e), e.outputs, `${c} merged`);
        peft.unmerge();
      }
      assert.equal(m.trainableParameters().length, 0, 'loaded for inference: nothing trains (modules_to_save copies and biases included)');
    } finally {
      peft.dispose();
    }
  });
}

test('round trip: adapterkit saves each case, the independent loader re-reads it and gets the same outputs', (t) => {
  const py = python();
  if (!py) {
    t.skip('no python3 with torch: the independent loader cannot run here');
    return;
  }
  for (const c of cases) {
    const e = JSON.parse(readFileSync(join(CONF, c, 'expected.json'), 'utf8')) as Expected;
    const base = join(root, 'test/fixtures', e.base_case);
    const m = loadModel(base, { dtype: 'float32' });
    let peft: PeftModel | null = null;
    try {
      peft = loadPeftAdapter(m, join(CONF, c));
      const dir = mkdtempSync(join(tmpdir(), 'ak-conf-'));
      savePeftAdapters(peft, dir);
      const r = spawnSync(py, [SCRIPT, '--check', dir, base], { encoding: 'utf8' }) as { status: number | null; stdout: string; stderr: string };
      assert.equal(r.status, 0, `${c}: ${r.stderr}`);
      const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { outputs: number[]; adapted: string[] };
      assert.deepEqual(got.adapted, [...e.adapted_modules].sort(), `${c}: the saved config targets the same modules`);
      close(got.outputs, e.outputs, `${c} saved by adapterkit, read by the reference loader`);
      // And back into adapterkit.
      const m2 = loadModel(base, { dtype: 'float32' });
      const p2 = loadPeftAdapter(m2, dir);
      close(outputsOf(m2, e), e.outputs, `${c} saved and reloaded`);
      p2.dispose();
    } finally {
      peft?.dispose();
    }
  }
});
