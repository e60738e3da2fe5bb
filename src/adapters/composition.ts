// Composition blocks with AdapterHub's semantics (adapters/composition.py): Stack, Fuse, Split,
// BatchSplit, Parallel, Average, their nesting rules and depth limit, and a text form for the CLI and
// YAML ("Stack(lang_sw, Fuse(nli, qa))"). PeftModel.setActive takes a setup; parts of composable
// methods read it from ctx.composition; top-level Parallel and BatchSplit run as mixed batches.

export type BlockKind = 'Stack' | 'Fuse' | 'Split' | 'BatchSplit' | 'Parallel' | 'Average';

export interface Block {
  readonly kind: BlockKind;
  readonly children: readonly Setup[];
  /** Split: sequence positions per child (their sum must equal the sequence length). */
  readonly splits?: readonly number[];
  /** BatchSplit: rows per child. */
  readonly batchSizes?: readonly number[];
  /** Average: one weight per child (normalised to sum 1 unless normalizeWeights is false). */
  readonly weights?: readonly number[];
  /** Fuse: the fusion layer's name (default: the children's last adapters joined by ","). */
  readonly name?: string;
}

/** An adapter name or a composition block. */
export type Setup = string | Block;

const block = (kind: BlockKind, children: Setup[], extra: Partial<Block> = {}): Block => {
  if (!children.length) throw new Error(`${kind} needs at least one adapter`);
  return Object.freeze({ kind, children: Object.freeze([...children]), ...extra });
};

export const Stack = (...children: Setup[]): Block => block('Stack', children);
export const Parallel = (...children: Setup[]): Block => block('Parallel', children);
export function Fuse(...args: (Setup | { name: string })[]): Block {
  const opts = args.find((a): a is { name: string } => typeof a === 'object' && 'name' in a && !('kind' in a));
  return block('Fuse', args.filter((a) => a !== opts) as Setup[], opts ? { name: opts.name } : {});
}
export function Split(...args: [...Setup[], { splits: number[] | number }]): Block {
  const o = args[args.length - 1] as { splits: number[] | number };
  const children = args.slice(0, -1) as Setup[];
  const splits = Array.isArray(o.splits) ? o.splits : children.map(() => o.splits as number);
  if (splits.length !== children.length || !splits.every((s) => Number.isInteger(s) && s > 0)) throw new Error(`Split: splits must be one positive integer per adapter, got ${JSON.stringify(o.splits)}`);
  return block('Split', children, { splits });
}
export function BatchSplit(...args: [...Setup[], { batchSizes: number[] | number }]): Block {
  const o = args[args.length - 1] as { batchSizes: number[] | number };
  const children = args.slice(0, -1) as Setup[];
  const sizes = Array.isArray(o.batchSizes) ? o.batchSizes : children.map(() => o.batchSizes as number);
  if (sizes.length !== children.length || !sizes.every((s) => Number.isInteger(s) && s > 0)) throw new Error(`BatchSplit: batchSizes must be one positive integer per adapter, got ${JSON.stringify(o.batchSizes)}`);
  return block('BatchSplit', children, { batchSizes: sizes });
}
export function Average(...args: [...Setup[], { weights?: number[]; normalizeWeights?: boolean }] | Setup[]): Block {
  const last = args[args.length - 1];
  const hasOpts = typeof last === 'object' && last !== null && !('kind' in last);
  const o = (hasOpts ? last : {}) as { weights?: number[]; normalizeWeights?: boolean };
  const children = (hasOpts ? args.slice(0, -1) : args) as Setup[];
  let w = o.weights ?? children.map(() => 1 / children.length);
  if (w.length !== children.length || !w.every((x) => Number.isFinite(x))) throw new Error(`Average: weights must be one number per adapter, got ${JSON.stringify(o.weights)}`);
  if (o.weights && o.normalizeWeights !== false) {
    const s = w.reduce((a, b) => a + b, 0) || 1;
    w = w.map((x) => x / s);
  }
  return block('Average', children, { weights: w });
}

/** AdapterHub's ALLOWED_NESTINGS: what each block may contain. */
const ALLOWED: Record<BlockKind, (BlockKind | 'name')[]> = {
  Stack: ['name', 'Fuse', 'Split', 'Parallel', 'BatchSplit', 'Average'],
  Fuse: ['name', 'Stack'],
  Split: ['name', 'Split', 'Stack', 'BatchSplit', 'Average'],
  Parallel: ['name', 'Stack', 'BatchSplit', 'Average'],
  BatchSplit: ['name', 'Stack', 'Split', 'BatchSplit', 'Average'],
  Average: ['name', 'Stack', 'Split', 'BatchSplit'],
};

/** Throws on a nesting AdapterHub refuses, or a setup deeper than it allows (below level 1 only Stacks). */
export function validateSetup(s: Setup, level = 0): void {
  if (typeof s === 'string') return;
  if (level > 1 && s.kind !== 'Stack') throw new Error(`adapter setup is too deep: ${describe(s)} cannot be at level ${level} (only a Stack can)`);
  for (const c of s.children) {
    const k = typeof c === 'string' ? 'name' : c.kind;
    if (!ALLOWED[s.kind].includes(k)) throw new Error(`adapter setup is invalid: ${s.kind} cannot contain ${describe(c)}`);
    validateSetup(c, level + 1);
  }
}

/** Every adapter name in a setup, in order of first appearance. */
export function leaves(s: Setup): string[] {
  if (typeof s === 'string') return [s];
  return [...new Set(s.children.flatMap(leaves))];
}

