// Quantized base weights (nf4 / fp4 / int8 / int4), checked against references computed here in
// plain JS from the bitsandbytes layout (codes typed in from the QLoRA paper / bitsandbytes, nearest
// rounding, nibble order, double quantization), never by re-running the implementation's code paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tidy, noGrad, tensor, randn, fromBytes, type Tensor } from '../src/tensor/index.js';
import { Linear, Conv1D } from '../src/nn/layers.js';
import { NF4_CODE, FP4_CODE, dynamicMap } from '../src/quant/codes.js';
import { QuantizedWeight, int4Group } from '../src/quant/weight.js';
import { dequantize, quantLinear, type QuantSpec } from '../src/tensor/quant.js';
import { QuantLinear } from '../src/quant/linear.js';
import { weightMemory } from '../src/quant/model.js';
import { loadModel, saveModel } from '../src/models/load.js';
import { defaultModelDir } from '../src/models/default-model.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';

const f = Math.fround;

// ---- reference constants, typed in from bitsandbytes (functional.py) / QLoRA appendix E ----
const NF4_REF = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
];
const FP4_REF = [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3].map((v) => v / 12);

// ---- plain-JS helpers ----
const f32 = (t: Tensor): Float32Array => Float32Array.from(t.to('float32', 'cpu').data() as Float32Array);
const u8 = (t: Tensor): Uint8Array => { assert.equal(t.dtype, 'uint8'); return Uint8Array.from(t.data() as Uint8Array); };
const i8 = (t: Tensor): Int8Array => { assert.equal(t.dtype, 'int8'); return Int8Array.from(t.data() as Int8Array); };
/** Round half to even (torch.round / nearbyint), for quantizer references. */
const rne = (x: number): number => {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 ? 2 * Math.round(x / 2) : r;
};
/** First index of the nearest code (argmin). */
const nearestIdx = (code: readonly number[], v: number): number => {
  let best = 0;
  for (let k = 1; k < code.length; k++) if (Math.abs(v - code[k]!) < Math.abs(v - code[best]!)) best = k;
  return best;
};
const maxHalfGap = (code: readonly number[]): number => {
  const s = [...code].sort((a, b) => a - b);
  let g = 0;
  for (let i = 1; i < s.length; i++) g = Math.max(g, (s[i]! - s[i - 1]!) / 2);
  return g;
};
/** float32 -> bfloat16 (round to nearest even) -> float32, bit-exact. */
const toBf16 = (x: number): number => {
  const b = new Float32Array([x]);
  const u = new Uint32Array(b.buffer);
  const v = u[0]!;
  u[0] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) << 16;
  return b[0]!;
};
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const firstMismatch = (a: ArrayLike<number>, b: ArrayLike<number>): string => {
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i]) && a[i] !== b[i]) return `element ${i}: ${a[i]} vs ${b[i]}`;
  return a.length === b.length ? 'none' : `length ${a.length} vs ${b.length}`;
};
const assertExact = (got: ArrayLike<number>, want: ArrayLike<number>, what: string) => {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) assert.fail(`${what}: ${firstMismatch(got, want)}`);
};

/** The block scale of 4-bit block b (float32 arithmetic, the bitsandbytes formula). */
function blockScales(s: QuantSpec): Float32Array {
  const nb = s.format === 'int8' ? s.out : Math.ceil((s.out * s.in) / s.blocksize);
  if (!s.nestedAbsmax) {
    const a = f32(s.absmax);
    assert.equal(a.length, nb);
    return a;
  }
  const q = u8(s.absmax);
  const nam = f32(s.nestedAbsmax);
  const nc = f32(s.nestedCode!);
  const nbs = s.nestedBlocksize ?? 256;
  const off = f(s.offset ?? 0);
  assert.equal(q.length, nb);
  return Float32Array.from(q, (qi, b) => f(f(nc[qi]! * nam[Math.floor(b / nbs)]!) + off));
}

/** An independent dequantizer reading the raw buffers (bitsandbytes layout: even element in the high nibble). */
function jsDequant(s: QuantSpec): Float32Array {
  const n = s.out * s.in;
  const out = new Float32Array(n);
  if (s.format === 'int8') {
    const q = i8(s.data);
    const scb = f32(s.absmax);
    for (let e = 0; e < n; e++) out[e] = f(f(q[e]! * scb[Math.floor(e / s.in)]!) / 127);
    return out;
  }
  const bytes = u8(s.data);
  assert.equal(bytes.length, Math.ceil(n / 2));
  const scale = blockScales(s);
  const code = s.format === 'int4' ? null : f32(s.code!);
  const zeros = s.format === 'int4' ? u8(s.zeros!) : null;
  for (let e = 0; e < n; e++) {
    const byte = bytes[e >> 1]!;
    const nib = e % 2 === 0 ? byte >> 4 : byte & 15;
    const b = Math.floor(e / s.blocksize);
    out[e] = zeros ? f((nib - zeros[b]!) * scale[b]!) : f(code![nib]! * scale[b]!);
  }
  return out;
}

/** The true (float32) absmax of each block of `bs` flat elements. */
function trueAbsmax(w: Float32Array, bs: number): Float32Array {
  const nb = Math.ceil(w.length / bs);
  const a = new Float32Array(nb);
  for (let e = 0; e < w.length; e++) a[Math.floor(e / bs)] = Math.max(a[Math.floor(e / bs)]!, Math.abs(w[e]!));
  return a;
}

// =================================================================================================

