// Runs the team's eager-PyTorch anchor (../shared/bench/torch_lora_gpt2.py) and parses its figures,
// so each benchmark prints ours and theirs from the same run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BLAS_CORETYPE_FORCED, OMP_WAIT_POLICY_SET } from '../src/tensor/native.js';

export interface AnchorResult {
  trainTokS: number;
  fwdTokS: number;
  line: string;
}

const SCRIPT = fileURLToPath(new URL('../../../shared/bench/torch_lora_gpt2.py', import.meta.url));

/**
 * The anchor's environment. 'user': as a PyTorch user runs it (without the two settings adapterkit
 * makes when its addon loads: OPENBLAS_CORETYPE and OMP_WAIT_POLICY). 'tuned': with them, so the
 * ratio measures the engines alone.
 */
export type AnchorEnv = 'user' | 'tuned';

function anchorEnv(kind: AnchorEnv): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (kind === 'user') {
    if (BLAS_CORETYPE_FORCED) delete env.OPENBLAS_CORETYPE;
    if (OMP_WAIT_POLICY_SET) delete env.OMP_WAIT_POLICY;
  }
  return env;
}

/** null (with the reason printed) when python3-torch or the script is missing. */
export function runAnchor(dtype: 'fp32' | 'bf16', args: string[] = [], kind: AnchorEnv = 'user'): AnchorResult | null {
  const py = process.env.ANCHOR_PYTHON ?? '/usr/bin/python3';
  if (!existsSync(SCRIPT)) {
    console.log(`anchor: ${SCRIPT} not found; skipping the PyTorch comparison`);
    return null;
  }
  const r = spawnSync(py, [SCRIPT, '--dtype', dtype, ...args], { encoding: 'utf8', env: anchorEnv(kind) });
  const m = /train_tok_s=([\d.]+) fwd_s=[\d.]+ fwd_tok_s=([\d.]+)/.exec(r.stdout ?? '');
  if (r.status !== 0 || !m) {
    console.log(`anchor: ${py} ${SCRIPT} failed (install python3-torch libopenblas0-pthread): ${(r.stderr ?? '').trim().split('\n').pop()}`);
    return null;
  }
  return { trainTokS: Number(m[1]), fwdTokS: Number(m[2]), line: r.stdout.trim().split('\n').pop()! };
}
