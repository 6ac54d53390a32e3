import fc from 'fast-check';

/**
 * An arbitrary of `base` (a valid object) with up to three of `paths` set to values of `value`: inputs
 * near the valid ones, so that fuzzing reaches past the first check.
 */
export function nearlyValid(
  base: Record<string, unknown>,
  paths: readonly (readonly string[])[],
  value: fc.Arbitrary<unknown>,
): fc.Arbitrary<Record<string, unknown>> {
  return fc.array(fc.tuple(fc.constantFrom(...paths), value), { maxLength: 3 }).map((changes) => {
    const raw = structuredClone(base);
    for (const [path, v] of changes) {
      let at = raw;
      for (const key of path.slice(0, -1)) {
        if (typeof at[key] !== 'object' || at[key] === null) at[key] = {};
        at = at[key] as Record<string, unknown>;
      }
      at[path.at(-1)!] = v;
    }
    return raw;
  });
}

/**
 * A fuzz test's seed or case count from the environment variable `name` (FUZZ_SEED: other cases
 * than CI's, for a hunt; FUZZ_RUNS: more or fewer), else `fallback`, CI's, fixed so that a failure
 * there is reproducible. Anything but decimal digits making a whole number of at least `min` (1
 * for a count: no cases would pass silently) is an error, never a quiet default.
 */
export function fuzzSetting(name: string, fallback: number, min = 0): number {
  const raw = process.env[name];
  if (raw === undefined) return fallback;
  const value = /^\d{1,15}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(value >= min)) throw new RangeError(`${name}=${JSON.stringify(raw)}: not a whole number >= ${min}`);
  return value;
}