test('code books: NF4 and FP4 equal the bitsandbytes constants; dynamicMap is bitsandbytes\' signed 8-bit map', () => {
  assert.equal(NF4_CODE.length, 16);
  assertExact(NF4_CODE, NF4_REF, 'NF4_CODE');
  // exactly representable in float32 (bitsandbytes ships float32 values)
  for (const v of NF4_CODE) assert.equal(f(v), v);
  assert.equal(FP4_CODE.length, 16);
  assertExact(FP4_CODE, FP4_REF, 'FP4_CODE');
  assert.ok(Object.is(FP4_CODE[8], -0), 'FP4 index 8 is negative zero (sign bit)');
  const m = dynamicMap();
  assert.equal(m.length, 256);
  for (let i = 1; i < 256; i++) assert.ok(m[i - 1]! <= m[i]!, `sorted at ${i}`);
  assert.ok(m.every((v) => v >= -1 && v <= 1 && f(v) === v));
  assert.ok(m.includes(0) && m.includes(1) && !m.includes(-1));
  assert.equal(new Set(m).size, 256, 'no duplicate values');
  // bitsandbytes create_dynamic_map(signed=True): 10^(i-6) * means of linspace(0.1, 1, 2^i + 1), i = 0..6, +/-.
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.abs(b);
  assert.ok(close(m.find((v) => v > 0)!, 5.5e-7), `smallest positive ${m.find((v) => v > 0)}`);
  assert.ok(close(m[254]!, 1 - 0.9 / 128), `largest below 1 ${m[254]}`);
  assert.ok(close(m[0]!, -(1 - 0.9 / 128)), `most negative ${m[0]}`);
  for (let i = 0; i <= 6; i++) {
    const items = 2 ** i;
    const scale = 10 ** (i - 6);
    const count = m.filter((v) => v > 0 && v >= scale * 0.1 - 1e-12 && v < scale).length;
    assert.equal(count, items, `decade ${i}`);
  }
});

test('nf4 / fp4 on a hand-built 2x4 weight (blocksize 4, no double quant): packed bytes, absmax, values', () => tidy(() => {
  const w = [0.5, -1.0, 0.25, 0.0, /* row 1 */ -4, 3, 0.6, -1.5];
  const wt = tensor(w, { shape: [2, 4], dtype: 'float32' });
  // nf4 by hand: block 0 absmax 1 -> 0.5:idx12 (0.4407), -1:idx0, 0.25:idx10 (0.2461), 0:idx7
  //              block 1 absmax 4 -> -1:idx0, 0.75:idx14 (0.7230), 0.15:idx9 (0.1609), -0.375:idx3 (-0.3949)
  const nf = QuantizedWeight.quantize(wt, { format: 'nf4', blocksize: 4, doubleQuant: false });
  assert.equal(nf.spec.nestedAbsmax, undefined);
  assert.deepEqual([...u8(nf.spec.data)], [(12 << 4) | 0, (10 << 4) | 7, (0 << 4) | 14, (9 << 4) | 3]);
  assert.deepEqual([...f32(nf.spec.absmax)], [1, 4]);
  assertExact(f32(nf.spec.code!), NF4_REF.map(f), 'stored nf4 quant map');
  // the same bytes from a plain-JS nearest-code quantizer
  const jsBytes = (code: readonly number[]) => {
    const idx = w.map((v, e) => nearestIdx(code, Math.max(-1, Math.min(1, v / (e < 4 ? 1 : 4)))));
    return [0, 1, 2, 3].map((k) => (idx[2 * k]! << 4) | idx[2 * k + 1]!);
  };
  assert.deepEqual([...u8(nf.spec.data)], jsBytes(NF4_REF));
  const nfWant = [f(NF4_REF[12]!), -1, f(NF4_REF[10]!), 0, -4, f(f(NF4_REF[14]!) * 4), f(f(NF4_REF[9]!) * 4), f(f(NF4_REF[3]!) * 4)];
  assertExact(f32(nf.dequantize('float32')), nfWant, 'nf4 dequantized');
  assert.deepEqual(nf.dequantize('float32').shape, [2, 4]);

  // fp4 by hand: 0.5:idx5 (6/12), -1:idx11 (-12/12), 0.25:idx7 (3/12), 0:idx0;
  //              -1:idx11, 0.75: 8/12=.667 (idx2) vs 1 -> idx2, 0.15: 2/12=.1667 idx6, -0.375: -4/12 idx12
  const fp = QuantizedWeight.quantize(wt, { format: 'fp4', blocksize: 4, doubleQuant: false });
  assert.deepEqual([...u8(fp.spec.data)], [(5 << 4) | 11, (7 << 4) | 0, (11 << 4) | 2, (6 << 4) | 12]);
  assert.deepEqual([...u8(fp.spec.data)], jsBytes(FP4_REF));
  assert.deepEqual([...f32(fp.spec.absmax)], [1, 4]);
  assertExact(f32(fp.dequantize('float32')), [0.5, -1, 0.25, 0, -4, f(f(8 / 12) * 4), f(f(2 / 12) * 4), f(f(-4 / 12) * 4)], 'fp4 dequantized');

  // an odd element count: 1x5, blocksize 4 -> blocks [4], [1]; 3 bytes, the last low nibble is padding
  const odd = QuantizedWeight.quantize(tensor([[0.5, -1.0, 0.25, 0.0, -0.3]], { dtype: 'float32' }), { format: 'nf4', blocksize: 4, doubleQuant: false });
  assert.equal(odd.spec.data.numel, 3);
  assert.deepEqual([...u8(odd.spec.data)].slice(0, 2), [(12 << 4) | 0, (10 << 4) | 7]);
  assert.equal(u8(odd.spec.data)[2]! >> 4, 0, 'lone element -0.3 / 0.3 = -1 -> idx0');
  assert.deepEqual([...f32(odd.spec.absmax)], [1, f(0.3)]);
  assertExact(f32(odd.dequantize('float32')), [f(NF4_REF[12]!), -1, f(NF4_REF[10]!), 0, -f(0.3)], 'odd nf4');
  // any float dtype is read as float32: a bfloat16 weight quantizes as its float32 upcast
  const wb = randn([4, 32], { seed: 5 }).to('bfloat16');
  const qb = QuantizedWeight.quantize(wb, { format: 'nf4', blocksize: 8 });
  const qf = QuantizedWeight.quantize(wb.to('float32'), { format: 'nf4', blocksize: 8 });
  assert.deepEqual([...u8(qb.spec.data)], [...u8(qf.spec.data)]);
  assertExact(f32(qb.dequantize('float32')), f32(qf.dequantize('float32')), 'bf16 input');
  [nf, fp, odd, qb, qf].forEach((q) => q.dispose());
}));

