import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** The most header files one origin rule may have, and the most bytes each may hold. */
const MAX_HEADERS = 64;
const MAX_HEADER_BYTES = 8192;
/** An HTTP header name (RFC 9110 token); every key a Kubernetes Secret allows is one. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The request headers an origin rule sends, from a directory with one file per header (a mounted
 * Secret: file name = header name, content = value, one trailing newline dropped). Read at every
 * fetch, so a rotated Secret takes effect at the next one. Entries starting with `.` (a Secret
 * volume's own `..data` links) are skipped. Errors (a plain Error: the caller says which origin)
 * name the file, never its content.
 */
export async function readOriginHeaders(dir: string): Promise<Record<string, string>> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((name) => !name.startsWith('.')).sort();
  } catch (error) {
    throw new Error(`origin headers in ${dir}: ${(error as Error).message}`, { cause: error });
  }
  if (names.length > MAX_HEADERS) throw new Error(`origin headers in ${dir}: more than ${MAX_HEADERS} files`);
  const headers: Record<string, string> = {};
  for (const name of names) {
    const path = join(dir, name);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) continue;
    if (!HEADER_NAME.test(name)) throw new Error(`origin header file ${path}: not a header name`);
    if (info.size > MAX_HEADER_BYTES)
      throw new Error(`origin header file ${path}: more than ${MAX_HEADER_BYTES} bytes`);
    const value = (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
    if (/[\r\n\0]/.test(value)) throw new Error(`origin header file ${path}: a value of one line is needed`);
    headers[name] = value;
  }
  return headers;
}
