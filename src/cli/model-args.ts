// Loading a model plus optional adapters from CLI flags: --adapter DIR[,DIR2...] and
// --adapter-weights w1,w2 (a weighted combination; default "cat", the exact weighted sum of the
// adapters' updates).
import { loadModel } from '../models/load.js';
import { loadPeftAdapter, addWeightedAdapter, type PeftModel, type Combination } from '../adapters/index.js';
import type { PretrainedModel, Task } from '../models/types.js';
import type { DType } from '../tensor/index.js';
import { UsageError } from './common.js';

export const ADAPTER_FLAGS = `  --adapter DIR[,DIR...]      apply PEFT adapter(s); several are combined
  --adapter-weights W[,W...]  weights of the combination (default: 1 each)
  --combination C             cat (default, exact), linear, svd, ties, dare_linear, dare_ties, magnitude_prune, *_svd
  --density D                 for ties / dare / magnitude_prune`;

export interface ModelWithAdapters {
  model: PretrainedModel;
  peft: PeftModel | null;
}

export function loadWithAdapters(dir: string, o: { adapter?: string; weights?: string; combination?: string; density?: string; dtype: DType; task?: Task }): ModelWithAdapters {
  const model = loadModel(dir, { dtype: o.dtype, task: o.task });
  if (!o.adapter) {
    if (o.weights) throw new UsageError('--adapter-weights needs --adapter');
    return { model, peft: null };
  }
  try {
    const dirs = o.adapter.split(',').map((s) => s.trim()).filter(Boolean);
    if (dirs.length === 1 && !o.weights) return { model, peft: loadPeftAdapter(model, dirs[0]!) };
    const weights = o.weights ? o.weights.split(',').map(Number) : dirs.map(() => 1);
    if (weights.length !== dirs.length || weights.some((w) => !Number.isFinite(w))) {
      throw new UsageError(`--adapter-weights needs ${dirs.length} numbers, got "${o.weights}"`);
    }
    let peft: PeftModel | null = null;
    dirs.forEach((d, i) => { peft = loadPeftAdapter(peft ?? model, d, { adapterName: `a${i}` }); });
    const p = peft as unknown as PeftModel;
    const density = o.density === undefined ? undefined : Number(o.density);
    addWeightedAdapter(p, dirs.map((_, i) => `a${i}`), weights, 'combined', { combination: (o.combination ?? 'cat') as Combination, density });
    p.setAdapter('combined');
    return { model, peft: p };
  } catch (e) {
    model.dispose();
    throw e;
  }
}
