// generation_config.json (transformers' GenerationConfig): the defaults a checkpoint ships for
// generate(). Llama 3 lists several EOS ids (<|end_of_text|>, <|eom_id|>, <|eot_id|>) there and
// nowhere else, and instruct models set sampling defaults (do_sample, temperature, top_p) and a
// max_length. Options given explicitly always win over the file, as in HF's generate(**kwargs).
import { existsSync } from 'node:fs';
import { readJsonObjectFile } from '../io/files.js';
import { join } from 'node:path';
import type { GenerateOptions } from './generate.js';

export interface GenerationConfigFile {
  /** eos_token_id as a list (HF accepts an int or a list). */
  eosTokenIds: number[];
  bosTokenId: number | null;
  padTokenId: number | null;
  /** Prompt + new tokens (HF's max_length); max_new_tokens wins when both are set. */
  maxLength: number | null;
  maxNewTokens: number | null;
  doSample: boolean | null;
  temperature: number | null;
  topK: number | null;
  topP: number | null;
  repetitionPenalty: number | null;
}

/** The checkpoint folder's generation_config.json, or null when it has none. A bad value names the field. */
export function readGenerationConfig(dir: string): GenerationConfigFile | null {
  const file = join(dir, 'generation_config.json');
  if (!existsSync(file)) return null;
  const r = readJsonObjectFile(file, 'generation config');  // a FIFO would block readFileSync forever
  const bad = (k: string, want: string): never => { throw new Error(`generation_config.json: ${k} must be ${want}, got ${JSON.stringify(r[k])}`); };
  const int = (k: string, min = 0): number | null => {
    const v = r[k];
    if (v === undefined || v === null) return null;
    return typeof v === 'number' && Number.isInteger(v) && v >= min ? v : bad(k, `an integer >= ${min}`);
  };
  const num = (k: string, ok: (v: number) => boolean, want: string): number | null => {
    const v = r[k];
    if (v === undefined || v === null) return null;
    return typeof v === 'number' && Number.isFinite(v) && ok(v) ? v : bad(k, want);
  };
  const eos = r.eos_token_id;
  let eosTokenIds: number[] = [];
  if (typeof eos === 'number') eosTokenIds = [int('eos_token_id')!];
  else if (Array.isArray(eos)) {
    if (!eos.every((v) => typeof v === 'number' && Number.isInteger(v) && v >= 0)) bad('eos_token_id', 'a token id or a list of token ids');
    eosTokenIds = eos as number[];
  } else if (eos !== undefined && eos !== null) bad('eos_token_id', 'a token id or a list of token ids');
  const doSample = r.do_sample;
  if (doSample !== undefined && doSample !== null && typeof doSample !== 'boolean') bad('do_sample', 'true or false');
  return {
    eosTokenIds,
    bosTokenId: int('bos_token_id'),
    padTokenId: int('pad_token_id'),
    maxLength: int('max_length', 1),
    maxNewTokens: int('max_new_tokens', 1),
    doSample: (doSample as boolean | undefined) ?? null,
    temperature: num('temperature', (v) => v > 0, 'a number > 0'),
    topK: int('top_k'),
    topP: num('top_p', (v) => v > 0 && v <= 1, 'in (0, 1]'),
    repetitionPenalty: num('repetition_penalty', (v) => v > 0, 'a number > 0'),
  };
}

/**
 * Options for generate(): what the caller gave explicitly (undefined: not given), else the file's
 * defaults. The file's EOS ids are added to the stop ids. `promptLength` turns HF's max_length
 * (prompt included) into new tokens; with neither in the file, the caller's default applies.
 */
export function generationDefaults(g: GenerationConfigFile | null, explicit: GenerateOptions, promptLength: number): GenerateOptions {
  const o: GenerateOptions = { ...explicit };
  for (const k of Object.keys(o) as (keyof GenerateOptions)[]) if (o[k] === undefined) delete o[k];
  if (!g) return o;
  const stops = [...(explicit.stopIds ?? [])];
  for (const id of g.eosTokenIds) if (!stops.includes(id)) stops.push(id);
  if (stops.length) o.stopIds = stops;
  if (o.maxNewTokens === undefined) {
    if (g.maxNewTokens !== null) o.maxNewTokens = g.maxNewTokens;
    else if (g.maxLength !== null) o.maxNewTokens = Math.max(1, g.maxLength - promptLength);
  }
  if (o.doSample === undefined && g.doSample !== null) o.doSample = g.doSample;
  if (o.temperature === undefined && g.temperature !== null) o.temperature = g.temperature;
  if (o.topK === undefined && g.topK !== null) o.topK = g.topK;
  if (o.topP === undefined && g.topP !== null) o.topP = g.topP;
  if (o.repetitionPenalty === undefined && g.repetitionPenalty !== null) o.repetitionPenalty = g.repetitionPenalty;
  if (o.padId === undefined && g.padTokenId !== null) o.padId = g.padTokenId;
  return o;
}
