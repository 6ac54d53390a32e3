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
