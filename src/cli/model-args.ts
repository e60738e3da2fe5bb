// Loading a model plus optional adapters from CLI flags: --adapter DIR[,DIR2...] and
// --adapter-weights w1,w2 (a weighted combination; default "cat", the exact weighted sum of the
// adapters' updates).
import { loadModel } from '../models/load.js';
import { loadPeftAdapter, addWeightedAdapter, parseSetup, type PeftModel, type Combination } from '../adapters/index.js';
import { basename } from 'node:path';
import type { PretrainedModel, Task } from '../models/types.js';
import type { DType } from '../tensor/index.js';
import { UsageError } from './common.js';
import { readRegularFile } from '../io/files.js';
import { readConfig } from '../models/config.js';
import { checkRankFits } from '../models/size.js';
import { assertFiniteParameters } from '../models/finite.js';

export const ADAPTER_FLAGS = `  --adapter DIR[,DIR...]      apply PEFT adapter(s); several are combined
  --adapter-weights W[,W...]  weights of the combination (default: 1 each)
  --combination C             cat (default, exact), linear, svd, ties, dare_linear, dare_ties, magnitude_prune, *_svd
  --density D                 for ties / dare / magnitude_prune
  --setup TEXT                compose the adapters instead of combining them, by folder name:
                              "Stack(lang, task)", "Average(a, b, weights=[0.7, 0.3])", "Fuse(a, b)", …
  --allow-nonfinite           load weights holding NaN or infinity (refused by default)`;

export interface ModelWithAdapters {
  model: PretrainedModel;
  peft: PeftModel | null;
}

export function loadWithAdapters(dir: string, o: { adapter?: string; weights?: string; combination?: string; density?: string; setup?: string; dtype: DType | 'auto'; task?: Task }, safety: { allowNonFinite?: boolean } = {}): ModelWithAdapters {
  if (o.setup !== undefined && (o.weights !== undefined || o.combination !== undefined)) throw new UsageError('--setup composes adapters; it does not take --adapter-weights or --combination');
  if (o.setup !== undefined && o.adapter === undefined) throw new UsageError('--setup needs --adapter DIR[,DIR...] (the setup names the folders)');
  // Every flag is checked before anything is loaded.
  if (o.adapter === undefined && o.weights !== undefined) throw new UsageError('--adapter-weights needs --adapter');
  const dirs = o.adapter === undefined ? [] : o.adapter.split(',').map((s) => s.trim());
  if (o.adapter !== undefined && (dirs.length === 0 || dirs.some((d) => d === ''))) {
    throw new UsageError(`--adapter must name adapter folders, comma-separated, got "${o.adapter}"`);
  }
  const weights = o.weights === undefined ? dirs.map(() => 1) : o.weights.split(',').map((w) => (DECIMAL.test(w.trim()) ? Number(w) : NaN));
  if (weights.length !== dirs.length || weights.some((w) => !Number.isFinite(w))) {
    throw new UsageError(`--adapter-weights needs ${dirs.length} comma-separated decimal numbers (one per adapter), got "${o.weights}"`);
  }
  const density = o.density === undefined ? undefined : DECIMAL.test(o.density) ? Number(o.density) : NaN;
  if (density !== undefined && !(density > 0 && density <= 1)) throw new UsageError(`--density must be a decimal number > 0 and <= 1, got "${o.density}"`);
  for (const d of dirs) checkAdapterRank(dir, d);
  const model = loadModel(dir, { dtype: o.dtype, task: o.task });
  try {
    let result: ModelWithAdapters;
    if (!dirs.length) result = { model, peft: null };
    else if (o.setup !== undefined) {
      // Each adapter under its folder's name (a-z, 0-9, _ and - kept), then the composition.
      let peft: PeftModel | null = null;
      const names = dirs.map((d) => basename(d.replace(/[\\/]+$/, '')).replace(/[^A-Za-z0-9_-]/g, '_'));
      if (new Set(names).size !== names.length) throw new UsageError(`--adapter folders must have distinct names for --setup, got ${names.join(', ')}`);
      dirs.forEach((d, i) => { peft = loadPeftAdapter(peft ?? model, d, { adapterName: names[i] }); });
      const p = peft as unknown as PeftModel;
      try {
        p.setActive(parseSetup(o.setup));
      } catch (e) {
        throw new UsageError(`--setup: ${(e as Error).message} (adapters here: ${names.join(', ')})`);
      }
      result = { model, peft: p };
    } else if (dirs.length === 1 && o.weights === undefined) result = { model, peft: loadPeftAdapter(model, dirs[0]!) };
    else {
      let peft: PeftModel | null = null;
      dirs.forEach((d, i) => { peft = loadPeftAdapter(peft ?? model, d, { adapterName: `a${i}` }); });
      const p = peft as unknown as PeftModel;
      addWeightedAdapter(p, dirs.map((_, i) => `a${i}`), weights, 'combined', { combination: (o.combination ?? 'cat') as Combination, density });
      p.setAdapter('combined');
      result = { model, peft: p };
    }
    // A NaN weight makes every output NaN: scores print null, generation an empty line.
    if (!safety.allowNonFinite) assertFiniteParameters(model.namedParameters(), dirs.length ? `${dir} with adapter ${o.adapter}` : dir, '--allow-nonfinite');
    return result;
  } catch (e) {
    model.dispose();
    throw e;
  }
}

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Refuses an adapter whose rank could not fit in memory, before allocating it. */
function checkAdapterRank(modelDir: string, adapterDir: string): void {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readRegularFile(`${adapterDir}/adapter_config.json`, 'adapter config', 'utf8')) as Record<string, unknown>;
  } catch {
    return;  // missing or malformed: the adapter loader reports it precisely
  }
  const ranks = [cfg.r, ...Object.values((cfg.rank_pattern ?? {}) as Record<string, unknown>)].filter((r): r is number => typeof r === 'number' && Number.isFinite(r));
  if (!ranks.length) return;
  checkRankFits(readConfig(`${modelDir}/config.json`), Math.max(...ranks), `${adapterDir}/adapter_config.json`, { what: typeof cfg.peft_type === 'string' ? cfg.peft_type : 'adapter' });
}
