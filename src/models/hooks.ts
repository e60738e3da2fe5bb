// Where adapters that are not a wrapped layer hook into a model's forward (adapter contract v2):
//  - virtual tokens before the input (prompt tuning, P-tuning): embeddings prepended to the word
//    embeddings of a fresh sequence; once a KV cache holds them they are not added again;
//  - learned key/value prefixes in every attention layer (prefix tuning), before every key, never
//    stored in the KV cache, with GQA's key/value head count;
//  - the embedding output (invertible adapters);
//  - the residual connection after each sublayer (bottleneck adapters): a block calls
//    `residualSite(this, site, …)` where it would add the residual (and, post-LN, normalise).
// Every model file calls these; the adapter layer installs them (PeftModel owns one ModelHooks).
// Shapes: B batch, T new tokens, P virtual tokens, C hidden, Hkv key/value heads, D head dim.
import { cat, ones, type Tensor, type Device } from '../tensor/index.js';
import type { Module } from '../nn/module.js';

export interface PromptHook {
  /** Virtual tokens P. */
  length: number;
  /** (B, P, C) in the embeddings' dtype. */
  embeds(batch: number): Tensor;
}

export interface PrefixHook {
  /** Prefix positions P. */
  length: number;
  /** Keys and values of one layer, (B, Hkv, P, D) each, in the activations' dtype. */
  kv(layer: number, batch: number): { k: Tensor; v: Tensor };
}

/** Installed by the adapter layer; each returns null when its adapter is not active for this forward. */
export interface ModelHooks {
  prompt?: () => PromptHook | null;
  prefix?: () => PrefixHook | null;
  /** (B, T, C) -> (B, T, C) after the embeddings. */
  embeddingOutput?: () => ((x: Tensor) => Tensor) | null;
}

/** A model that carries hooks (every PretrainedModel does). */
export interface Hookable {
  readonly hooks: ModelHooks;
}

/** What the virtual tokens of this forward change: lengths, the mask over every key, and output trimming. */
export interface VirtualPlan {
  /** (B, P, C) prompt embeddings to prepend now (a fresh sequence), or null. */
  prompt: Tensor | null;
  prefix: PrefixHook | null;
  /** Keys before the first query: prefix + cached positions. */
  past: number;
  /** Queries of this forward: T plus the prompt when it is prepended now. */
  queries: number;
  /** The attention mask over prefix + prompt + the caller's positions, or null when none was given. */
  mask: Tensor | null;
  /** Hidden states (B, queries, C) -> (B, T, C): the prompt positions removed. */
  strip(h: Tensor): Tensor;
}

/**
 * Plans one forward. A prompt is prepended when the cache is empty (PEFT's first generation step);
 * afterwards the cache holds it and only the mask accounts for it. Positions come from the extended
 * mask as usual, so real tokens sit after the virtual ones (as HF with a past of length P).
 */
export function planVirtual(hooks: ModelHooks | undefined, b: number, t: number, mask: Tensor | null, cacheLength: number, device: Device): VirtualPlan {
  const prompt = hooks?.prompt?.() ?? null;
  const prefix = hooks?.prefix?.() ?? null;
  const nPrompt = prompt?.length ?? 0;
  const nPrefix = prefix?.length ?? 0;
  const fresh = cacheLength === 0;
  const promptNow = prompt && fresh ? prompt.embeds(b) : null;
  const added = nPrefix + nPrompt;
  const ext = mask && added > 0 ? cat([ones([b, added], { dtype: mask.dtype, device }), mask], 1) : mask;
  const queries = t + (promptNow ? nPrompt : 0);
  return {
    prompt: promptNow,
    prefix,
    past: nPrefix + cacheLength,
    queries,
    mask: ext,
    strip: (h) => (promptNow ? h.narrow(1, nPrompt, t) : h),
  };
}

/** Prepends the prefix keys/values of a layer to (B, Hkv, S, D) keys/values. */
export function withPrefix(prefix: PrefixHook | null, layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
  if (!prefix) return { k, v };
  const p = prefix.kv(layer, k.shape[0]!);
  const pk = p.k.dtype === k.dtype ? p.k : p.k.to(k.dtype);
  const pv = p.v.dtype === v.dtype ? p.v : p.v.to(v.dtype);
  return { k: cat([pk, k], 2), v: cat([pv, v], 2) };
}

/** Where a block adds a residual: after its attention sublayer, after its feed-forward sublayer. */
export type Site = 'attention' | 'output';

/** The child module name an adapter site uses in a block (AdapterHub's names). */
export const SITE_MODULE: Record<Site, string> = { attention: 'attention_adapters', output: 'output_adapters' };

/** A module installed at a site: replaces `ln(out + residual)` (post-LN) or `out + residual` (pre-LN, ln null). */
export interface SiteModule extends Module {
  readonly isSiteModule: true;
  residual(out: Tensor, residual: Tensor, ln: { forward(x: Tensor): Tensor } | null): Tensor;
}

/**
 * The residual connection of a sublayer: `out` is the sublayer's output (after its dropout), `residual`
 * its input stream, `ln` the post-LN norm (BERT) or null (pre-LN decoders). `owner` is the module
 * that holds the site (the block, or BERT's *Output module).
 */
export function residualSite(owner: Module, site: Site, out: Tensor, residual: Tensor, ln: { forward(x: Tensor): Tensor } | null): Tensor {
  const m = owner.child(SITE_MODULE[site]) as SiteModule | null;
  if (m) return m.residual(out, residual, ln);
  const sum = out.add(residual);
  return ln ? ln.forward(sum) : sum;
}
