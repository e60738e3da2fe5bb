// Deterministic tensor lifetime. Every tensor created while a scope is open belongs to that scope;
// closing the scope disposes what it owns, except tensors returned from tidy() (they move to the
// enclosing scope) and tensors passed to keep() (they leave all scopes: the caller owns them).
// A finalizer in the native addon frees anything that is garbage-collected undisposed: a safety net,
// not the plan.

export const TRACKED: unique symbol = Symbol('adapterkit.tracked');

export interface Tracked {
  readonly [TRACKED]: true;
  _scope: Scope | null;
  readonly isDisposed: boolean;
  dispose(): void;
}

function isTracked(x: unknown): x is Tracked {
  return typeof x === 'object' && x !== null && (x as Partial<Tracked>)[TRACKED] === true;
}

const stack: Scope[] = [];

/** A scope of tensor ownership. Use with `using s = scope()` or call `dispose()` yourself. */
export class Scope {
  private owned: Tracked[] = [];
  private closed = false;
  readonly parent: Scope | null;

  constructor() {
    this.parent = stack.length ? stack[stack.length - 1]! : null;
    stack.push(this);
  }

  /** @internal */
  adopt(t: Tracked): void {
    t._scope = this;
    this.owned.push(t);
  }

  /** Take a tensor (or every tensor in an array/object) out of all scopes; the caller now owns it. */
  keep<T>(value: T): T {
    forEachTracked(value, (t) => { t._scope = null; });
    return value;
  }

  /** Dispose every tensor this scope still owns, then close it (closing inner scopes first). */
  dispose(): void {
    if (this.closed) return;
    const at = stack.lastIndexOf(this);
    if (at >= 0) {
      // Inner scopes left open (an early return without `using`) are closed with this one.
      for (let i = stack.length - 1; i > at; i--) stack[i]!.dispose();
      stack.length = at;
    }
    this.closed = true;
    for (const t of this.owned) if (t._scope === this && !t.isDisposed) t.dispose();
    this.owned = [];
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Number of tensors this scope still owns and has not disposed. */
  get size(): number {
    let n = 0;
    for (const t of this.owned) if (t._scope === this && !t.isDisposed) n++;
    return n;
  }
}

/** Called by the Tensor constructor. */
export function track(t: Tracked): void {
  const s = stack.length ? stack[stack.length - 1] : undefined;
  if (s) s.adopt(t);
  else t._scope = null;
}

/** Opens a scope: `using s = scope();` frees every tensor made after it when the block ends. */
export function scope(): Scope {
  return new Scope();
}

/**
 * Runs `fn`, then disposes every tensor created inside it except those in its result (a tensor, or
 * arrays/plain objects/Maps of them), which move to the enclosing scope. Synchronous functions only:
 * a scope cannot follow an `await`.
 */
export function tidy<T>(fn: () => T): T {
  const s = new Scope();
  let result: T;
  try {
    result = fn();
  } catch (e) {
    s.dispose();
    throw e;
  }
  if (result instanceof Promise) {
    s.dispose();
    throw new TypeError('tidy() takes a synchronous function; for async code use scope() and keep()');
  }
  const parent = s.parent;
  forEachTracked(result, (t) => {
    if (t._scope === s) {
      if (parent) parent.adopt(t);
      else t._scope = null;
    }
  });
  s.dispose();
  return result;
}

/** Removes tensors from every scope so that no scope disposes them. */
export function keep<T>(value: T): T {
  forEachTracked(value, (t) => { t._scope = null; });
  return value;
}

function forEachTracked(x: unknown, f: (t: Tracked) => void, depth = 0): void {
  if (depth > 32 || x === null || typeof x !== 'object') return;
  if (isTracked(x)) {
    f(x);
    return;
  }
  if (Array.isArray(x)) {
    for (const v of x) forEachTracked(v, f, depth + 1);
  } else if (x instanceof Map) {
    for (const v of x.values()) forEachTracked(v, f, depth + 1);
  } else if (Object.getPrototypeOf(x) === Object.prototype) {
    for (const v of Object.values(x)) forEachTracked(v, f, depth + 1);
  }
}

/** How deep the current scope nesting is (0 outside any scope). */
export function scopeDepth(): number {
  return stack.length;
}
