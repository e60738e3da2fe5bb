// PEFT's adapter file format, the default for every method: adapter_model.safetensors with keys
// `base_model.model.<module path>.<key>` (no adapter name in keys).
import type { AdapterFileFormat } from './types.js';

export const PEFT_PREFIX = 'base_model.model.';

export const PEFT_FORMAT: AdapterFileFormat = {
  weightsFile: 'adapter_model.safetensors',
  fileKey: (path, key) => `${PEFT_PREFIX}${path === '' ? '' : path + '.'}${key}`,
  modelKey: (fileKey) => (fileKey.startsWith(PEFT_PREFIX) ? fileKey.slice(PEFT_PREFIX.length) : null),
  alternatives: ['adapter_model.bin'],
};
