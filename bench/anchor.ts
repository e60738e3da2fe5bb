// Runs the team's eager-PyTorch anchor (../shared/bench/torch_lora_gpt2.py) and parses its figures,
// so each benchmark prints ours and theirs from the same run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface AnchorResult {
  trainTokS: number;
  fwdTokS: number;
  line: string;
}

const SCRIPT = fileURLToPath(new URL('../../../shared/bench/torch_lora_gpt2.py', import.meta.url));

/** null (with the reason printed) when python3-torch or the script is missing. */
export function runAnchor(dtype: 'fp32' | 'bf16', args: string[] = []): AnchorResult | null {
  const py = process.env.ANCHOR_PYTHON ?? '/usr/bin/python3';
  if (!existsSync(SCRIPT)) {
    console.log(`anchor: ${SCRIPT} not found; skipping the PyTorch comparison`);
    return null;
  }
  // The anchor inherits this process's environment, OPENBLAS_CORETYPE included: the same BLAS kernels
  // as ours, so ratios measure the engines and not OpenBLAS's CPU detection.
  const r = spawnSync(py, [SCRIPT, '--dtype', dtype, ...args], { encoding: 'utf8', env: process.env });
  const m = /train_tok_s=([\d.]+) fwd_s=[\d.]+ fwd_tok_s=([\d.]+)/.exec(r.stdout ?? '');
  if (r.status !== 0 || !m) {
    console.log(`anchor: ${py} ${SCRIPT} failed (install python3-torch libopenblas0-pthread): ${(r.stderr ?? '').trim().split('\n').pop()}`);
    return null;
  }
  return { trainTokS: Number(m[1]), fwdTokS: Number(m[2]), line: r.stdout.trim().split('\n').pop()! };
}
