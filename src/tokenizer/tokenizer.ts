// Tokenizers from tokenizer.json (HF's Rust `tokenizers`, as a Node addon), with the special tokens,
// padding side, truncation and chat template of tokenizer_config.json (rendered by @huggingface/jinja).
import { existsSync, readFileSync } from 'node:fs';
import { readRegularFile } from '../io/files.js';
import { join } from 'node:path';
import { Tokenizer as RustTokenizer } from 'tokenizers';
import { Template } from '@huggingface/jinja';
import { byteLevelTable } from './byte-level.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface BatchEncoding {
  ids: number[][];
  attentionMask: number[][];
}

export interface EncodeOptions {
  addSpecialTokens?: boolean;
  /** Cut to this many tokens (from the right, or the left when truncationSide is "left"). */
  maxLength?: number;
}

type Json = Record<string, unknown>;

function readJson(path: string): Json | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readRegularFile(path, 'tokenizer file', 'utf8')) as Json;
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** A special token may be a string or an AddedToken object {content: ...}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

export class HFTokenizer {
  paddingSide: 'left' | 'right';
  truncationSide: 'left' | 'right';
  readonly chatTemplate: string | null;
  readonly special: { bos: string | null; eos: string | null; pad: string | null; unk: string | null };

  private bytesTable: (Uint8Array | null)[] | null | undefined;

  private constructor(private readonly tk: RustTokenizer, cfg: Json, private readonly jsonText: () => string | null = () => null) {
    this.paddingSide = cfg.padding_side === 'left' ? 'left' : 'right';
    this.truncationSide = cfg.truncation_side === 'left' ? 'left' : 'right';
    const tpl = cfg.chat_template;
    this.chatTemplate = typeof tpl === 'string' ? tpl : Array.isArray(tpl) ? ((tpl.find((t: Json) => t.name === 'default') as Json | undefined)?.template as string) ?? null : null;
    this.special = {
      bos: tokenText(cfg.bos_token),
      eos: tokenText(cfg.eos_token),
      pad: tokenText(cfg.pad_token),
      unk: tokenText(cfg.unk_token),
    };
  }

  /** Loads tokenizer.json (required) and tokenizer_config.json / special_tokens_map.json (optional). */
  static fromDir(dir: string): HFTokenizer {
    const file = join(dir, 'tokenizer.json');
    if (!existsSync(file)) throw new Error(`no tokenizer.json in ${dir} (use --ids to pass token ids directly)`);
    let tk: RustTokenizer;
    try {
      tk = RustTokenizer.fromFile(file);
    } catch (e) {
      throw new Error(`cannot load ${file}: ${(e as Error).message}`);
    }
    const cfg = { ...(readJson(join(dir, 'special_tokens_map.json')) ?? {}), ...(readJson(join(dir, 'tokenizer_config.json')) ?? {}) };
    return new HFTokenizer(tk, cfg, () => readFileSync(file, 'utf8'));
  }

  static fromJson(tokenizerJson: string, config: Json = {}): HFTokenizer {
    return new HFTokenizer(RustTokenizer.fromString(tokenizerJson), config, () => tokenizerJson);
  }

  /**
   * Each id's bytes (null for special tokens, which decode skips) when the tokenizer is plain
   * byte-level BPE (GPT-2, Llama 3, Qwen2, the embedded model), else null. Built once, on first use.
   */
  tokenBytes(): (Uint8Array | null)[] | null {
    if (this.bytesTable === undefined) {
      const text = this.jsonText();
      try {
        this.bytesTable = text === null ? null : byteLevelTable(JSON.parse(text) as Json);
      } catch {
        this.bytesTable = null;
      }
    }
    return this.bytesTable;
  }

  get vocabSize(): number {
    return this.tk.getVocabSize(true);
  }
  tokenToId(token: string): number | null {
    return this.tk.tokenToId(token) ?? null;
  }
  idToToken(id: number): string | null {
    return this.tk.idToToken(id) ?? null;
  }
  private idOf(t: string | null): number | null {
    return t === null ? null : this.tokenToId(t);
  }
  get bosTokenId(): number | null { return this.idOf(this.special.bos); }
  get eosTokenId(): number | null { return this.idOf(this.special.eos); }
  /** The pad token, else EOS (what decoder-only fine-tuning usually does). */
  get padTokenId(): number | null { return this.idOf(this.special.pad) ?? this.eosTokenId; }

  async encode(text: string, o: EncodeOptions = {}): Promise<number[]> {
    const enc = await this.tk.encode(text, null, { addSpecialTokens: o.addSpecialTokens ?? true });
    return this.truncate(enc.getIds(), o.maxLength);
  }

  private truncate(ids: number[], max: number | undefined): number[] {
    if (max === undefined || ids.length <= max) return ids;
    return this.truncationSide === 'left' ? ids.slice(ids.length - max) : ids.slice(0, max);
  }

  /** Encodes and pads a batch to its longest row, on `paddingSide`. */
  async encodeBatch(texts: readonly string[], o: EncodeOptions & { padTo?: number } = {}): Promise<BatchEncoding> {
    const rows = await Promise.all(texts.map((t) => this.encode(t, o)));
    return this.pad(rows, o.padTo);
  }

  pad(rows: readonly number[][], padTo?: number): BatchEncoding {
    const pad = this.padTokenId ?? 0;
    const len = Math.max(padTo ?? 0, ...rows.map((r) => r.length));
    const ids: number[][] = [];
    const attentionMask: number[][] = [];
    for (const r of rows) {
      const fill = new Array<number>(len - r.length);
      if (this.paddingSide === 'left') {
        ids.push([...fill.fill(pad), ...r]);
        attentionMask.push([...fill.fill(0), ...r.map(() => 1)]);
      } else {
        ids.push([...r, ...fill.fill(pad)]);
        attentionMask.push([...r.map(() => 1), ...fill.fill(0)]);
      }
    }
    return { ids, attentionMask };
  }

  async decode(ids: readonly number[], o: { skipSpecialTokens?: boolean } = {}): Promise<string> {
    return this.tk.decode([...ids], o.skipSpecialTokens ?? true);
  }

  /** Renders the chat template of tokenizer_config.json. */
  applyChatTemplate(messages: readonly ChatMessage[], o: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.chatTemplate) throw new Error('this tokenizer has no chat_template in tokenizer_config.json');
    return new Template(this.chatTemplate).render({
      messages,
      add_generation_prompt: o.addGenerationPrompt ?? true,
      bos_token: this.special.bos ?? '',
      eos_token: this.special.eos ?? '',
      pad_token: this.special.pad ?? '',
      unk_token: this.special.unk ?? '',
    });
  }
}
