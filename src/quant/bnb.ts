// Quantized bases on disk, in the format transformers + bitsandbytes write (so a QLoRA base saved by
// Python loads here, and ours loads there):
//   nf4/fp4: <m>.weight (uint8 [ceil(n/2), 1]), <m>.weight.absmax, <m>.weight.quant_map (16),
//            with double quantization <m>.weight.nested_absmax and <m>.weight.nested_quant_map (256),
//            and <m>.weight.quant_state.bitsandbytes__<nf4|fp4>: JSON bytes {quant_type, blocksize,
//            dtype, shape, nested_blocksize, nested_offset, nested_dtype};
//   int8:    <m>.weight (int8 [out, in]) and <m>.SCB (float32 [out]) (LLM.int8's row scales);
//   int4 (adapterkit's own; no bitsandbytes equivalent): <m>.weight (uint8), <m>.weight.scales,
//            <m>.weight.zeros, <m>.weight.quant_state.adapterkit__int4 {quant_type, blocksize, shape}.
// config.json carries `quantization_config` (quant_method "bitsandbytes", or "adapterkit" for int4).
import { fromBytes, tensor, type Tensor, type DType } from '../tensor/index.js';
import type { CheckpointReader } from '../io/checkpoint.js';
import { QuantizedWeight, type QuantFormat } from './weight.js';
import { NF4_CODE, FP4_CODE } from './codes.js';
import type { QuantLinear } from './linear.js';

const STATE_SUFFIX = /^(.*)\.weight\.quant_state\.(bitsandbytes__nf4|bitsandbytes__fp4|adapterkit__int4)$/;
const MAX_STATE_BYTES = 4096;

export class QuantizedCheckpointError extends Error {
  override readonly name = 'QuantizedCheckpointError';
}

/** The quantized modules of a checkpoint: module key prefix -> the keys that describe it. */
export function findQuantizedModules(reader: CheckpointReader): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const names = reader.names();
  const has = new Set(names);
  for (const k of names) {
    const m = STATE_SUFFIX.exec(k);
    if (m) {
      const p = m[1]!;
      const keys = [k, `${p}.weight`, `${p}.weight.absmax`, `${p}.weight.quant_map`, `${p}.weight.nested_absmax`, `${p}.weight.nested_quant_map`, `${p}.weight.scales`, `${p}.weight.zeros`];
      out.set(p, keys.filter((x) => has.has(x)));
    } else if (k.endsWith('.SCB')) {
      const p = k.slice(0, -4);
      out.set(p, [k, `${p}.weight`, `${p}.weight_format`].filter((x) => has.has(x)));
    }
  }
  return out;
}

function parseState(bytes: Tensor, key: string): Record<string, unknown> {
  if (bytes.dtype !== 'uint8' || bytes.numel > MAX_STATE_BYTES) throw new QuantizedCheckpointError(`${key}: expected at most ${MAX_STATE_BYTES} uint8 bytes of JSON, got ${bytes.dtype} [${bytes.shape.join(', ')}]`);
  const text = new TextDecoder().decode(bytes.data() as Uint8Array);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new QuantizedCheckpointError(`${key}: the quantization state is not JSON`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new QuantizedCheckpointError(`${key}: the quantization state must be a JSON object`);
  return v as Record<string, unknown>;
}

const int = (v: unknown, what: string, key: string): number => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > 2 ** 31) throw new QuantizedCheckpointError(`${key}: ${what} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
};

/**
 * Reads one quantized module (its keys from findQuantizedModules) and checks it against the
 * module's shape (out, in). Every size is validated before any kernel reads it.
 */
export function readQuantized(reader: CheckpointReader, prefix: string, want: [number, number]): QuantizedWeight {
  try {
    return readQuantizedUnchecked(reader, prefix, want);
  } catch (e) {
    if (e instanceof QuantizedCheckpointError) throw e;
    throw new QuantizedCheckpointError(`${prefix}.weight: ${(e as Error).message}`);
  }
}

function readQuantizedUnchecked(reader: CheckpointReader, prefix: string, want: [number, number]): QuantizedWeight {
  const rd = (suffix: string, dtype?: DType): Tensor | undefined => {
    const k = prefix + suffix;
    return reader.has(k) ? reader.read(k, dtype ? { dtype } : {}) : undefined;
  };
  const mustShape = (shape: unknown, key: string): [number, number] => {
    if (!Array.isArray(shape) || shape.length !== 2) throw new QuantizedCheckpointError(`${key}: shape must be [out, in], got ${JSON.stringify(shape)}`);
    const s: [number, number] = [int(shape[0], 'shape[0]', key), int(shape[1], 'shape[1]', key)];
    if (s[0] !== want[0] || s[1] !== want[1]) throw new QuantizedCheckpointError(`${key}: the quantized weight is [${s.join(', ')}] but the model's layer is [${want.join(', ')}]; is this checkpoint for another model size?`);
    return s;
  };
  if (reader.has(`${prefix}.SCB`)) {
    const data = rd('.weight');
    const scb = rd('.SCB');
    if (!data || !scb) throw new QuantizedCheckpointError(`${prefix}: an int8 weight needs .weight and .SCB`);
    if (data.dtype !== 'int8' || data.ndim !== 2) throw new QuantizedCheckpointError(`${prefix}.weight: expected int8 [out, in], got ${data.dtype} [${data.shape.join(', ')}]`);
    mustShape(data.shape, `${prefix}.weight`);
    return QuantizedWeight.fromSpec({ format: 'int8', out: want[0], in: want[1], blocksize: 0, data: data.reshape(-1), absmax: scb.to('float32') });
  }
  const stateKey = reader.names().find((k) => k.startsWith(`${prefix}.weight.quant_state.`))!;
  const st = parseState(reader.read(stateKey), stateKey);
  const kind = stateKey.slice(stateKey.lastIndexOf('__') + 2) as QuantFormat;
  if (st.quant_type !== undefined && st.quant_type !== kind) throw new QuantizedCheckpointError(`${stateKey}: quant_type ${JSON.stringify(st.quant_type)} does not match the key`);
  const [out, inF] = mustShape(st.shape, stateKey);
  const blocksize = int(st.blocksize ?? 64, 'blocksize', stateKey);
  const data = rd('.weight');
  const absmax = rd(kind === 'int4' ? '.weight.scales' : '.weight.absmax');
  if (!data || !absmax) throw new QuantizedCheckpointError(`${prefix}: a ${kind} weight needs .weight and its scales (.weight.absmax or .weight.scales)`);
  if (data.dtype !== 'uint8') throw new QuantizedCheckpointError(`${prefix}.weight: packed 4-bit data must be uint8 (quant_storage other than uint8 is not supported), got ${data.dtype}`);
  const flat = data.reshape(-1);
  if (kind === 'int4') {
    const zeros = rd('.weight.zeros');
    if (!zeros) throw new QuantizedCheckpointError(`${prefix}: an int4 weight needs .weight.zeros`);
    return QuantizedWeight.fromSpec({ format: 'int4', out, in: inF, blocksize, data: flat, absmax: absmax.to('float32'), zeros });
  }
  const code = rd('.weight.quant_map', 'float32');
  const nestedAbsmax = rd('.weight.nested_absmax', 'float32');
  const nestedCode = rd('.weight.nested_quant_map', 'float32');
  if ((nestedAbsmax === undefined) !== (nestedCode === undefined)) throw new QuantizedCheckpointError(`${prefix}: double quantization needs both nested_absmax and nested_quant_map`);
  const nested = nestedAbsmax !== undefined;
  const offset = st.nested_offset ?? 0;
  if (nested && (typeof offset !== 'number' || !Number.isFinite(offset))) throw new QuantizedCheckpointError(`${stateKey}: nested_offset must be a finite number`);
  return QuantizedWeight.fromSpec({
    format: kind, out, in: inF, blocksize, data: flat, absmax: nested ? absmax : absmax.to('float32'),
    code: code ?? tensor([...(kind === 'nf4' ? NF4_CODE : FP4_CODE)], { dtype: 'float32' }),
    ...(nested ? { nestedAbsmax, nestedCode, nestedBlocksize: int(st.nested_blocksize ?? 256, 'nested_blocksize', stateKey), offset: offset as number } : {}),
  });
}

