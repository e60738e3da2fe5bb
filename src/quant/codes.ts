// The public code books of the 4-bit formats and bitsandbytes' 8-bit dynamic map.

/**
 * NF4 (QLoRA, Dettmers et al. 2023, appendix E): the 16 quantiles of N(0, 1) normalised to [-1, 1],
 * with an exact zero. The values bitsandbytes ships (float32).
 */
export const NF4_CODE: readonly number[] = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
];

/**
 * FP4 (e2m1 with bitsandbytes' bias) in bitsandbytes' index order: the bit pattern is sign, two
 * exponent bits, one mantissa bit; values 0, 0.0625, 8, 12, 4, 6, 2, 3 (and negatives) over 12.
 */
export const FP4_CODE: readonly number[] = [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3].map((v) => v / 12);

/**
 * bitsandbytes' `create_dynamic_map(signed=True)`: 256 values in [-1, 1] with a dynamic exponent
 * (7 decades), used to double-quantize the 4-bit block scales. The map is stored next to every
 * double-quantized weight, so readers never depend on recomputing it bit for bit.
 */
export function dynamicMap(): number[] {
  const maxExp = 7;
  const nonSign = 7;
  const data: number[] = [];
  for (let i = 0; i < maxExp; i++) {
    const items = 2 ** (i + nonSign - maxExp) + 1;
    const bounds = Array.from({ length: items }, (_, k) => Math.fround(0.1 + (0.9 * k) / (items - 1)));
    const scale = 10 ** (-(maxExp - 1) + i);
    for (let k = 0; k + 1 < items; k++) {
      const mean = Math.fround((bounds[k]! + bounds[k + 1]!) / 2);
      data.push(scale * mean, -scale * mean);
    }
  }
  data.push(0, 1);
  return data.sort((a, b) => a - b).map((v) => Math.fround(v));
}
