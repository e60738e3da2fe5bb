/**
 * adapterkit: parameter-efficient fine-tuning for TypeScript on libtorch.
 *
 * @example
 * import { tensor, tidy } from 'adapterkit';
 * const y = tidy(() => tensor([[1, 2], [3, 4]]).matmul(tensor([[1], [1]])));
 * console.log(y.toArray()); // [[3], [7]]
 */
export * from './tensor/index.js';
export { VERSION } from './version.js';
