// One rank of the process-group tests (test/distributed.test.ts), started twice by the test:
//   node dist/scripts/dist-worker.js MODE RANK WORLD PORT [OUT]
// MODE collectives: prints the results of each collective as JSON.
// MODE grads: rank-specific LoRA init, broadcast from rank 0, this rank's slice of a global batch,
//   then the fused gradient all-reduce; writes OUT-<rank>.safetensors (gradients, weights).
// MODE loop: all-reduces until killed (prints "ready" first). MODE stall: joins, then never calls a collective.
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import {
  loadModel, PeftModel, setNumThreads, tensor, tidy, initProcessGroup, destroyProcessGroup, broadcastParameters, allReduceGradients,
  shardRange, syntheticTask, collate, toTensors, lossParts, itemCount, writeSafetensors, type Tensor,
} from '../src/index.js';

const [mode, rankS, worldS, portS, out] = process.argv.slice(2);
const rank = Number(rankS);
const worldSize = Number(worldS);
setNumThreads(1);
const pg = initProcessGroup({ rank, worldSize, masterPort: Number(portS), timeoutMs: mode === 'stall' ? 5000 : 30000 });

if (mode === 'collectives') {
  const r: Record<string, unknown> = {};
  const v = (a: number[], dtype: 'float32' | 'int64' = 'float32') => tensor(a, { dtype });
  for (const op of ['sum', 'avg', 'max', 'min'] as const) r[op] = pg.allReduce(v([rank + 1, 10 * (rank + 1), -rank]), op).toArray();
  r.sumInt = pg.allReduce(v([rank + 1, 2 ** 40], 'int64'), 'sum').toArray();
  r.broadcast = pg.broadcast(v([rank, 100 + rank]), 1).toArray();
  r.allGather = pg.allGather(v([2 * rank, 2 * rank + 1])).map((t) => t.toArray());
  pg.barrier();
  console.log(JSON.stringify(r));
} else if (mode === 'grads') {
  const m = loadModel(join(fileURLToPath(new URL('../..', import.meta.url)), 'test/fixtures/hf-ref/llama'));
  // initLoraWeights false: B is random too, so every LoRA gradient is non-zero; seeds differ per rank.
  const peft = PeftModel.create(m, { r: 4, loraAlpha: 8, loraDropout: 0, targetModules: ['q_proj', 'v_proj'], initLoraWeights: false }, { seed: 3 + rank });
  const named = m.namedParameters().filter(([, t]) => t.requiresGrad);
  const params = named.map(([, t]) => t);
  broadcastParameters(pg, params);
  const { train } = syntheticTask(96, 8, 0);
  const count = itemCount('causal-lm', collate(train, { padId: 0 }).labels);
  const [a, b] = shardRange(train.length, rank, worldSize);
  tidy(() => {
    const t = toTensors(collate(train.slice(a, b), { padId: 0 }));
    lossParts('causal-lm', peft.forward({ inputIds: t.inputIds, attentionMask: t.attentionMask }).logits, t.labels).div(count).backward();
  });
  allReduceGradients(pg, params);
  const entries = new Map<string, Tensor>();
  for (const [n, p] of named) {
    entries.set(`grad.${n}`, p.grad!);
    entries.set(`weight.${n}`, p);
  }
  writeSafetensors(`${out}-${rank}.safetensors`, entries);
} else if (mode === 'loop') {
  console.log('ready');
  for (;;) {
    pg.allReduce(tensor([1, 2, 3]), 'sum');
    await new Promise((r) => setTimeout(r, 5));
  }
} else if (mode === 'stall') {
  console.log('ready');
  if (rank === 0) pg.allReduce(tensor([1]), 'sum');  // rank 1 never comes: times out
  else await new Promise((r) => setTimeout(r, 5600));  // just past rank 0's timeout, then leaves
}
destroyProcessGroup();
