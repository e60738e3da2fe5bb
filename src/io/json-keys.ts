// Lists the keys of one JSON object, in order and with repeats. JSON.parse silently keeps the last
// of two equal keys, so a safetensors header or a shard index naming a tensor twice would load
// without a word; this scanner lets the readers reject that. It runs only on text JSON.parse has
// already accepted, and every loop advances through the text or throws, so garbage cannot hang it.

export interface JsonKey {
  /** The key, decoded ("\u0061" and "a" are the same key). */
  key: string;
  /** Where the key's value starts and ends in the text: `text.slice(valueStart, valueEnd)`. */
  valueStart: number;
  valueEnd: number;
}

/** The keys of the object whose "{" is the first non-blank character at or after `start`. */
export function objectKeys(text: string, start = 0): JsonKey[] {
  let i = skipBlank(text, start);
  if (text[i] !== '{') return [];
  i = skipBlank(text, i + 1);
  const keys: JsonKey[] = [];
  if (text[i] === '}') return keys;
  for (;;) {
    if (text[i] !== '"') throw new SyntaxError(`objectKeys: expected a key at ${i}`);
    const end = stringEnd(text, i);
    const key = JSON.parse(text.slice(i, end)) as string;
    i = skipBlank(text, end);
    if (text[i] !== ':') throw new SyntaxError(`objectKeys: expected ":" at ${i}`);
    i = skipBlank(text, i + 1);
    const vEnd = valueEnd(text, i);
    keys.push({ key, valueStart: i, valueEnd: vEnd });
    i = skipBlank(text, vEnd);
    if (text[i] === ',') {
      i = skipBlank(text, i + 1);
      continue;
    }
    if (text[i] === '}') return keys;
    throw new SyntaxError(`objectKeys: expected "," or "}" at ${i}`);
  }
}

/** The keys that occur more than once, each reported once. */
export function duplicateKeys(keys: readonly JsonKey[]): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const { key } of keys) {
    if (seen.has(key)) dup.add(key);
    seen.add(key);
  }
  return [...dup];
}

function skipBlank(text: string, i: number): number {
  // JSON's four whitespace characters only.
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    i++;
  }
  return i;
}

/** Index just past the closing quote of the string opening at `i`. */
function stringEnd(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === 0x5c) j++;  // backslash: skip the escaped character
    else if (c === 0x22) return j + 1;
  }
  throw new SyntaxError('objectKeys: unterminated string');
}

/** Index just past the value (string, object, array, number or literal) starting at `i`. */
function valueEnd(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return stringEnd(text, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const d = text[j];
      if (d === '"') j = stringEnd(text, j) - 1;
      else if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    throw new SyntaxError('objectKeys: unterminated object or array');
  }
  let j = i;
  while (j < text.length && !',}] \n\r\t'.includes(text[j]!)) j++;
  if (j === i) throw new SyntaxError(`objectKeys: expected a value at ${i}`);
  return j;
}
