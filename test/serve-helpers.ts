// Shared fixtures for the serving tests: a temp adapter root with LoRA adapters on the embedded
// default model (float32), and greedy references computed with generate() on a fresh model.
import { mkdtempSync, mkdirSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, generate, tensor, randn, noGrad } from '../src/index.js';
import { defaultModelDir } from '../src/models/default-model.js';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';

export const MODEL = defaultModelDir();
export const TARGETS = ['q_proj', 'v_proj', 'down_proj'];

/** Saves a LoRA adapter for the model at `modelDir` with B perturbed by randn (so adapters differ). */
export function makeLora(modelDir: string, out: string, seed: number, r = 4): void {
  const m = loadModel(modelDir, { dtype: 'float32' });
  try {
    const p = PeftModel.create(m, { r, loraAlpha: 2 * r, targetModules: TARGETS }, { seed });
    noGrad(() => p.parts().forEach(([, part]) => part.adapterParameters('default').forEach((t, j) => t.add_(randn(t.shape, { seed: 1000 * seed + j }).mul(0.3)))));
    savePeftAdapters(p, out);
  } finally {
    m.dispose();
  }
}

/** A temp folder with adapters a0..a{count-1}. */
export function makeAdapterRoot(count: number): string {
  const root = mkdtempSync(join(tmpdir(), 'adapterkit-serve-'));
  mkdirSync(join(root, 'adapters'));
  for (let i = 0; i < count; i++) makeLora(MODEL, join(root, 'adapters', `a${i}`), i + 1);
  return root;
}

export function copyAdapter(from: string, to: string): void {
  cpSync(from, to, { recursive: true });
}

export const tok = HFTokenizer.fromDir(MODEL);
export const EOS = [...new Set([2, ...(tok.eosTokenId !== null ? [tok.eosTokenId] : [])])];

/** The greedy completion text of `prompt` under adapter folder `dir` (null: the base), run alone. */
export async function greedyAlone(prompt: string, dir: string | null, maxTokens: number): Promise<{ text: string; tokens: number[] }> {
  const m = loadModel(MODEL, { dtype: 'float32' });
  try {
    m.eval();
    if (dir) loadPeftAdapter(m, dir, { warn: () => {} });
    const ids = tensor([await tok.encode(prompt)], { dtype: 'int64' });
    const out = (await generate(m, ids, null, { maxNewTokens: maxTokens, stopIds: EOS }))[0]!;
    ids.dispose();
    const body = EOS.includes(out[out.length - 1]!) ? out.slice(0, -1) : out;
    return { text: await tok.decode(body), tokens: out };
  } finally {
    m.dispose();
  }
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await r.text();
  let json: any = null;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: r.status, json, headers: r.headers };
}

export async function metrics(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}
