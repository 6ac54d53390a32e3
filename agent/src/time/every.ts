/**
 * The agent's one way to run something periodically (the lint forbids `setInterval` elsewhere in
 * agent/src): a round that throws or rejects is handed to `failed` and the next round runs, so a
 * periodic task survives its own errors and never takes the process down. A round that returns a
 * promise is never overlapped: while it is pending the rounds that fall due are skipped, so a slow
 * round (a file read on a stalled disk, pings that wait for their timeouts) cannot pile up, and an
 * older round cannot finish after a newer one and apply what it read last. The timer is unref'd (it
 * keeps no process alive); clear it with `clearInterval`.
 */
export function every(ms: number, run: () => unknown, failed: (error: Error) => void): NodeJS.Timeout {
  const report = (error: unknown) => {
    try {
      failed(error instanceof Error ? error : new Error(String(error)));
    } catch {
      // The report itself failed (a broken logger): nothing is left to tell, and the next round runs.
    }
  };
  let pending = false;
  const timer = setInterval(() => {
    if (pending) return;
    try {
      const result = run();
      if (result instanceof Promise) {
        pending = true;
        result.then(
          () => (pending = false),
          (error: unknown) => {
            pending = false;
            report(error);
          },
        );
      }
    } catch (error) {
      report(error);
    }
  }, ms);
  timer.unref();
  return timer;
}
