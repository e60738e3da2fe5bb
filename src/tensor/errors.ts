// TorchError: every failure of a tensor op, native or not, names the op, its inputs and the fix.

export class TorchError extends Error {
  override readonly name = 'TorchError';
  /** The adapterkit op that failed, e.g. "matmul". */
  readonly op: string;
  /** Inputs as `dtype[shape]@device` strings (or scalars), in call order. */
  readonly inputs: readonly string[];
  /** libtorch's own message (or adapterkit's, for checks done in TypeScript). */
  readonly detail: string;
  readonly hint: string | undefined;

  constructor(op: string, inputs: readonly string[], detail: string, hint?: string) {
    const h = hint ?? hintFor(detail);
    super(`${op}(${inputs.join(', ')}): ${detail}${h ? `\n  help: ${h}` : ''}`);
    this.op = op;
    this.inputs = inputs;
    this.detail = detail;
    this.hint = h;
  }
}

function hintFor(msg: string): string | undefined {
  if (/disposed/.test(msg)) return 'the tensor was freed by dispose() or at the end of a tidy()/scope(); return it from the scope or keep() it';
  if (/must match the size|shape .* is invalid|cannot be multiplied|size mismatch|Sizes of tensors must match/i.test(msg)) return 'check the shapes above; elementwise ops broadcast from the right, matmul needs (.., n, k) @ (.., k, m)';
  if (/same device/i.test(msg)) return 'move every input to one device with .to(device)';
  if (/expected scalar type|dtype|Found dtype|result type/i.test(msg)) return 'cast the inputs to one dtype with .to(dtype)';
  if (/out of (range|bounds)/i.test(msg)) return 'an index is outside the dimension it indexes';
  if (/leaf Variable that requires grad/i.test(msg)) return 'update parameters inside noGrad(() => ...)';
  if (/view size is not compatible/i.test(msg)) return 'use reshape() (which copies when needed) or call contiguous() first';
  return undefined;
}
