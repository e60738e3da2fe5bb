// Refusing model and adapter sizes that cannot fit before anything is allocated. A config.json with
// num_hidden_layers 1000000000 (or a huge hidden_size, vocab_size, LoRA r) otherwise runs for
// half a minute, takes gigabytes and dies in a JavaScript heap abort or libtorch's raw allocator
// message. The estimate is an upper bound over the families' common HF fields; it only needs to be
// the right order of magnitude, since the cases it exists for are off by factors of thousands.
import { freemem } from 'node:os';
import type { RawConfig } from './types.js';

/** Bytes per element; unknown (e.g. 'auto', resolved later) counts as float32, the widest we load. */
const BYTES: Record<string, number> = { float32: 4, float16: 2, bfloat16: 2, float64: 8 };

/** JavaScript objects, names and handles per layer, over its tensors' bytes. */
const PER_LAYER_OVERHEAD = 64 * 1024;

function count(raw: RawConfig, ...keys: string[]): { key: string; value: number } | null {
  for (const key of keys) {
    const v = raw[key];
    // Anything not a finite non-negative number is left to the family's own field checks.
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return { key, value: v };
  }
  return null;
}

interface Dims {
  hidden: number;
  layers: number;
  vocab: number;
  inner: number;
  positions: number;
  named: string[];
}

function dims(raw: RawConfig): Dims {
  const h = count(raw, 'hidden_size', 'n_embd', 'd_model');
  const l = count(raw, 'num_hidden_layers', 'n_layer');
  const v = count(raw, 'vocab_size');
  const hidden = h?.value ?? 0;
  const i = count(raw, 'intermediate_size', 'n_inner');
  const p = count(raw, 'max_position_embeddings', 'n_positions');
  const named = [h, l, v, i].filter((x): x is { key: string; value: number } => x !== null).map((x) => `${x.key} ${x.value}`);
  return { hidden, layers: l?.value ?? 0, vocab: v?.value ?? 0, inner: i?.value ?? 4 * hidden, positions: p?.value ?? 0, named };
}

/**
 * A model's parameter count from its config.json fields, within a few percent for the supported
 * families (it decides refusals, so it must not overstate a model that would fit).
 */
export function estimateParameters(raw: RawConfig): number {
  const d = dims(raw);
  const heads = count(raw, 'num_attention_heads', 'n_head')?.value || 1;
  const kvHeads = count(raw, 'num_key_value_heads')?.value || heads;
  const headDim = count(raw, 'head_dim')?.value || d.hidden / heads;
  const gated = !['gpt2', 'bert', 'roberta', 'xlm-roberta'].includes(String(raw.model_type));  // gate + up + down
  const attention = 2 * d.hidden * heads * headDim + 2 * d.hidden * kvHeads * headDim;  // q, o; k, v
  const mlp = (gated ? 3 : 2) * d.hidden * d.inner;
  const perLayer = attention + mlp + 6 * d.hidden;  // + norms and biases
  const tied = raw.tie_word_embeddings === true || (raw.tie_word_embeddings === undefined && !gated);
  const positions = gated ? 0 : d.positions * d.hidden;  // RoPE models have no position table
  return (tied ? 1 : 2) * d.vocab * d.hidden + positions + d.layers * perLayer;
}

function human(bytes: number): string {
  if (!Number.isFinite(bytes)) return 'an unbounded amount';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let u = 0;
  while (bytes >= 1024 && u < units.length - 1) { bytes /= 1024; u++; }
  return `${bytes.toPrecision(3)} ${units[u]}`;
}

/** What the size checks compare against: the memory available now (MemAvailable on Linux). */
export function availableMemory(): number {
  return freemem();
}

/**
 * Throws when the model `raw` describes would need more memory than is available, naming the
 * sizes. `source` prefixes the message (e.g. "config.json (llama)").
 */
export function checkModelFits(raw: RawConfig, dtype: string | undefined, source: string): void {
  const d = dims(raw);
  const params = estimateParameters(raw);
  const bytes = params * (BYTES[dtype ?? 'float32'] ?? 4) + d.layers * PER_LAYER_OVERHEAD;
  const avail = availableMemory();
  if (bytes > avail) {
    throw new Error(`${source}: these sizes (${d.named.join(', ')}) make a model of about ${params.toExponential(2)} parameters, ` +
      `${human(bytes)} in ${dtype ?? 'float32'}, more than the ${human(avail)} of memory available; fix the sizes (is a field mistyped?)`);
  }
}

/**
 * Throws when a low-rank adapter of rank `r` (LoRA, Hydra, …) on every linear layer of the model would
 * not fit (for training: weights, gradients and two AdamW moments, float32), before any adapter tensor
 * is allocated. `what` names the method in the message.
 */
export function checkRankFits(raw: RawConfig, r: number, source: string, o: { training?: boolean; what?: string } = {}): void {
  const d = dims(raw);
  // Up to 7 linears per block (q, k, v, o, gate, up, down), each adding r * (in + out) parameters.
  const params = r * d.layers * (4 * 2 * d.hidden + 3 * (d.hidden + d.inner));
  const bytes = params * 4 * (o.training ? 4 : 1);
  const avail = availableMemory();
  if (bytes > avail) {
    throw new Error(`${source}: ${o.what ?? 'adapter'} rank r = ${r} on this model (${d.named.join(', ')}) would need about ${human(bytes)}${o.training ? ' to train' : ''}, ` +
      `more than the ${human(avail)} of memory available; use a smaller r (8 to 64 is usual)`);
  }
}
