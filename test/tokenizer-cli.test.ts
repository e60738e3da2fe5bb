// Tokenizers from tokenizer.json and tokenizer_config.json, and the model CLI commands end to end on
// checkpoints written by `adapterkit init-model`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { byteLevelBpe, byteToUnicode } from '../src/tokenizer/bytelevel.js';
import { initModel } from '../src/models/init-model.js';
import { loadModel } from '../src/models/load.js';
import { score } from '../src/models/generate.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/adapterkit.js'), ...args], { encoding: 'utf8' });
const work = mkdtempSync(join(tmpdir(), 'ak-cli-'));
const llama = join(work, 'llama');
initModel({ arch: 'llama', out: llama, layers: 2, hidden: 32, heads: 4, vocab: 300, seed: 3 });

test('byte-level BPE: GPT-2 byte map, merges, special tokens, round trip', async () => {
  const map = byteToUnicode();
  assert.equal(map[65], 'A');
  assert.equal(map[32], 'Ġ');  // space -> U+0120, as in GPT-2's vocab
  assert.equal(map[10], 'Ċ');  // newline -> U+010A
  assert.equal(new Set(map).size, 256);
  const { json } = byteLevelBpe({ specialsLast: ['<eos>'], merges: [['h', 'e'], ['l', 'l'], ['he', 'll']] });
  const tok = HFTokenizer.fromJson(JSON.stringify(json), { eos_token: '<eos>' });
  const ids = await tok.encode('hello<eos>');
  assert.deepEqual(ids.map((i) => tok.idToToken(i)), ['hell', 'o', '<eos>']);
  assert.equal(tok.eosTokenId, 259);
  assert.equal(await tok.decode(await tok.encode('héllo wörld ✓'), { skipSpecialTokens: false }), 'héllo wörld ✓');
});

test('tokenizer_config: special tokens, padding side, truncation, chat template', async () => {
  const tok = HFTokenizer.fromDir(llama);
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.eosTokenId, 2);
  assert.equal(tok.paddingSide, 'left');
  const b = await tok.encodeBatch(['ab', 'abcd']);
  assert.deepEqual(b.attentionMask, [[0, 0, 1, 1], [1, 1, 1, 1]]);
  assert.equal(b.ids[0]![0], tok.padTokenId);
  tok.paddingSide = 'right';
  assert.deepEqual(tok.pad([[5], [6, 7]]).ids, [[5, 2], [6, 7]]);
  assert.equal((await tok.encode('abcdef', { maxLength: 3 })).length, 3);
  tok.truncationSide = 'left';
  assert.deepEqual(await tok.encode('abcdef', { maxLength: 2 }), await tok.encode('ef'));
  const chat = tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }]);
  assert.equal(chat, '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
  // Special tokens inside text encode as one id each.
  const ids = await tok.encode('<|im_start|>');
  assert.deepEqual(ids, [tok.tokenToId('<|im_start|>')]);
});

test('init-model writes loadable checkpoints for every family', () => {
  for (const arch of ['gpt2', 'mistral', 'qwen2', 'bert', 'roberta', 'xlm-roberta']) {
    const dir = join(work, arch);
    const r = cli('init-model', '--arch', arch, '--out', dir, '--layers', '1', '--hidden', '16', '--heads', '2', '--vocab', '300');
    assert.equal(r.status, 0, r.stderr);
    const m = loadModel(dir);
    assert.equal(m.modelType, arch);
    m.dispose();
    HFTokenizer.fromDir(dir);
  }
  const r = cli('init-model', '--arch', 'llama', '--out', join(work, 'x'), '--vocab', '100');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--vocab 100 is smaller than the tokenizer/);
  assert.match(cli('init-model', '--arch', 't5', '--out', join(work, 'y')).stderr, /unknown --arch "t5"/);
});

test('score --json: logprobs match the library and need no tokenizer with --ids', () => {
  const r = cli('score', '--model', llama, '--ids', '5,9,77,120,4', '--json');
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ids: number[]; logprobs: number[]; nll: number };
  const m = loadModel(llama);
  const want = score(m, [5, 9, 77, 120, 4]);
  m.dispose();
  assert.deepEqual(got.ids, [5, 9, 77, 120, 4]);
  assert.equal(got.logprobs.length, 4);
  got.logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - want.logprobs[i]!) < 1e-6));
  assert.ok(Math.abs(got.nll + got.logprobs.reduce((a, b) => a + b) / 4) < 1e-9);
  // Without a tokenizer file --ids still works; --text needs one.
  const bare = join(work, 'bare');
  initModel({ arch: 'gpt2', out: bare, layers: 1, hidden: 16, heads: 2, vocab: 300 });
  writeFileSync(join(bare, 'tokenizer.json'), '');  // unusable on purpose
  assert.equal(cli('score', '--model', bare, '--ids', '1,2,3', '--json').status, 0);
  const t = cli('score', '--model', bare, '--text', 'hi');
  assert.equal(t.status, 1);
  assert.match(t.stderr, /cannot load .*tokenizer\.json/);
  assert.match(cli('score', '--model', llama, '--ids', '1,x').stderr, /--ids must be comma-separated token ids \(decimal integers >= 0\), got "1,x" \(item 2 is "x"\)/);
  assert.match(cli('score', '--model', llama, '--ids', '1,999').stderr, /outside the vocabulary/);
});