test('int8 and int4 on hand-built weights: codes, scales, zero points, values', () => tidy(() => {
  // int8: q = round(w * 127 / rowAbsmax)
  const w8 = [1, -0.4, 0.25, 0.1, /* row 1 */ -2, 0.9, 0.3, 0];
  const q8 = QuantizedWeight.quantize(tensor(w8, { shape: [2, 4], dtype: 'float32' }), { format: 'int8' });
  assert.deepEqual([...i8(q8.spec.data)], [127, -51, 32, 13, -127, 57, 19, 0]);
  const jsQ8 = w8.map((v, e) => rne(f(v) * (127 / (e < 4 ? 1 : 2))));
  assert.deepEqual([...i8(q8.spec.data)], jsQ8);
  assert.deepEqual([...f32(q8.spec.absmax)], [1, 2]);
  const want8 = [127, -51, 32, 13, -127, 57, 19, 0].map((q, e) => (q * (e < 4 ? 1 : 2)) / 127);
  const got8 = f32(q8.dequantize('float32'));
  for (let i = 0; i < 8; i++) assert.ok(Math.abs(got8[i]! - want8[i]!) <= 1e-7 * Math.max(1, Math.abs(want8[i]!)), `int8 value ${i}: ${got8[i]} vs ${want8[i]}`);

  // int4, groups of 4: lo = min(min, 0), hi = max(max, 0), scale = (hi - lo)/15, zero = round(-lo/scale)
  const w4 = [0.3, -0.6, 0.9, 0.0, /* g1 */ 0.2, 0.5, 0.8, 0.6, /* g2: all zero */ 0, 0, 0, 0];
  const q4 = QuantizedWeight.quantize(tensor(w4, { shape: [1, 12], dtype: 'float32' }), { format: 'int4', blocksize: 4 });
  assert.equal(q4.spec.blocksize, 4);
  const s0 = f(f(f(0.9) - f(-0.6)) / 15);
  const s1 = f(f(0.8) / 15);
  const s2 = f(2 / 15);
  assertExact(f32(q4.spec.absmax), [s0, s1, s2], 'int4 scales');
  // all-zero group: lo = -1, hi = 1, scale = float32(2/15), zero = round(float32(1 / scale)) = round(7.4999995) = 7
  assert.equal(rne(f(1 / s2)), 7);
  assert.deepEqual([...u8(q4.spec.zeros!)], [6, 0, 7]);
  // g0: 0.3/0.1+6=9, -0.6 -> 0, 0.9 -> 15, 0 -> 6; g1: 3.75->4, 9.375->9, 15, 11.25->11; g2: 7 everywhere
  assert.deepEqual([...u8(q4.spec.data)], [(9 << 4) | 0, (15 << 4) | 6, (4 << 4) | 9, (15 << 4) | 11, 0x77, 0x77]);
  const scales = [s0, s1, s2];
  const zs = [6, 0, 7];
  const jsCodes = w4.map((v, e) => {
    const g = Math.floor(e / 4);
    return Math.min(15, Math.max(0, rne(f(f(v) / scales[g]!)) + zs[g]!));
  });
  assert.deepEqual([...u8(q4.spec.data)], [0, 1, 2, 3, 4, 5].map((k) => (jsCodes[2 * k]! << 4) | jsCodes[2 * k + 1]!));
  const want4 = [9, 0, 15, 6, 4, 9, 15, 11, 7, 7, 7, 7].map((q, e) => f((q - zs[Math.floor(e / 4)]!) * scales[Math.floor(e / 4)]!));
  assertExact(f32(q4.dequantize('float32')), want4, 'int4 values');
  // int4 groups: the largest even divisor of `in` not above the request
  assert.equal(int4Group(688, 128), 86);
  assert.equal(int4Group(12, 4), 4);
  assert.equal(int4Group(256, 128), 128);
  assert.throws(() => int4Group(37, 4), /even/);
  [q8, q4].forEach((q) => q.dispose());
}));

