// Instruction-tuning examples: the model sees prompt + response but is trained on the response only,
// so labels are IGNORE_INDEX (-100) over the prompt tokens and equal the ids over the response and
// its closing EOS. Two row shapes:
//   {prompt, response}  (field names configurable)
//   {messages: [{role, content}, …]}  rendered with the tokenizer's chat template; the last message
//                                     must be the assistant's. Every assistant turn is trained (its
//                                     content and the template's turn end), everything else is
//                                     context; `lastTurnOnly` trains the final turn alone.
// Prompt and response are tokenized separately so the mask boundary is exact; a BPE merge across
// the boundary (rare: templates end the prompt at a marker) is given up for that exactness.
import type { ChatMessage, HFTokenizer } from '../tokenizer/tokenizer.js';
import { BadRows, RowProblem, arrayField, describeValue, stringField, type BadRowOptions, type DataRecord } from './records.js';
import { IGNORE_INDEX, checkPositiveInt, requireEos, type BuildResult, type TokenExample } from './examples.js';

export interface InstructionOptions extends BadRowOptions {
  promptField?: string; // default 'prompt'
  responseField?: string; // default 'response'
  /** Rows having this field are chats (default 'messages'). */
  messagesField?: string;
  /** Cut examples to this many tokens, keeping the response when possible (see fitPromptResponse). */
  maxLength?: number;
  /** Tokens of the prompt kept, at least, when the response must be cut (default 1). */
  minPromptTokens?: number;
  /** prompt/response rows: let the tokenizer add its specials to the prompt, e.g. BOS (default true). */
  addSpecialTokens?: boolean;
  /**
   * Append EOS to the response (default true). In chat rows it is appended only when the rendered
   * response does not already contain EOS, since most templates close the turn with it themselves.
   */
  appendEos?: boolean;
  /** Chat rows: train only the last assistant turn, earlier ones being context (default false: every assistant turn). */
  lastTurnOnly?: boolean;
}

/**
 * Fits prompt + response into maxLength. The response is what is learned, so it keeps all its
 * tokens if it can; the prompt then loses tokens from its start (the end, next to the response,
 * matters most), except a leading BOS. When the response alone is too long, the prompt keeps
 * `minPrompt` tokens and the response is cut at its end (losing EOS: the model must not learn to
 * stop where the text was cut).
 */
export function fitPromptResponse(prompt: number[], response: number[], maxLength: number, minPrompt = 1, bosId: number | null = null): { prompt: number[]; response: number[]; truncated: boolean } {
  if (prompt.length + response.length <= maxLength) return { prompt, response, truncated: false };
  const keepPrompt = Math.max(maxLength - response.length, Math.min(prompt.length, minPrompt));
  const resp = response.slice(0, maxLength - keepPrompt);
  let p: number[];
  if (keepPrompt === 0) p = [];
  else if (bosId !== null && prompt[0] === bosId && keepPrompt >= 2) p = [bosId, ...prompt.slice(prompt.length - (keepPrompt - 1))];
  else p = prompt.slice(prompt.length - keepPrompt);
  return { prompt: p, response: resp, truncated: true };
}

function parseMessages(r: DataRecord, name: string): ChatMessage[] {
  const raw = arrayField(r, name);
  const msgs = raw.map((m, k) => {
    const o = m as Record<string, unknown> | null;
    if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new RowProblem(`${name}[${k}] must be an object {role, content}, got ${describeValue(m)}`);
    if (typeof o.role !== 'string' || o.role === '') throw new RowProblem(`${name}[${k}].role must be a non-empty string, got ${describeValue(o.role)}`);
    if (typeof o.content !== 'string') throw new RowProblem(`${name}[${k}].content must be a string, got ${describeValue(o.content)}`);
    return { role: o.role, content: o.content };
  });
  const last = msgs[msgs.length - 1]!;
  if (last.role !== 'assistant') throw new RowProblem(`the last message of "${name}" must be the assistant's (the response to learn), got role "${last.role}"`);
  if (last.content.trim() === '') throw new RowProblem(`the last assistant message of "${name}" is empty`);
  return msgs;
}

function render(tok: HFTokenizer, msgs: ChatMessage[], addGenerationPrompt: boolean): string {
  try {
    return tok.applyChatTemplate(msgs, { addGenerationPrompt });
  } catch (e) {
    // Templates reject bad conversations themselves (raise_exception on role order): a data problem.
    throw new RowProblem(`chat template: ${(e as Error).message}`);
  }
}

/**
 * Example:
 * ```ts
 * const { records } = readJsonl('sft.jsonl');
 * const { examples } = await buildInstruction(records, tok, { maxLength: 1024 });
 * // examples[i].labels is -100 over the prompt, the response ids (+ EOS) after it
 * ```
 */
