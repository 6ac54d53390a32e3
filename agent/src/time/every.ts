/**
 * The agent's one way to run something periodically (the lint forbids `setInterval` elsewhere in
 * agent/src): a round that throws or rejects is handed to `failed` and the next round runs, so a
 * periodic task survives its own errors and never takes the process down. The timer is unref'd (it
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
  const timer = setInterval(() => {
    try {
      const result = run();
      if (result instanceof Promise) result.catch(report);
    } catch (error) {
      report(error);
    }
  }, ms);
  timer.unref();
  return timer;
}
