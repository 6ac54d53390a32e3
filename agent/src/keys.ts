/** Object keys (docs/agent.md, `InvalidKey`): 1-512 bytes of [A-Za-z0-9._~/-], with no empty, `.` or `..` segment. */
export const MAX_KEY_LENGTH = 512;
const KEY_CHARS = /^[A-Za-z0-9._~/-]{1,512}$/;

/** Why `key` is not a valid object key, or undefined when it is. */
export function keyProblem(key: string): string | undefined {
  if (key.length === 0) return 'key is empty';
  if (key.length > MAX_KEY_LENGTH) return `key is longer than ${MAX_KEY_LENGTH} bytes`;
  if (!KEY_CHARS.test(key)) return 'key may contain only A-Z a-z 0-9 . _ ~ / -';
  for (const segment of key.split('/')) {
    if (segment === '') return 'key has an empty segment';
    if (segment === '.' || segment === '..') return `key has a '${segment}' segment`;
  }
  return undefined;
}

export function isKey(key: string): boolean {
  return keyProblem(key) === undefined;
}
