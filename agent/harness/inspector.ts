import type { ChildProcess } from 'node:child_process';

/**
 * The V8 inspector of a process started with `--inspect=127.0.0.1:0` (the flag INSPECT), or with
 * INSPECT_ON_SIGNAL and opened by openInspector, over the Chrome DevTools Protocol on its WebSocket:
 * a test asks it for a full garbage collection and the size of the heap that survives it. A
 * process's RSS, or its heap as `process.memoryUsage()` tells it, counts garbage V8 has not yet
 * collected, and how much depends on the machine's speed and load; what survives a full collection
 * does not.
 */
export const INSPECT = '--inspect=127.0.0.1:0';

/**
 * The inspector's address, for a process whose inspector listens only once openInspector asks
 * (SIGUSR1): on loopback, a port of its own. Until then nothing listens, so what is measured before
 * is of a process as it runs without the flag.
 */
export const INSPECT_ON_SIGNAL = '--inspect-port=127.0.0.1:0';

/** The line the inspector announces itself with, its address whole (host, port and a UUID). */
const ANNOUNCED = /Debugger listening on (ws:\/\/[\d.]+:\d+\/[\da-f]{8}(?:-[\da-f]{4}){3}-[\da-f]{12})/;

/**
 * The address the inspector announced on the process's stderr ("Debugger listening on ws://...").
 * Its exact form, host, port and a UUID, so that whatever the chunks of the output (`stderr` may hold
 * lines of stdout too: the harness keeps both in one list) nothing after it is read as part of it.
 */
function inspectorUrl(stderr: readonly string[]): string {
  const url = ANNOUNCED.exec(stderr.join(''))?.[1];
  if (!url) throw new Error(`the process announced no inspector (started with ${INSPECT}?)`);
  return url;
}

/**
 * Opens the inspector of `child`, started with INSPECT_ON_SIGNAL (SIGUSR1), and resolves once it has
 * announced its address in `stderr` (what collectGarbage reads: a list `child`'s stderr is appended
 * to by a listener added before this call, as the harness's). At once if it has already. Fails if
 * the process has exited, or exits first, or after `timeoutMs`.
 */
export function openInspector(
  child: ChildProcess,
  stderr: readonly string[],
  timeoutMs = 30_000,
): Promise<void> {
  const announced = () => ANNOUNCED.test(stderr.join(''));
  if (announced()) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      clearTimeout(timer);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve();
    };
    const timer = setTimeout(
      () =>
        done(new Error(`the inspector did not open in ${timeoutMs} ms (started with ${INSPECT_ON_SIGNAL}?)`)),
      timeoutMs,
    );
    const onData = () => {
      if (announced()) done();
    };
    const onExit = () =>
      done(
        new Error(`the process exited (${child.exitCode ?? child.signalCode}) before its inspector opened`),
      );
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
    if (child.exitCode !== null || child.signalCode !== null || !child.kill('SIGUSR1')) onExit();
  });
}

export interface CollectedHeap {
  /** Bytes of the V8 heap that survived a full collection: live objects, compiled code included. */
  usedBytes: number;
  /**
   * Of those, what V8 made of the code: compiled code and bytecode (its code and trusted spaces).
   * How much there is depends on which functions V8 chose to optimize, and when, and whose bytecode
   * it flushed as it aged, which the machine's speed and load decide as much as the program.
   */
  codeBytes: number;
  /** Bytes V8 holds for its heap after the collection. */
  totalBytes: number;
}

/**
 * Evaluated in the inspected process, after the collection: its heap's figures, read at once (the
 * used bytes of every space, and of its code and trusted spaces).
 */
const HEAP_FIGURES = `(() => {
  const v8 = process.getBuiltinModule('v8');
  const spaces = v8.getHeapSpaceStatistics();
  const sum = (list) => list.reduce((n, s) => n + s.space_used_size, 0);
  return {
    used: sum(spaces),
    code: sum(spaces.filter((s) => /^(code|trusted)(_large_object)?_space$/.test(s.space_name))),
    total: v8.getHeapStatistics().total_heap_size,
  };
})()`;

/**
 * Runs a full garbage collection in the process whose stderr is `stderr` (its lines or chunks) and
 * returns its heap after it. Fails after `timeoutMs` rather than hang on a process that answers
 * nothing.
 */
export async function collectGarbage(stderr: readonly string[], timeoutMs = 30_000): Promise<CollectedHeap> {
  const socket = new WebSocket(inspectorUrl(stderr));
  const answers = new Map<number, (result: unknown) => void>();
  let failed: (error: Error) => void = () => undefined;
  const failure = new Promise<never>((_, reject) => {
    failed = reject;
  });
  failure.catch(() => undefined); // a failure after the answers came is no one's concern
  const timer = setTimeout(
    () => failed(new Error(`the inspector did not answer in ${timeoutMs} ms`)),
    timeoutMs,
  );
  socket.onerror = () => failed(new Error('the inspector connection failed'));
  socket.onclose = () => failed(new Error('the inspector closed the connection'));
  socket.onmessage = (event) => {
    let message: { id?: number; result?: unknown; error?: { message: string } };
    try {
      message = JSON.parse(String(event.data)) as typeof message;
    } catch {
      return failed(new Error(`the inspector sent what is not JSON: ${String(event.data).slice(0, 100)}`));
    }
    if (message.id === undefined) return;
    if (message.error) failed(new Error(`inspector: ${message.error.message}`));
    else answers.get(message.id)?.(message.result);
  };
  let next = 0;
  const send = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> =>
    Promise.race([
      new Promise<T>((resolve) => {
        const id = ++next;
        answers.set(id, (result) => resolve(result as T));
        socket.send(JSON.stringify({ id, method, params }));
      }),
      failure,
    ]);
  try {
    await Promise.race([
      new Promise((resolve) => {
        socket.onopen = resolve;
      }),
      failure,
    ]);
    await send('HeapProfiler.collectGarbage');
    const { result, exceptionDetails } = await send<{
      result: { value?: { used?: unknown; code?: unknown; total?: unknown } };
      exceptionDetails?: { text: string };
    }>('Runtime.evaluate', { expression: HEAP_FIGURES, returnByValue: true });
    const { used, code, total } = result.value ?? {};
    if (typeof used !== 'number' || typeof code !== 'number' || typeof total !== 'number')
      throw new Error(`the heap's figures: ${exceptionDetails?.text ?? JSON.stringify(result.value)}`);
    return { usedBytes: used, codeBytes: code, totalBytes: total };
  } finally {
    clearTimeout(timer);
    socket.onclose = null;
    socket.close();
  }
}
