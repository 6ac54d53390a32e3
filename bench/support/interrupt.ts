/**
 * Interrupted (Ctrl-C, a kill): `kill` stops at once what a benchmark started (agents, clients),
 * then `cleanup` (nats-server, the stores) runs, its errors ignored, and the process exits 130,
 * leaving nothing behind. Returns the removal, for a benchmark that ends normally.
 */
export function onInterrupt(kill: () => void, cleanup: () => Promise<unknown>): () => void {
  const interrupted = () => {
    kill();
    cleanup()
      .catch(() => undefined)
      .finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  return () => {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  };
}
