import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';

/**
 * A bench's `args` parsed strictly (node:util's parseArgs, as soak.ts does): an unknown option, a
 * value missing or starting with a dash, a stray argument or an option given twice is a RangeError,
 * its message followed by `usage` (the options the bench takes).
 */
export function strictOptions<const T extends ParseArgsOptionsConfig>(
  args: readonly string[],
  options: T,
  usage: string,
) {
  try {
    const { values, tokens } = parseArgs({ args: [...args], options, strict: true, tokens: true });
    const given = tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : []));
    const twice = given.find((name, i) => given.indexOf(name) !== i);
    if (twice) throw new Error(`--${twice} is given twice`);
    return values;
  } catch (error) {
    throw new RangeError(`${(error as Error).message} (${usage})`, { cause: error });
  }
}
