import { readFileSync } from 'node:fs';
import { cpus, freemem, release, totalmem } from 'node:os';

/** One line saying what machine a benchmark ran on. */
export function describeMachine(): string {
  const model = cpus()[0]?.model ?? 'unknown CPU';
  let os = 'unknown OS';
  try {
    os = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os;
  } catch {
    os = `kernel ${release()}`; // no os-release: name the kernel instead
  }
  const gib = (n: number) => (n / 2 ** 30).toFixed(1);
  return `${cpus().length} x ${model}, ${gib(totalmem())} GiB RAM (${gib(freemem())} free), ${os}, Node ${process.version}`;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}

export const round = (n: number, digits = 2) => Number(n.toFixed(digits));