test('error bounds on randn weights (nf4 / fp4 with and without double quant, int8, int4) and nearest rounding', () => tidy(() => {
  const [O, I] = [64, 256];
  const wT = randn([O, I], { seed: 11 });
  const w = f32(wT);
  const mae: Record<string, number> = {};
  for (const format of ['nf4', 'fp4'] as const) {
    const ref = format === 'nf4' ? NF4_REF : FP4_REF;
    const hg = maxHalfGap(ref);
    for (const dq of [false, true]) {
      const q = QuantizedWeight.quantize(wT, { format, doubleQuant: dq });
      const s = q.spec;
      assert.equal(s.blocksize, 64);
      const a = trueAbsmax(w, 64);
      const deq = f32(q.dequantize('float32'));
      const aDeq = blockScales(s);
      if (!dq) assertExact(f32(s.absmax), a, `${format} absmax`);
      else {
        // double quantization: offset = mean of block absmax; nested absmax per 256 blocks; 8-bit nearest codes
        assert.equal(s.nestedBlocksize, 256);
        const mean = a.reduce((x, y) => x + y, 0) / a.length;
        assert.ok(Math.abs(s.offset! - mean) <= 1e-6 * mean, `offset ${s.offset} vs mean ${mean}`);
        const nam = f32(s.nestedAbsmax!);
        assert.equal(nam.length, Math.ceil(a.length / 256));
        const nc = [...f32(s.nestedCode!)];
        assert.equal(nc.length, 256);
        const nhg = maxHalfGap(nc);
        assert.ok(nhg < 0.0071 && nhg > 0.007, `dynamic map max half gap ${nhg}`);
        const qs = u8(s.absmax);
        for (let b = 0; b < a.length; b++) {
          const m = nam[Math.floor(b / 256)]!;
          const x = (a[b]! - f(s.offset!)) / m;
          const dBest = Math.min(...nc.map((c) => Math.abs(x - c)));
          assert.ok(Math.abs(x - nc[qs[b]!]!) <= dBest + 1e-6, `nested code of block ${b} is not the nearest`);
          assert.ok(Math.abs(aDeq[b]! - a[b]!) <= m * nhg * (1 + 1e-5) + 1e-7, `nested scale error of block ${b}`);
        }
        for (let j = 0; j < nam.length; j++) {
          let mm = 0;
          for (let b = j * 256; b < Math.min(a.length, (j + 1) * 256); b++) mm = Math.max(mm, Math.abs(a[b]! - f(s.offset!)));
          assert.ok(Math.abs(nam[j]! - mm) <= 1e-6 * mm, `nested absmax ${j}`);
        }
      }
      const codes = [...f32(s.code!)];
      const bytes = u8(s.data);
      let sum = 0;
      for (let e = 0; e < w.length; e++) {
        const b = Math.floor(e / 64);
        const err = Math.abs(w[e]! - deq[e]!);
        sum += err;
        // |w - c*a'| <= |w - c*a| + |c| |a - a'| <= a * halfGap + |a - a'|
        const bound = a[b]! * hg + Math.abs(a[b]! - aDeq[b]!) + 1e-6 * a[b]!;
        if (err > bound) assert.fail(`${format} dq=${dq}: element ${e} error ${err} > bound ${bound}`);
        // the chosen code is the nearest to clamp(w / absmax, -1, 1)
        const nib = e % 2 === 0 ? bytes[e >> 1]! >> 4 : bytes[e >> 1]! & 15;
        const x = Math.max(-1, Math.min(1, w[e]! / a[b]!));
        const dBest = Math.min(...codes.map((c) => Math.abs(x - c)));
        if (Math.abs(x - codes[nib]!) > dBest + 1e-6) assert.fail(`${format}: element ${e} code ${nib} is not the nearest to ${x}`);
      }
      mae[`${format}${dq ? '+dq' : ''}`] = sum / w.length;
      q.dispose();
    }
  }
  {
    const q = QuantizedWeight.quantize(wT, { format: 'int8' });
    const deq = f32(q.dequantize('float32'));
    const codes = i8(q.spec.data);
    const scb = f32(q.spec.absmax);
    let sum = 0;
    for (let r = 0; r < O; r++) {
      let m = 0;
      for (let c = 0; c < I; c++) m = Math.max(m, Math.abs(w[r * I + c]!));
      assert.equal(scb[r], m, `int8 row ${r} absmax`);
      for (let c = 0; c < I; c++) {
        const e = r * I + c;
        const err = Math.abs(w[e]! - deq[e]!);
        sum += err;
        if (err > m / 254 + 1e-6 * m) assert.fail(`int8 element ${e} error ${err} > ${m / 254}`);
        if (Math.abs(codes[e]! - (w[e]! * 127) / m) > 0.5 + 1e-4) assert.fail(`int8 element ${e}: code ${codes[e]} is not round(${(w[e]! * 127) / m})`);
      }
    }
    mae.int8 = sum / w.length;
    q.dispose();
  }
  {
    const q = QuantizedWeight.quantize(wT, { format: 'int4', blocksize: 64 });
    assert.equal(q.spec.blocksize, 64);
    const deq = f32(q.dequantize('float32'));
    const sc = f32(q.spec.absmax);
    const zs = u8(q.spec.zeros!);
    let sum = 0;
    for (let g = 0; g < (O * I) / 64; g++) {
      let lo = 0, hi = 0;
      for (let e = g * 64; e < (g + 1) * 64; e++) { lo = Math.min(lo, w[e]!); hi = Math.max(hi, w[e]!); }
      const s = f(f(hi - lo) / 15);
      assert.ok(Math.abs(sc[g]! - s) <= 1e-7 * s, `int4 group ${g} scale ${sc[g]} vs ${s}`);
      assert.equal(zs[g], rne(f(-lo / sc[g]!)), `int4 group ${g} zero`);
      for (let e = g * 64; e < (g + 1) * 64; e++) {
        const err = Math.abs(w[e]! - deq[e]!);
        sum += err;
        if (err > s / 2 + 1e-6 * s) assert.fail(`int4 element ${e} error ${err} > ${s / 2}`);
      }
    }
    mae.int4 = sum / w.length;
    q.dispose();
  }
  assert.ok(mae.int8! < mae.nf4!, `int8 ${mae.int8} < nf4 ${mae.nf4}`);
  assert.ok(mae['nf4+dq']! < mae['fp4+dq']!, `nf4 ${mae['nf4+dq']} < fp4 ${mae['fp4+dq']} on Gaussian data`);
  assert.ok(mae['nf4+dq']! < 1.05 * mae.nf4!, `double quantization costs little: ${mae['nf4+dq']} vs ${mae.nf4}`);
}));

test('sizes: bytes() and bitsPerWeight() count packed data, scales and maps', () => tidy(() => {
  const w = randn([64, 256], { seed: 3 });
  const nf = QuantizedWeight.quantize(w, { format: 'nf4' });
  // 8192 packed bytes + 256 uint8 scales + 16 float code + 1 float nested absmax + 256 float nested map
  const want = (64 * 256) / 2 + 256 + 16 * 4 + 1 * 4 + 256 * 4;
  assert.equal(nf.bytes(), want);
  assert.ok(Math.abs(nf.bitsPerWeight() - (8 * want) / (64 * 256)) < 1e-12);
  const nf2 = QuantizedWeight.quantize(w, { format: 'nf4', doubleQuant: false });
  assert.equal(nf2.bytes(), 8192 + 256 * 4 + 64);
  const i8q = QuantizedWeight.quantize(w, { format: 'int8' });
  assert.equal(i8q.bytes(), 64 * 256 + 64 * 4);
  const i4 = QuantizedWeight.quantize(w, { format: 'int4' });
  assert.equal(i4.bytes(), 8192 + 128 * 4 + 128);
  [nf, nf2, i8q, i4].forEach((q) => q.dispose());
}));

