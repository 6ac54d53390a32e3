#!/usr/bin/env node
/**
 * Makes what agents outside Kubernetes need for their trust (docs/security.md), in DIR:
 *   ca.crt, ca.key   a file-based mesh CA (agents: --security.ca.cert-file, --security.ca.key-file)
 *   tokens.yaml      one client token, `admin` (agents: --access.tokens-file)
 *   token            that token alone, for curl: -H "Authorization: Bearer $(cat DIR/token)"
 * Usage: npm run ca -- DIR [--mesh NAME]   (NAME: the agents' --mesh, default `default`)
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createCa } from '@edgemesh/identity';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { mesh: { type: 'string', default: 'default' } },
});
const dir = positionals[0];
if (!dir) {
  process.stderr.write('usage: npm run ca -- DIR [--mesh NAME]\n');
  process.exit(2);
}
const out = resolve(dir);
if (existsSync(join(out, 'ca.key'))) {
  process.stderr.write(`${out}/ca.key exists: not overwriting a CA\n`);
  process.exit(1);
}
await mkdir(out, { recursive: true, mode: 0o700 });
const ca = await createCa({ namespace: 'local', name: values.mesh });
const token = randomBytes(24).toString('base64url');
await writeFile(join(out, 'ca.crt'), ca.certPem);
await writeFile(join(out, 'ca.key'), ca.keyPem, { mode: 0o600 });
await writeFile(join(out, 'tokens.yaml'), `tokens:\n  - { name: admin, token: ${token} }\n`, { mode: 0o600 });
await writeFile(join(out, 'token'), `${token}\n`, { mode: 0o600 });
process.stdout.write(`wrote ${out}/ca.crt, ca.key (mesh ${values.mesh}), tokens.yaml and token\n`);