export async function buildInstruction(records: readonly DataRecord[], tok: HFTokenizer, o: InstructionOptions = {}): Promise<BuildResult<TokenExample>> {
  checkPositiveInt('maxLength', o.maxLength);
  const minPrompt = o.minPromptTokens ?? 1;
  if (!(Number.isSafeInteger(minPrompt) && minPrompt >= 0)) throw new Error(`minPromptTokens must be a non-negative integer, got ${minPrompt}`);
  if (o.maxLength !== undefined && o.maxLength <= minPrompt) throw new Error(`maxLength (${o.maxLength}) must exceed minPromptTokens (${minPrompt}) to leave room for a response`);
  const appendEos = o.appendEos ?? true;
  const eos = appendEos ? requireEos(tok, 'end each response') : null;
  const messagesField = o.messagesField ?? 'messages';
  const bad = new BadRows(o);
  let truncated = 0;

  const examples = await bad.map(records, async (r): Promise<TokenExample> => {
    let prompt: number[];
    let response: number[];
    /** Labels of the prompt part: IGNORE_INDEX, except earlier assistant turns of a chat. */
    let promptLabels: number[] | null = null;
    if (Object.prototype.hasOwnProperty.call(r.data, messagesField)) {
      if (!tok.chatTemplate) throw new Error(`${r.source}:${r.line}: a "${messagesField}" row needs a chat template, and this tokenizer has none (chat_template in tokenizer_config.json)`);
      const msgs = parseMessages(r, messagesField);
      // Each assistant turn k: its prompt is the conversation before it as rendered at generation
      // time, its response what the rendering of turns 0..k adds after that (content plus the
      // template's turn end). Every such rendering must extend the previous one, so the pieces
      // tile the full text exactly.
      const full = render(tok, msgs, false);
      const turns = msgs.map((m, k) => k).filter((k) => msgs[k]!.role === 'assistant' && (!o.lastTurnOnly || k === msgs.length - 1));
      const ids: number[] = [];
      const labels: number[] = [];
      let at = 0;
      let last: number[] = [];
      for (const k of turns) {
        const head = render(tok, msgs.slice(0, k), true);
        const upTo = k === msgs.length - 1 ? full : render(tok, msgs.slice(0, k + 1), false);
        if (!full.startsWith(upTo) || !upTo.startsWith(head) || head.length < at) {
          throw new RowProblem('the chat template does not render the conversation as an extension of its prompt, so the response cannot be separated');
        }
        // Templates write their own BOS into the text, so the tokenizer must not add another.
        const ctx = await tok.encode(full.slice(at, head.length), { addSpecialTokens: false });
        const resp = await tok.encode(full.slice(head.length, upTo.length), { addSpecialTokens: false });
        ids.push(...ctx);
        labels.push(...ctx.map(() => IGNORE_INDEX));
        if (k !== msgs.length - 1) {
          ids.push(...resp);
          labels.push(...resp);
        }
        last = resp;
        at = upTo.length;
      }
      prompt = ids;
      promptLabels = labels;
      response = last;
      if (eos !== null && !response.includes(eos)) response.push(eos);
    } else {
      const p = stringField(r, o.promptField ?? 'prompt');
      const resp = stringField(r, o.responseField ?? 'response');
      prompt = await tok.encode(p, { addSpecialTokens: o.addSpecialTokens ?? true });
      response = await tok.encode(resp, { addSpecialTokens: false });
      if (eos !== null) response.push(eos);
    }
    let pLabels = promptLabels ?? prompt.map(() => IGNORE_INDEX);
    if (o.maxLength !== undefined) {
      const fit = fitPromptResponse(prompt, response, o.maxLength, minPrompt, tok.bosTokenId);
      if (fit.truncated) {
        truncated++;
        // The prompt lost tokens from its start (a leading BOS kept): cut its labels the same way.
        const n = fit.prompt.length;
        const keptBos = n >= 2 && tok.bosTokenId !== null && prompt[0] === tok.bosTokenId && fit.prompt[0] === tok.bosTokenId && prompt.length > n;
        pLabels = n === 0 ? [] : keptBos ? [pLabels[0]!, ...pLabels.slice(pLabels.length - (n - 1))] : pLabels.slice(pLabels.length - n);
      }
      ({ prompt, response } = fit);
    }
    return {
      inputIds: [...prompt, ...response],
      labels: [...pLabels, ...response],
      origin: `${r.source}:${r.line}`,
    };
  });
  return { examples, truncated, ...bad.summary() };
}
