import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

/** Debian's nginx (package `nginx-light`); not run as a service: the bench starts its own. */
export const NGINX = '/usr/sbin/nginx';

/** Why nginx cannot run here, or undefined when it can. */
export function nginxUnavailable(): string | undefined {
  return existsSync(NGINX) ? undefined : `${NGINX} not found (Debian package nginx-light)`;
}

export interface StaticNginx {
  readonly url: string;
  stop(): Promise<void>;
}

/** A free loopback port: nginx cannot listen on port 0, so one is found by binding and closing. */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function untilListening(port: number, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => resolve(true)).on('error', () => resolve(false));
      socket.once('connect', () => socket.destroy());
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`nginx not listening on ${port} in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * nginx serving the files of `root`, one process (no master, so one worker), in the foreground, with
 * its config, pid and temp files under `dir`; no access log, keep-alive for as many requests as a
 * run makes, sendfile on (its default static setup).
 */
export async function startStaticNginx(root: string, dir: string): Promise<StaticNginx> {
  const port = await freePort();
  const temp = join(dir, 'temp');
  await mkdir(temp, { recursive: true });
  const config = `daemon off;
master_process off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  default_type application/octet-stream;
  client_body_temp_path ${temp}/body;
  proxy_temp_path ${temp}/proxy;
  fastcgi_temp_path ${temp}/fastcgi;
  uwsgi_temp_path ${temp}/uwsgi;
  scgi_temp_path ${temp}/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${root};
  }
}
`;
  const file = join(dir, 'nginx.conf');
  await writeFile(file, config);
  const child = spawn(NGINX, ['-p', dir, '-c', file, '-e', 'stderr'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    await untilListening(port, child);
  } catch (error) {
    child.kill();
    throw error;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGQUIT'); // nginx's graceful stop
      await once(child, 'exit');
    },
  };
}
