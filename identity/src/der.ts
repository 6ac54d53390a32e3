/**
 * The few DER (X.690) elements EdgeMesh writes itself: a node's certificate request (node-key.ts)
 * and a mesh CA's certificate (ca.ts). Both have fixed shapes, so writing them takes these lines;
 * reading certificates and requests, which comes from others, stays with the CA's library.
 */

/** A DER length: short form under 128, else the long form's count byte and big-endian bytes. */
function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.of(length);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Buffer.of(0x80 | bytes.length, ...bytes);
}

/** One DER element: its tag, its length and its contents. */
export const der = (tag: number, ...contents: Buffer[]): Buffer => {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.of(tag), derLength(body.length), body]);
};

export const SEQUENCE = 0x30;
export const SET = 0x31;
export const INTEGER = 0x02;
export const BIT_STRING = 0x03;
export const OCTET_STRING = 0x04;
const OBJECT_IDENTIFIER = 0x06;
export const UTF8_STRING = 0x0c;
const PRINTABLE_STRING = 0x13;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;

/** An OBJECT IDENTIFIER from its dotted text. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const bytes: number[] = [];
  const base128 = (arc: number) => {
    const out = [arc & 0x7f];
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128))
      out.unshift(0x80 | (rest & 0x7f));
    bytes.push(...out);
  };
  base128(arcs[0]! * 40 + arcs[1]!);
  for (const arc of arcs.slice(2)) base128(arc);
  return der(OBJECT_IDENTIFIER, Buffer.from(bytes));
}

/** A BIT STRING of whole bytes (no unused bits). */
export const bitString = (bytes: Buffer): Buffer => der(BIT_STRING, Buffer.of(0), bytes);

/** A non-negative INTEGER from its big-endian bytes, in its shortest form. */
export function unsignedInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0 && bytes[start + 1]! < 0x80) start++;
  const body = bytes.subarray(start);
  return der(INTEGER, body[0]! >= 0x80 ? Buffer.concat([Buffer.of(0), body]) : body);
}

/** PrintableString's characters (X.680); other text is a UTF8String. */
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/**
 * A DirectoryString by @peculiar/x509's rule (every CA made before this file was the library's): a
 * PrintableString when the text allows it, else a UTF8String. A certificate's issuer must be byte
 * for byte its CA's subject for some verifiers (Go's chain building); the CA's library copies it
 * from the CA's certificate as parsed, whichever was chosen.
 */
export const directoryString = (text: string): Buffer =>
  der(PRINTABLE.test(text) ? PRINTABLE_STRING : UTF8_STRING, Buffer.from(text, 'utf8'));

/** A Name of one attribute per RDN, in order: [OID, value]. */
export const name = (attributes: readonly (readonly [string, string])[]): Buffer =>
  der(
    SEQUENCE,
    ...attributes.map(([type, value]) => der(SET, der(SEQUENCE, oid(type), directoryString(value)))),
  );

/**
 * A certificate's Time (RFC 5280, 4.1.2.5): UTCTime through 2049, GeneralizedTime from 2050 (and
 * before 1950), to the second, in UTC.
 */
export function time(at: Date): Buffer {
  const year = at.getUTCFullYear();
  if (!(year >= 0 && year <= 9999))
    throw new RangeError(`a certificate's time is in years 0 to 9999, not ${at.toString()}`);
  const iso = at.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return year >= 1950 && year < 2050
    ? der(UTC_TIME, Buffer.from(digits.slice(2), 'latin1'))
    : der(GENERALIZED_TIME, Buffer.from(digits, 'latin1'));
}

/** AlgorithmIdentifier { 1.2.840.10045.4.3.2 (ecdsa-with-SHA256) }, parameters absent (RFC 5758). */
export const ECDSA_WITH_SHA256 = der(SEQUENCE, oid('1.2.840.10045.4.3.2'));