test('generate: greedy is deterministic, streaming prints the same text, stop strings cut', () => {
  const a = cli('generate', '--model', llama, '--prompt', 'abc', '--max-new-tokens', '6');
  assert.equal(a.status, 0, a.stderr);
  const b = cli('generate', '--model', llama, '--prompt', 'abc', '--max-new-tokens', '6', '--stream');
  assert.equal(b.stdout, a.stdout);
  const s1 = cli('generate', '--model', llama, '--prompt', 'abc', '--sample', '--seed', '7', '--temperature', '1.5', '--top-p', '0.95');
  const s2 = cli('generate', '--model', llama, '--prompt', 'abc', '--sample', '--seed', '7', '--temperature', '1.5', '--top-p', '0.95');
  assert.equal(s1.stdout, s2.stdout);
  const full = a.stdout.replace(/\n$/, '');
  if (full.length >= 2) {
    const stop = full.slice(1, 2);
    const c = cli('generate', '--model', llama, '--prompt', 'abc', '--max-new-tokens', '6', '--stop', stop);
    assert.equal(c.stdout.replace(/\n$/, ''), full.slice(0, full.indexOf(stop)));
  }
  assert.equal(cli('generate', '--model', llama, '--prompt', 'x', '--chat', '--max-new-tokens', '2').status, 0);
  const bad = cli('generate', '--model', llama);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--prompt is required/);
  assert.match(cli('generate', '--model', llama, '--prompt', 'a', '--temperature', 'hot').stderr, /--temperature must be a decimal number >= 0\.0001, got "hot"/);
});

test('inspect lists tensors and the config; a bad file is a clear error with exit code 1', () => {
  const r = cli('inspect', llama);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /model\.layers\.0\.self_attn\.k_proj\.weight\s+float32\s+\[16, 32\]/);
  assert.match(r.stdout, /model_type: "llama"/);
  const j = JSON.parse(cli('inspect', join(llama, 'model.safetensors'), '--json').stdout) as { parameters: number };
  const m = loadModel(llama);
  assert.equal(j.parameters, m.numParameters());
  m.dispose();
  const bad = join(work, 'bad.safetensors');
  const good = readFileSync(join(llama, 'model.safetensors'));
  writeFileSync(bad, good.subarray(0, good.length - 10));
  const e = cli('inspect', bad);
  assert.equal(e.status, 1);
  assert.match(e.stderr, /adapterkit inspect: .*bad\.safetensors/);
  assert.match(cli('inspect', join(work, 'nope')).stderr, /does not exist/);
});

test('generate reads generation_config.json: max_length and every eos_token_id; flags win', async () => {
  const dir = join(work, 'llama-genconfig');
  cpSync(llama, dir, { recursive: true });
  const tok = HFTokenizer.fromDir(dir);
  const promptIds = await tok.encode('abc');
  const greedy = (...extra: string[]) => cli('generate', '--model', dir, '--prompt', 'abc', '--max-new-tokens', '6', ...extra);
  const six = greedy();
  assert.equal(six.status, 0, six.stderr);
  const ref = cli('score', '--model', dir, '--text', 'abc', '--json');  // the model runs
  assert.equal(ref.status, 0, ref.stderr);
  // max_length counts the prompt (HF): prompt + 2 -> two new tokens, when no flag says otherwise.
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ max_length: promptIds.length + 2 }));
  const two = cli('generate', '--model', dir, '--prompt', 'abc');
  assert.equal(two.status, 0, two.stderr);
  const twoIds = await tok.encode(two.stdout.replace(/\n$/, ''), { addSpecialTokens: false });
  assert.ok(twoIds.length <= 2 && six.stdout.startsWith(two.stdout.replace(/\n$/, '')), `${JSON.stringify(two.stdout)} vs ${JSON.stringify(six.stdout)}`);
  assert.equal(greedy().stdout, six.stdout, '--max-new-tokens wins over max_length');
  // Every id of an eos_token_id list stops: list the first greedy token (and an unrelated id).
  const first = (await tok.encode(six.stdout.replace(/\n$/, ''), { addSpecialTokens: false }))[0]!;
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [299, first] }));
  const stopped = greedy();
  assert.equal(stopped.status, 0, stopped.stderr);
  assert.ok(stopped.stdout.length < six.stdout.length, `stopped at the listed EOS: ${JSON.stringify(stopped.stdout)}`);
});
