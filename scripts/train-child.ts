// A training run in a child process, for the kill / resume / signal tests (test/training.test.ts).
//   node dist/scripts/train-child.js OUT [--resume] [--slow] [--save-loop]
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { loadModel, PeftModel } from '../src/index.js';
import { Trainer, syntheticTask, saveCheckpoint } from '../src/train/index.js';

const [out, ...flags] = process.argv.slice(2);
const root = fileURLToPath(new URL('../..', import.meta.url));
const m = loadModel(join(root, 'test/fixtures/hf-ref/llama'));
const peft = PeftModel.create(m, { r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, { seed: 3 });
const { train } = syntheticTask(96, 48, 0);
const slow = flags.includes('--slow');
const tr = new Trainer({
  model: m, peft, train, collate: { padId: 0 },
  config: { lr: 5e-3, maxSteps: 12, batchSize: 8, gradAccum: 1, saveEvery: 1, outputDir: out!, progress: false, logEvery: 1, seed: 5 },
  resume: flags.includes('--resume'),
  log: (s) => console.log(s),
});
if (flags.includes('--save-loop')) {
  // Saves as fast as it can until killed: the kill lands inside a save sooner or later.
  const big = new Map([...m.namedParameters()].slice(0, 6));
  for (let i = 1; ; i++) {
    saveCheckpoint(join(out!, 'checkpoints'), { version: 1, step: i + process.pid * 1000, microStep: i, epoch: 0, loader: null, optimizerSteps: i, bestMetric: null, bestStep: null, evalsWithoutImprovement: 0, adapterRuntime: {}, tokensSeen: 0, config: {} }, big, new Map(), { keep: 2 });
    if (i === 1) (await import('node:fs')).appendFileSync(join(out!, 'metrics.jsonl'), '{"saved":1}\n');
  }
}
if (slow) {
  // Slow the loop down so a parent can signal it mid-run.
  const step = (tr as unknown as { optimizer: { step(): void } }).optimizer;
  const s0 = step.step.bind(step);
  let n = 0;
  step.step = () => { s0(); n++; console.log(`step ${n} `); const until = Date.now() + 150; while (Date.now() < until) { /* busy wait */ } };
}
const r = await tr.train();
console.log(`stopped: ${r.stopped} at step ${r.steps}`);