test('a plain-JS dequantizer equals dequantize() exactly (odd sizes, double quant, box, bf16/f64, reference path)', () => tidy(() => {
  const cases: [string, () => QuantizedWeight][] = [
    ['nf4 3x37 bs4', () => QuantizedWeight.quantize(randn([3, 37], { seed: 1 }), { format: 'nf4', blocksize: 4, doubleQuant: false })],
    ['nf4 3x37 bs4 dq', () => QuantizedWeight.quantize(randn([3, 37], { seed: 2 }), { format: 'nf4', blocksize: 4 })],
    ['nf4 40x500 dq (several nested blocks)', () => QuantizedWeight.quantize(randn([40, 500], { seed: 3 }).mul(0.05), { format: 'nf4' })],
    ['fp4 5x33 bs6 dq', () => QuantizedWeight.quantize(randn([5, 33], { seed: 4 }), { format: 'fp4', blocksize: 6 })],
    ['fp4 7x64', () => QuantizedWeight.quantize(randn([7, 64], { seed: 5 }), { format: 'fp4', doubleQuant: false })],
    ['int4 5x36 g4', () => QuantizedWeight.quantize(randn([5, 36], { seed: 6 }), { format: 'int4', blocksize: 4 })],
    ['int4 9x256', () => QuantizedWeight.quantize(randn([9, 256], { seed: 7 }).add(0.3), { format: 'int4' })],
    ['int8 7x37', () => QuantizedWeight.quantize(randn([7, 37], { seed: 8 }), { format: 'int8' })],
  ];
  const boxes = (O: number, I: number): [number, number, number, number][] => [
    [0, 1, 0, 1], [O - 1, O, I - 1, I], [Math.min(1, O - 1), O, 3, Math.min(I, 18)], [0, O, 1, I - 2], [Math.floor(O / 2), O, 5, 6],
  ];
  for (const [name, make] of cases) {
    const q = make();
    const s = q.spec;
    const ref = jsDequant(s);
    const got = f32(dequantize(s, 'float32'));
    if (s.format === 'int8') {
      // value = q * scb / 127; allow the order of the float32 operations (q*scb)/127 vs q*(scb/127) one ulp
      for (let i = 0; i < ref.length; i++) if (Math.abs(got[i]! - ref[i]!) > 2.4e-7 * Math.abs(ref[i]!)) assert.fail(`${name}: ${firstMismatch(got, ref)}`);
    } else assertExact(got, ref, name);
    assertExact(f32(dequantize(s, 'float32', { reference: true })), got, `${name} reference path`);
    assertExact(f32(dequantize(s, 'bfloat16')), Float32Array.from(got, toBf16), `${name} bfloat16`);
    assertExact(Float64Array.from(dequantize(s, 'float64').data() as Float64Array), got, `${name} float64`);
    for (const box of boxes(s.out, s.in)) {
      const [r0, r1, c0, c1] = box;
      const want: number[] = [];
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) want.push(got[r * s.in + c]!);
      const t = dequantize(s, 'float32', { box });
      assert.deepEqual(t.shape, [r1 - r0, c1 - c0]);
      assertExact(f32(t), want, `${name} box ${box}`);
      assertExact(f32(dequantize(s, 'float32', { box, reference: true })), want, `${name} box ${box} reference`);
    }
    assert.throws(() => dequantize(s, 'float32', { box: [0, s.out + 1, 0, 1] }), /box/);
    assert.throws(() => dequantize(s, 'float32', { box: [0, 1, 2, 2] }), /box/);
    // fromSpec accepts the (valid) spec of a fresh copy and dequantizes the same
    const c = q.clone();
    const again = QuantizedWeight.fromSpec(c.spec);
    assertExact(f32(again.dequantize('float32')), got, `${name} fromSpec`);
    again.dispose();
    q.dispose();
  }
}));

// The kernel tiles at 2^22 elements (native/quant.cc kTileElems): 4200 x 1024 takes two row tiles forward and two column slabs backward.
test('fused quantLinear equals dequantize-then-matmul (multi-tile and small), forward and input gradient', () => tidy(() => {
  for (const [O, I, format] of [[4200, 1024, 'nf4'], [4200, 1024, 'int8'], [4160, 1024, 'int4'], [5, 36, 'fp4']] as const) {
    const q = QuantizedWeight.quantize(randn([O, I], { seed: O + I }).mul(0.05), { format, blocksize: format === 'int4' ? 128 : undefined });
    const deqF = q.dequantize('float32');
    const x = randn([2, 3, I], { seed: 21 });
    const y = noGrad(() => quantLinear(x, q.spec));
    assert.deepEqual(y.shape, [2, 3, O]);
    const yRef = x.matmul(deqF.transpose(0, 1));
    const scale = yRef.abs().max().item();
    const d32 = y.sub(yRef).abs().max().item();
    assert.ok(d32 <= 2e-6 * scale, `${format} [${O}, ${I}] float32 forward diff ${d32} (scale ${scale})`);
    // bfloat16: the kernel dequantizes straight to bf16
    const xb = x.to('bfloat16');
    const yb = noGrad(() => quantLinear(xb, q.spec));
    assert.equal(yb.dtype, 'bfloat16');
    const ybRef = xb.matmul(q.dequantize('bfloat16').transpose(0, 1));
    const db = yb.to('float32').sub(ybRef.to('float32')).abs().max().item();
    assert.ok(db <= 2e-2 * scale, `${format} bf16 forward diff ${db} (scale ${scale})`);
    // gradient w.r.t. x: g @ W
    const xg = x.detach().clone().requiresGrad_();
    const g = randn([2, 3, O], { seed: 22 });
    quantLinear(xg, q.spec).backward(g);
    const gx = xg.grad!;
    const gxRef = g.reshape(-1, O).matmul(deqF).reshape(2, 3, I);
    const gscale = gxRef.abs().max().item();
    const dg = gx.sub(gxRef).abs().max().item();
    assert.ok(dg <= 5e-6 * gscale, `${format} [${O}, ${I}] input gradient diff ${dg} (scale ${gscale})`);
    q.dispose();
  }
  // finite differences in float64 on a tiny case: the op is linear in x, so central differences are exact up to rounding
  const q = QuantizedWeight.quantize(randn([3, 8], { seed: 9 }), { format: 'nf4', blocksize: 4 });
  const x = randn([2, 8], { seed: 10 }).to('float64');
  const xg = x.clone().requiresGrad_();
  const y = quantLinear(xg, q.spec);
  assert.equal(y.dtype, 'float64');
  const wv = randn([2, 3], { seed: 12 }).to('float64');
  y.mul(wv).sum().backward();
  const grad = [...(xg.grad!.data() as Float64Array)];
  const xs = [...(x.data() as Float64Array)];
  const loss = (vals: number[]) => noGrad(() => quantLinear(tensor(vals, { shape: [2, 8], dtype: 'float64' }), q.spec).mul(wv).sum().item());
  const h = 1e-4;
  for (let i = 0; i < xs.length; i++) {
    const p = [...xs]; p[i]! += h;
    const m = [...xs]; m[i]! -= h;
    const fd = (loss(p) - loss(m)) / (2 * h);
    assert.ok(Math.abs(fd - grad[i]!) <= 1e-8 * Math.max(1, Math.abs(fd)), `fd ${i}: ${fd} vs ${grad[i]}`);
  }
  // ... and the analytic gradient is g @ W with W from the JS dequantizer
  const W = jsDequant(q.spec);
  const wvs = [...(wv.data() as Float64Array)];
  for (let n = 0; n < 2; n++) for (let c = 0; c < 8; c++) {
    let s = 0;
    for (let o = 0; o < 3; o++) s += wvs[n * 3 + o]! * W[o * 8 + c]!;
    assert.ok(Math.abs(s - grad[n * 8 + c]!) <= 1e-12 * Math.max(1, Math.abs(s)), `analytic grad [${n}, ${c}]`);
  }
  q.dispose();
}));

