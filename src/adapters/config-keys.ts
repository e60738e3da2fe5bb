// Adapter options: PEFT's snake_case names are accepted as aliases of adapterkit's camelCase keys,
// and any other unknown key is an error with a "did you mean" (the shared suggestKey of io/), for
// options from TypeScript, YAML `lora:` sections or JSON.
import { suggestKey } from '../io/config-keys.js';

/**
 * Renames PEFT's snake_case aliases to their camelCase keys and throws on any key that is neither,
 * naming it and the closest known name. `what` starts the message ("LoRA config").
 */
export function normalizeKeys(what: string, raw: Record<string, unknown>, known: readonly string[], aliases: Readonly<Record<string, string>>, hints: Readonly<Record<string, string>> = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    const key = aliases[k] ?? k;
    if (!known.includes(key)) {
      const hint = suggestKey(k, known, { ...hints, ...aliases });  // hints: names that are only suggested, never accepted
      throw new Error(`${what}: unknown key "${k}"${hint ? ` (did you mean "${hint}"?)` : `; known keys: ${known.join(', ')}`}`);
    }
    if (key !== k && key in raw) throw new Error(`${what}: both "${k}" and "${key}" are set; use "${key}"`);
    out[key] = v;
  }
  return out;
}
