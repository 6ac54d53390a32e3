import { hostname } from 'node:os';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { $ZodType } from 'zod/v4/core';
import { parseDocument } from './document.ts';
import { type AgentConfig, agentConfigSchema } from './schema.ts';

/** Configuration that cannot be used; the message names the field. Start-up stops on it. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** One settable leaf of the schema: its dotted path, flag and environment variable. */
export interface Setting {
  path: string[];
  flag: string;
  env: string;
  list: boolean;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();

function unwrap(schema: $ZodType): $ZodType {
  let s = schema;
  for (;;) {
    const def = s._zod.def as { type: string; innerType?: $ZodType; in?: $ZodType };
    if ((def.type === 'default' || def.type === 'prefault' || def.type === 'optional') && def.innerType) {
      s = def.innerType;
    } else if (def.type === 'pipe' && def.in) s = def.in;
    else return s;
  }
}

/** Every leaf of the schema, derived from it so the flags and variables can never drift from it. */
export function settings(schema: $ZodType = agentConfigSchema, prefix: string[] = []): Setting[] {
  const inner = unwrap(schema);
  const def = inner._zod.def as { type: string; shape?: Record<string, $ZodType> };
  if (def.type === 'object' && def.shape) {
    return Object.entries(def.shape).flatMap(([name, child]) => settings(child, [...prefix, name]));
  }
  return [
    {
      path: prefix,
      flag: prefix.map(kebab).join('.'),
      env: `EDGEMESH_${prefix.map(snake).join('_')}`,
      list: def.type === 'array',
    },
  ];
}

/** The EDGEMESH_* variables the agent reads besides its settings' (main.ts, @edgemesh/telemetry). */
const OTHER_VARIABLES = ['EDGEMESH_CONFIG', 'EDGEMESH_REVISION', 'EDGEMESH_TEST_ONLY_PROTOCOL'];

/**
 * The EDGEMESH_* variables in `env` that the agent does not read: most likely a misspelled setting,
 * which would otherwise be ignored without a word (main.ts warns). Sorted.
 */
export function unreadVariables(env: NodeJS.ProcessEnv): string[] {
  const read = new Set([...settings().map((s) => s.env), ...OTHER_VARIABLES]);
  return Object.keys(env)
    .filter((name) => name.startsWith('EDGEMESH_') && !read.has(name))
    .sort();
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const segment of path.slice(0, -1)) {
    const next = node[segment];
    node[segment] = typeof next === 'object' && next !== null && !Array.isArray(next) ? next : {};
    node = node[segment] as Record<string, unknown>;
  }
  node[path.at(-1)!] = value;
}

async function readFileConfig(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as Error).message}`, { cause: error });
  }
  let parsed: unknown;
  try {
    parsed = await parseDocument(text);
  } catch (error) {
    throw new ConfigError(`config file ${file} is neither JSON nor valid YAML: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed))
    throw new ConfigError(`config file ${file}: expected a mapping`);
  return parsed as Record<string, unknown>;
}

/**
 * The agent's configuration from, in rising precedence: the YAML/JSON file named by `--config` or
 * EDGEMESH_CONFIG, EDGEMESH_* variables, and flags (`--store.dir /x`, `--peers a:7481,b:7481`).
 * Throws ConfigError naming the first bad field.
 */
export async function loadConfig(argv: string[], env: NodeJS.ProcessEnv): Promise<AgentConfig> {
  const all = settings();
  const { values }: { values: Record<string, string | string[] | undefined> } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      config: { type: 'string' },
      ...Object.fromEntries(all.map((s) => [s.flag, { type: 'string' as const, multiple: s.list }])),
    },
  });
  const file = (values.config as string | undefined) ?? env.EDGEMESH_CONFIG;
  const raw = file ? await readFileConfig(file) : {};
  for (const setting of all) {
    const fromEnv = env[setting.env];
    if (fromEnv !== undefined) setPath(raw, setting.path, setting.list ? splitList(fromEnv) : fromEnv);
    const fromFlag = values[setting.flag];
    if (fromFlag !== undefined)
      setPath(raw, setting.path, Array.isArray(fromFlag) ? fromFlag.flatMap(splitList) : fromFlag);
  }
  await applyTopology(raw);
  // The standard OpenTelemetry variable, when EdgeMesh's own setting is absent.
  const telemetry = raw.telemetry as { otlpEndpoint?: unknown } | undefined;
  if (telemetry?.otlpEndpoint === undefined && env.OTEL_EXPORTER_OTLP_ENDPOINT)
    setPath(raw, ['telemetry', 'otlpEndpoint'], env.OTEL_EXPORTER_OTLP_ENDPOINT);
  return parseConfig(raw);
}

/** Fills in zone, region and weight from the topology file's entry for this node, where not set. */
async function applyTopology(raw: Record<string, unknown>): Promise<void> {
  if (typeof raw.topologyFile !== 'string') return;
  const topology = (await readFileConfig(raw.topologyFile)) as {
    nodes?: Record<string, Record<string, unknown>>;
  };
  const nodeId = typeof raw.nodeId === 'string' ? raw.nodeId : hostname();
  const place = topology.nodes?.[nodeId];
  if (!place) return;
  for (const key of ['zone', 'region', 'weight'] as const) {
    if (raw[key] === undefined && place[key] !== undefined) raw[key] = place[key];
  }
}

/** Validates and defaults a configuration object. Throws ConfigError naming the field. */
export function parseConfig(raw: unknown): AgentConfig {
  const result = agentConfigSchema.safeParse(raw);
  if (result.success) return result.data;
  const problems = result.error.issues.map(
    (issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`,
  );
  throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