test('QuantLinear.fromLayer on Linear and Conv1D: outputs, frozen weight, requantize on set, exact backup/restore', () => tidy(() => {
  const [I, O] = [48, 20];
  const lin = new Linear(I, O);
  lin.setParameter('weight', randn([O, I], { seed: 30 }).mul(0.1), false);
  lin.setParameter('bias', randn([O], { seed: 31 }), false);
  const conv = new Conv1D(I, O);
  conv.setParameter('weight', randn([I, O], { seed: 32 }).mul(0.1), false);
  conv.setParameter('bias', randn([O], { seed: 33 }), false);
  const x = randn([4, I], { seed: 34 });
  for (const [name, layer] of [['Linear', lin], ['Conv1D', conv]] as const) {
    const wOut = layer instanceof Conv1D ? layer.weight.transpose(0, 1).contiguous() : layer.weight;  // (O, I)
    const ql = QuantLinear.fromLayer(layer, { format: 'nf4', blocksize: 16, doubleQuant: false });
    assert.equal(ql.inFeatures, I);
    assert.equal(ql.outFeatures, O);
    const deq = ql.weight;
    assert.deepEqual(deq.shape, [O, I]);
    assert.equal(deq.requiresGrad, false);
    // the stored weight is the (out, in) one, quantized: each element within a block's half gap
    const wv = f32(wOut), dv = f32(deq);
    const a = trueAbsmax(wv, 16);
    for (let e = 0; e < wv.length; e++) assert.ok(Math.abs(wv[e]! - dv[e]!) <= a[Math.floor(e / 16)]! * maxHalfGap(NF4_REF) * (1 + 1e-6), `${name} weight ${e}`);
    assertExact(f32(deq), jsDequant(ql.spec()), `${name} weight getter vs JS dequantizer`);
    // forward = the layer with its weight replaced by the dequantized one
    const ref = new Linear(I, O);
    ref.setParameter('weight', deq.clone(), false);
    ref.setParameter('bias', layer.bias!.clone(), false);
    const y = noGrad(() => ql.forward(x));
    const yRef = noGrad(() => ref.forward(x));
    assert.ok(y.sub(yRef).abs().max().item() <= 1e-5, `${name} forward`);
    const y2 = noGrad(() => layer.forward(x));
    assert.ok(y.sub(y2).abs().max().item() < 0.2, `${name} forward close to the float layer`);
    // no trainable weight: not a parameter; gradients reach the input only
    assert.ok(!ql.namedParameters().some(([n]) => n === 'weight'), `${name}: weight must not be a parameter`);
    assert.ok(ql.namedParameters().every(([, t]) => !t.requiresGrad), `${name}: nothing trainable`);
    const xg = x.clone().requiresGrad_();
    ql.forward(xg).sum().backward();
    assert.ok(xg.grad !== null, 'input gradient');
    assert.throws(() => ql.setParameter('weight', randn([O, I]), true), /cannot be trained|quantized/);
    // backup, set a new weight (requantized), restore -> bit-identical buffers
    const before = ql.spec();
    const snap = [u8(before.data), f32(before.absmax), f32(before.code!)].map((t) => [...t]);
    const backup = ql.backupWeight();
    const newW = randn([O, I], { seed: 35 });
    ql.setParameter('weight', newW);
    const after = f32(ql.weight);
    const direct = QuantizedWeight.quantize(newW, { format: 'nf4', blocksize: 16, doubleQuant: false });
    assertExact(after, f32(direct.dequantize('float32')), `${name}: setParameter requantizes in the layer's format`);
    direct.dispose();
    assert.notDeepEqual([...u8(ql.spec().data)], snap[0], 'data changed');
    backup.restore();
    const r = ql.spec();
    assert.deepEqual([u8(r.data), f32(r.absmax), f32(r.code!)].map((t) => [...t]), snap, `${name}: restore is bit-identical`);
    assertExact(f32(ql.weight), f32(deq), `${name}: restored weight`);
    assert.throws(() => QuantLinear.fromLayer(ql, { format: 'nf4' }), /already quantized/);
    ql.dispose();
  }
  // double-quantized layer: backup/restore restores the offset and nested tensors too
  const ql = QuantLinear.fromLayer(lin, { format: 'nf4' });
  const s0 = ql.spec();
  const snap = { data: [...u8(s0.data)], q: [...u8(s0.absmax)], nam: [...f32(s0.nestedAbsmax!)], off: s0.offset, w: [...f32(ql.weight)] };
  const b = ql.backupWeight();
  ql.setParameter('weight', randn([O, I], { seed: 36 }).mul(3));
  assert.notEqual(ql.spec().offset, snap.off);
  b.restore();
  const s1 = ql.spec();
  assert.deepEqual({ data: [...u8(s1.data)], q: [...u8(s1.absmax)], nam: [...f32(s1.nestedAbsmax!)], off: s1.offset, w: [...f32(ql.weight)] }, snap);
  ql.dispose();
}));

