// Registry of adapter methods by peft_type ("LORA", "IA3", …) and by the names `--method` accepts.
// Public: a user's package can registerAdapter() its own method and every command picks it up.
import type { AdapterMethod, AdapterConfigBase } from './types.js';

const METHODS = new Map<string, AdapterMethod>();

export function registerAdapter<C extends AdapterConfigBase>(method: AdapterMethod<C>): void {
  const type = method.peftType.toUpperCase();
  if (METHODS.has(type)) throw new Error(`adapter method ${method.peftType} is already registered`);
  for (const n of method.names) {
    const owner = methodByName(n, false);
    if (owner) throw new Error(`adapter method name "${n}" of ${method.peftType} is already used by ${owner.method.peftType}`);
  }
  METHODS.set(type, method as unknown as AdapterMethod);
}

export function adapterMethod(peftType: unknown): AdapterMethod {
  const m = typeof peftType === 'string' ? METHODS.get(peftType.toUpperCase()) : undefined;
  if (!m) throw new Error(`unsupported peft_type ${JSON.stringify(peftType)} (supported: ${[...METHODS.keys()].join(', ')})`);
  return m;
}

/** peft_types of every registered method, in registration order (the first is the default method). */
export function adapterMethods(): string[] {
  return [...METHODS.keys()];
}

/** The method used when options name none (the first registered: LoRA). */
export function defaultAdapterMethod(): AdapterMethod {
  const first = METHODS.values().next();
  if (first.done) throw new Error('no adapter method is registered');
  return first.value;
}

/** Every registered method with its names and presets (for --help, the README table, compare:methods). */
export function adapterMethodList(): AdapterMethod[] {
  return [...METHODS.values()];
}

/**
 * A method by one of its names (`--method ia3`, YAML `method: houlsby`) or its peft_type, with the
 * preset that name selects. Unknown: null, or an error listing every name when `required`.
 */
export function methodByName(name: string, required: true): { method: AdapterMethod; preset: Record<string, unknown> };
export function methodByName(name: string, required?: boolean): { method: AdapterMethod; preset: Record<string, unknown> } | null;
export function methodByName(name: string, required = true): { method: AdapterMethod; preset: Record<string, unknown> } | null {
  const n = name.toLowerCase();
  for (const m of METHODS.values()) {
    if (m.names.includes(n) || m.peftType.toLowerCase() === n) return { method: m, preset: { ...((m.presets as Record<string, Record<string, unknown>> | undefined)?.[n] ?? {}) } };
  }
  if (!required) return null;
  const all = [...METHODS.values()].flatMap((m) => m.names);
  throw new Error(`unknown adapter method "${name}" (known: ${all.join(', ')}, or full)`);
}
