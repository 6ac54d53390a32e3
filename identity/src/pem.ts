/**
 * PEM (RFC 7468) with Node's own base64, in place of @peculiar/x509's PemConverter and its
 * `toString('pem')`. Those convert through strings one byte at a time in JavaScript (pvtsutils'
 * `Convert.ToBinary`/`FromBinary`) and upper-case the label with `toLocaleUpperCase`. An agent's
 * start-up runs half a dozen of them (its key, its request, its certificate, the CA's), enough for V8
 * to optimize that loop with TurboFan now and then, which pages in about 5 MiB of compiler code that
 * a freshly started agent otherwise does without (docs/deploy.md). The output is the same text
 * PemConverter writes: 64 characters a line, no trailing newline.
 */

const LINE = 64;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** `der` as one PEM block labelled `label` (e.g. `CERTIFICATE`, `PRIVATE KEY`). */
export function toPem(der: ArrayBuffer | Uint8Array, label: string): string {
  const body = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  const lines = [`-----BEGIN ${label}-----`];
  for (let i = 0; i < body.length; i += LINE) lines.push(body.slice(i, i + LINE));
  lines.push(`-----END ${label}-----`);
  return lines.join('\n');
}

/**
 * The DER of the first block labelled `label` in `text` (what comes before it, such as OpenSSL's
 * "Bag Attributes", is skipped). Throws a RangeError naming what is wrong when there is no such
 * block or its body is not base64.
 */
export function fromPem(text: string, label: string): Buffer {
  const begin = `-----BEGIN ${label}-----`;
  const end = `-----END ${label}-----`;
  const from = text.indexOf(begin);
  const to = from < 0 ? -1 : text.indexOf(end, from + begin.length);
  if (to < 0) throw new RangeError(`no PEM block "${label}"`);
  // RFC 7468's lax reading: spaces, tabs and line breaks anywhere in the body; nothing else.
  const body = text.slice(from + begin.length, to).replace(/[ \t\r\n]+/g, '');
  if (body.length === 0 || body.length % 4 !== 0 || !BASE64.test(body))
    throw new RangeError(`the PEM block "${label}" is not base64`);
  return Buffer.from(body, 'base64');
}