test('hostile specs and inputs throw clear Errors', () => tidy(() => {
  const w = randn([4, 8], { seed: 40 });
  const good = QuantizedWeight.quantize(w, { format: 'nf4', blocksize: 4 });  // 32 elements: 16 bytes, 8 blocks, 1 nested block
  const s = good.spec;
  // fromSpec takes ownership (and frees the tensors when it refuses them): give it fresh copies
  const bad = (over: Partial<QuantSpec>): QuantSpec => ({ ...good.clone().spec, ...over });
  const problems: string[] = [];
  const expectErr = (fn: () => unknown, re: RegExp, what: string) => {
    try {
      const r = fn();
      if (r instanceof QuantizedWeight) r.dispose();
      problems.push(`${what}: no error`);
    } catch (e) {
      if (!(e instanceof Error)) problems.push(`${what}: threw a non-Error ${String(e)}`);
      else if (!re.test(e.message)) problems.push(`${what}: unclear error: ${e.message}`);
    }
  };
  expectErr(() => QuantizedWeight.fromSpec(bad({ data: tensor(new Uint8Array(15), { dtype: 'uint8' }) })), /packed data.*16/, 'short data');
  expectErr(() => QuantizedWeight.fromSpec(bad({ data: tensor(new Uint8Array(17), { dtype: 'uint8' }) })), /packed data.*16/, 'long data');
  expectErr(() => QuantizedWeight.fromSpec(bad({ data: tensor(new Int8Array(16), { dtype: 'int8' }) })), /uint8/, 'wrong data dtype');
  expectErr(() => QuantizedWeight.fromSpec(bad({ absmax: tensor(new Uint8Array(7), { dtype: 'uint8' }) })), /scales.*8/, 'absmax too short');
  expectErr(() => QuantizedWeight.fromSpec(bad({ absmax: tensor(new Float32Array(8), { dtype: 'float32' }) })), /uint8/, 'nested absmax of the wrong dtype');
  expectErr(() => QuantizedWeight.fromSpec(bad({ nestedCode: tensor(new Float32Array(255), { dtype: 'float32' }) })), /nested quant map|256/, 'nested map of 255');
  expectErr(() => QuantizedWeight.fromSpec(bad({ nestedAbsmax: tensor(new Float32Array(2), { dtype: 'float32' }) })), /nested absmax/, 'nested absmax count');
  expectErr(() => QuantizedWeight.fromSpec(bad({ code: tensor(new Float32Array(15), { dtype: 'float32' }) })), /code/, 'code of 15');
  expectErr(() => QuantizedWeight.fromSpec(bad({ offset: Number.NaN })), /offset/, 'NaN offset');
  expectErr(() => QuantizedWeight.fromSpec(bad({ out: 0 })), /shape/, 'zero rows');
  expectErr(() => QuantizedWeight.fromSpec(bad({ blocksize: 3 })), /blocksize/, 'odd blocksize');
  expectErr(() => QuantizedWeight.fromSpec(bad({ in: 16 })), /packed data|elements/, 'shape says another size');
  expectErr(() => QuantizedWeight.fromSpec(bad({ format: 'nf5' as never })), /format/, 'unknown format');
  const i8q = QuantizedWeight.quantize(w, { format: 'int8' });
  expectErr(() => QuantizedWeight.fromSpec({ ...i8q.clone().spec, absmax: tensor(new Float32Array(3), { dtype: 'float32' }) }), /row scales/, 'int8 SCB too short');
  expectErr(() => QuantizedWeight.fromSpec({ ...i8q.clone().spec, data: tensor(new Uint8Array(32), { dtype: 'uint8' }) }), /int8/, 'int8 data dtype');
  const i4 = QuantizedWeight.quantize(w, { format: 'int4', blocksize: 4 });
  expectErr(() => QuantizedWeight.fromSpec({ ...i4.clone().spec, zeros: undefined }), /zero points/, 'int4 without zeros');
  expectErr(() => QuantizedWeight.fromSpec({ ...i4.clone().spec, blocksize: 6 }), /divide|scales/, 'int4 group not dividing in');
  // non-finite weights are refused by every quantizer
  for (const format of ['nf4', 'fp4', 'int8', 'int4'] as const) {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const vals = Array.from({ length: 32 }, (_, i) => (i === 9 ? bad : i / 10 - 1));
      expectErr(() => QuantizedWeight.quantize(tensor(vals, { shape: [4, 8], dtype: 'float32' }), { format, blocksize: 4 }), /non-finite/, `${format} with ${bad}`);
    }
  }
  expectErr(() => QuantizedWeight.quantize(randn([8]), { format: 'nf4' }), /2-D/, '1-D weight');
  // quantLinear with a wrong input width / dtype
  expectErr(() => quantLinear(randn([2, 7]), s), /7.*8|last dimension/, 'wrong input width');
  expectErr(() => quantLinear(tensor([[1, 2, 3, 4, 5, 6, 7, 8]], { dtype: 'int64' }), s), /floating point/, 'integer input');
  // a disposed buffer is reported, not dereferenced
  const c = good.clone();
  const spec = c.spec;
  spec.absmax.dispose();
  expectErr(() => dequantize(spec, 'float32'), /disposed/, 'disposed buffer');
  [good, i8q, i4].forEach((q) => q.dispose());
  assert.deepEqual(problems, []);
}));

