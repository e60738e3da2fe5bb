// Registry of adapter methods by PEFT type ("LORA", …). One registerAdapter call per method folder.
import type { AdapterMethod, AdapterConfigBase } from './types.js';

const METHODS = new Map<string, AdapterMethod>();

export function registerAdapter<C extends AdapterConfigBase>(method: AdapterMethod<C>): void {
  if (METHODS.has(method.peftType)) throw new Error(`adapter method ${method.peftType} is already registered`);
  METHODS.set(method.peftType, method as unknown as AdapterMethod);
}

export function adapterMethod(peftType: unknown): AdapterMethod {
  const m = typeof peftType === 'string' ? METHODS.get(peftType.toUpperCase()) : undefined;
  if (!m) throw new Error(`unsupported peft_type ${JSON.stringify(peftType)} (supported: ${[...METHODS.keys()].join(', ')})`);
  return m;
}

export function adapterMethods(): string[] {
  return [...METHODS.keys()];
}