/** The tensors to write for one quantized layer at module path `p` (borrowed from the layer, plus small new ones the caller frees). */
export function quantizedEntries(p: string, layer: QuantLinear): { entries: [string, Tensor][]; owned: Tensor[] } {
  const s = layer.spec();
  const owned: Tensor[] = [];
  const json = (o: unknown) => {
    const b = new TextEncoder().encode(JSON.stringify(o));
    const t = fromBytes(b, 'uint8', [b.length]);
    owned.push(t);
    return t;
  };
  if (s.format === 'int8') {
    const w = s.data.view(s.out, s.in);
    owned.push(w);
    return { entries: [[`${p}.weight`, w], [`${p}.SCB`, s.absmax]], owned };
  }
  if (s.format === 'int4') {
    return { entries: [[`${p}.weight`, s.data], [`${p}.weight.scales`, s.absmax], [`${p}.weight.zeros`, s.zeros!],
      [`${p}.weight.quant_state.adapterkit__int4`, json({ quant_type: 'int4', blocksize: s.blocksize, shape: [s.out, s.in] })]], owned };
  }
  const data = s.data.view(-1, 1);
  owned.push(data);
  const state: Record<string, unknown> = { quant_type: s.format, blocksize: s.blocksize, dtype: layer.computeDtype, shape: [s.out, s.in] };
  const entries: [string, Tensor][] = [[`${p}.weight`, data], [`${p}.weight.absmax`, s.absmax], [`${p}.weight.quant_map`, s.code!]];
  if (s.nestedAbsmax) {
    Object.assign(state, { nested_blocksize: s.nestedBlocksize ?? 256, nested_offset: s.offset ?? 0, nested_dtype: 'float32' });
    entries.push([`${p}.weight.nested_absmax`, s.nestedAbsmax], [`${p}.weight.nested_quant_map`, s.nestedCode!]);
  }
  entries.push([`${p}.weight.quant_state.bitsandbytes__${s.format}`, json(state)]);
  return { entries, owned };
}

/** config.json's quantization_config for a base quantized to `format`. */
export function quantizationConfig(format: QuantFormat, opts: { blocksize: number; doubleQuant: boolean; computeDtype: DType; skip: string[] }): Record<string, unknown> {
  if (format === 'int4') return { quant_method: 'adapterkit', format: 'int4', group_size: opts.blocksize, modules_to_not_convert: opts.skip };
  if (format === 'int8') return { quant_method: 'bitsandbytes', load_in_8bit: true, load_in_4bit: false, llm_int8_threshold: 6.0, llm_int8_has_fp16_weight: false, llm_int8_skip_modules: opts.skip };
  return {
    quant_method: 'bitsandbytes', load_in_4bit: true, load_in_8bit: false, bnb_4bit_quant_type: format,
    bnb_4bit_use_double_quant: opts.doubleQuant, bnb_4bit_compute_dtype: opts.computeDtype, bnb_4bit_quant_storage: 'uint8',
    llm_int8_skip_modules: opts.skip,
  };
}