test('loadModel(quantize nf4) -> saveModel -> loadModel: same logits, bitsandbytes config, ~4.x bits; corrupt files are refused naming the key', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'ak-quant-'));
  try {
    const ids = tensor([[1, 61, 66, 22, 13, 70, 33, 71]], { dtype: 'int64' });
    const m1 = loadModel(defaultModelDir(), { quantize: 'nf4', dtype: 'float32' });
    const l1 = noGrad(() => m1.forward({ inputIds: ids }).logits);
    assert.ok(l1.isfinite().all().item());
    // memory: nf4 rows at 4 + scales + maps bits per weight
    const mem = weightMemory(m1);
    const nf = mem.rows.find((r) => r.kind === 'nf4');
    assert.ok(nf, `an nf4 row in ${JSON.stringify(mem.rows)}`);
    const bits = (nf.bytes / nf.elements) * 8;
    assert.ok(bits > 4 && bits < 4.6, `nf4 bits per weight ${bits}`);
    // every Linear of the body (4 layers x 7 projections) is quantized; the head/embeddings are not
    const qls = m1.namedModules().filter(([, m]) => m instanceof QuantLinear);
    assert.equal(qls.length, 4 * 7);
    assert.ok(qls.every(([p]) => /layers\.\d+\.(self_attn|mlp)\./.test(p)));
    const dir = join(tmp, 'saved');
    saveModel(m1, dir);
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.equal(cfg.quantization_config?.quant_method, 'bitsandbytes');
    assert.equal(cfg.quantization_config?.load_in_4bit, true);
    assert.equal(cfg.quantization_config?.bnb_4bit_quant_type, 'nf4');
    assert.equal(cfg.quantization_config?.bnb_4bit_use_double_quant, true);
    // the bitsandbytes keys and shapes
    const file = join(dir, 'model.safetensors');
    const tensors = readSafetensors(file);
    const p = 'model.layers.0.self_attn.q_proj';
    const [qo, qi] = [256, 256];
    assert.deepEqual(tensors.get(`${p}.weight`)?.shape, [(qo * qi) / 2, 1]);
    assert.equal(tensors.get(`${p}.weight`)?.dtype, 'uint8');
    assert.deepEqual(tensors.get(`${p}.weight.absmax`)?.shape, [(qo * qi) / 64]);
    assert.equal(tensors.get(`${p}.weight.absmax`)?.dtype, 'uint8');
    assert.deepEqual(tensors.get(`${p}.weight.quant_map`)?.shape, [16]);
    assertExact(f32(tensors.get(`${p}.weight.quant_map`)!), NF4_REF.map(f), 'saved quant_map');
    assert.deepEqual(tensors.get(`${p}.weight.nested_quant_map`)?.shape, [256]);
    assert.deepEqual(tensors.get(`${p}.weight.nested_absmax`)?.shape, [Math.ceil((qo * qi) / 64 / 256)]);
    const stKey = `${p}.weight.quant_state.bitsandbytes__nf4`;
    const state = JSON.parse(new TextDecoder().decode(tensors.get(stKey)!.data() as Uint8Array));
    assert.equal(state.quant_type, 'nf4');
    assert.equal(state.blocksize, 64);
    assert.deepEqual(state.shape, [qo, qi]);
    assert.equal(state.nested_blocksize, 256);
    assert.equal(typeof state.nested_offset, 'number');
    assert.ok(!tensors.has(`${p}.weight.weight`));
    // the saved packed weight dequantizes (JS, from the file) to the loaded layer's weight
    const layer = m1.getSubmodule(p) as QuantLinear;
    const fileSpec: QuantSpec = {
      format: 'nf4', out: qo, in: qi, blocksize: 64, data: tensors.get(`${p}.weight`)!.reshape(-1), absmax: tensors.get(`${p}.weight.absmax`)!,
      code: tensors.get(`${p}.weight.quant_map`)!, nestedAbsmax: tensors.get(`${p}.weight.nested_absmax`)!, nestedCode: tensors.get(`${p}.weight.nested_quant_map`)!,
      nestedBlocksize: 256, offset: state.nested_offset,
    };
    assertExact(jsDequant(fileSpec), f32(layer.weight), 'file contents vs the layer');

    const m2 = loadModel(dir, { dtype: 'float32' });
    assert.equal(m2.namedModules().filter(([, m]) => m instanceof QuantLinear).length, 4 * 7);
    const l2 = noGrad(() => m2.forward({ inputIds: ids }).logits);
    assertExact(f32(l2), f32(l1), 'logits after save -> load');
    m2.dispose();
    m1.dispose();

    // corrupted copies of the saved checkpoint
    const corrupt = (name: string, edit: (t: Map<string, Tensor>) => void): string => {
      const d = join(tmp, name);
      const copy = new Map(tensors);
      edit(copy);
      mkdirSync(d, { recursive: true });
      writeSafetensors(join(d, 'model.safetensors'), copy, { format: 'pt' });
      copyFileSync(join(dir, 'config.json'), join(d, 'config.json'));
      return d;
    };
    const problems: string[] = [];
    const refused = (d: string, re: RegExp, what: string) => {
      try {
        loadModel(d, { dtype: 'float32' }).dispose();
        problems.push(`${what}: loaded without an error`);
      } catch (e) {
        if (!(e instanceof Error)) problems.push(`${what}: threw a non-Error ${String(e)}`);
        else if (!e.message.includes(p)) problems.push(`${what}: the error does not name ${p}: ${e.message}`);
        else if (!re.test(e.message)) problems.push(`${what}: unclear error: ${e.message}`);
      }
    };
    const json = (s: string) => { const b = new TextEncoder().encode(s); return fromBytes(b, 'uint8', [b.length]); };
    refused(corrupt('bad-json', (t) => t.set(stKey, json('{"quant_type": "nf4", "blocksize": 64, '))), /JSON/, 'corrupt quant_state JSON');
    refused(corrupt('other-size', (t) => t.set(stKey, json(JSON.stringify({ ...state, shape: [512, 256] })))), /512|shape|size/, 'shape says another size');
    refused(corrupt('bad-blocksize', (t) => t.set(stKey, json(JSON.stringify({ ...state, blocksize: -64 })))), /blocksize/, 'negative blocksize');
    refused(corrupt('truncated', (t) => t.set(`${p}.weight`, tensors.get(`${p}.weight`)!.narrow(0, 0, (qo * qi) / 2 - 1).contiguous())), /packed|elements|weight/, 'truncated packed weight');
    refused(corrupt('short-absmax', (t) => t.set(`${p}.weight.absmax`, tensors.get(`${p}.weight.absmax`)!.narrow(0, 0, 10).contiguous())), /scales|absmax/, 'short absmax');
    refused(corrupt('no-nested-map', (t) => t.delete(`${p}.weight.nested_quant_map`)), /nested/, 'nested_absmax without nested_quant_map');
    refused(corrupt('short-nested-map', (t) => t.set(`${p}.weight.nested_quant_map`, tensors.get(`${p}.weight.nested_quant_map`)!.narrow(0, 0, 255).contiguous())), /nested|256/, 'nested map of 255');
    for (const t of tensors.values()) t.dispose();
    assert.deepEqual(problems, []);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