export function first(s: Setup): string {
  return typeof s === 'string' ? s : first(s.children[0]!);
}
export function last(s: Setup): string {
  return typeof s === 'string' ? s : last(s.children[s.children.length - 1]!);
}

/** The name of a Fuse block's fusion layer (AdapterHub: the children's last adapters joined by ","). */
export function fusionName(f: Block): string {
  return f.name ?? f.children.map((c) => last(c)).join(',');
}

/** Text form, as parseSetup reads it. */
export function describe(s: Setup): string {
  if (typeof s === 'string') return s;
  const inner = s.children.map(describe).join(', ');
  const extra = s.splits ? `, splits=[${s.splits.join(', ')}]` : s.batchSizes ? `, batch_sizes=[${s.batchSizes.join(', ')}]` : s.kind === 'Average' ? `, weights=[${s.weights!.join(', ')}]` : s.name ? `, name=${s.name}` : '';
  return `${s.kind}(${inner}${extra})`;
}

/** AdapterHub's to_dict form ({type, children, kwargs}). */
export function setupToDict(s: Setup): Record<string, unknown> {
  if (typeof s === 'string') return { type: 'single', children: [s] };
  const kwargs = s.splits ? { splits: s.splits } : s.batchSizes ? { batch_sizes: s.batchSizes } : s.kind === 'Average' ? { weights: s.weights } : null;
  return { type: s.kind, children: s.children.map(setupToDict), ...(kwargs ? { kwargs } : {}) };
}

/**
 * Parses the text form: `name`, `Stack(a, b)`, `Fuse(a, b)`, `Split(a, b, splits=[4, 4])` (or
 * `splits=4`), `BatchSplit(a, b, batch_sizes=[2, 3])`, `Parallel(a, b)`, `Average(a, b, weights=[0.7, 0.3])`;
 * a comma-separated list of names at the top level is a Stack (`a,b` = Stack(a, b)).
 */
export function parseSetup(text: string): Setup {
  let i = 0;
  const src = text.trim();
  const err = (msg: string): never => { throw new Error(`adapter setup "${text}": ${msg} at position ${i}`); };
  const ws = () => { while (i < src.length && /\s/.test(src[i]!)) i++; };
  const ident = (): string => {
    ws();
    const m = /^[A-Za-z0-9_.+-]+/.exec(src.slice(i));
    if (!m) err('expected a name');
    i += m![0].length;
    return m![0];
  };
  const numbers = (): number[] => {
    ws();
    if (src[i] !== '[') {
      const m = /^-?\d+(\.\d+)?([eE][-+]?\d+)?/.exec(src.slice(i));
      if (!m) err('expected a number or a list');
      i += m![0].length;
      return [Number(m![0])];
    }
    i++;
    const out: number[] = [];
    for (;;) {
      ws();
      if (src[i] === ']') { i++; return out; }
      const m = /^-?\d+(\.\d+)?([eE][-+]?\d+)?/.exec(src.slice(i));
      if (!m) err('expected a number');
      i += m![0].length;
      out.push(Number(m![0]));
      ws();
      if (src[i] === ',') i++;
    }
  };
  /** `splits=4` (a bare number) means 4 for every child, as AdapterHub's int form. */
  const one = (v: number[]): number[] | number => (v.length === 1 && !src.slice(0, i).match(/=\s*\[[^\]]*\]\s*\)?\s*$/) ? v[0]! : v);
  const item = (): Setup => {
    const name = ident();
    ws();
    if (src[i] !== '(') return name;
    const kind = (['Stack', 'Fuse', 'Split', 'BatchSplit', 'Parallel', 'Average'] as BlockKind[]).find((k) => k.toLowerCase() === name.toLowerCase());
    if (!kind) err(`unknown block "${name}" (blocks: Stack, Fuse, Split, BatchSplit, Parallel, Average)`);
    i++;
    const children: Setup[] = [];
    const kw: Record<string, number[] | string> = {};
    for (;;) {
      ws();
      if (src[i] === ')') { i++; break; }
      const save = i;
      const key = /^([a-z_]+)\s*=/.exec(src.slice(i));
      if (key) {
        i += key[0].length;
        if (key[1] === 'name') kw.name = ident();
        else kw[key[1]!] = numbers();
      } else {
        i = save;
        children.push(item());
      }
      ws();
      if (src[i] === ',') i++;
      else if (src[i] !== ')') err('expected "," or ")"');
    }
    switch (kind!) {
      case 'Stack': return Stack(...children);
      case 'Parallel': return Parallel(...children);
      case 'Fuse': return kw.name ? Fuse(...children, { name: kw.name as string }) : Fuse(...children);
      case 'Split': if (!kw.splits) err('Split needs splits=[...]'); return Split(...children, { splits: one(kw.splits as number[]) });
      case 'BatchSplit': if (!kw.batch_sizes) err('BatchSplit needs batch_sizes=[...]'); return BatchSplit(...children, { batchSizes: one(kw.batch_sizes as number[]) });
      case 'Average': return kw.weights ? Average(...children, { weights: kw.weights as number[] }) : Average(...children);
    }
  };
  const top: Setup[] = [item()];
  ws();
  while (src[i] === ',') {
    i++;
    top.push(item());
    ws();
  }
  if (i !== src.length) err('unexpected text');
  const s = top.length === 1 ? top[0]! : Stack(...top);
  validateSetup(s);
  return s;
}
