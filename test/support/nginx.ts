import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ROOT } from './server-process';

export const NGINX_DIR = join(ROOT, 'deploy', 'nginx');

/** Debian's nginx (`apt-get install nginx-light`, .ci/run does it); /usr/sbin is not on every PATH. */
export function nginxBinary(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p));
  }
}

export interface Nginx {
  readonly url: string;
  readonly tlsUrl: string;
  readonly prefix: string;
  log(): string;
  /** nginx's access log (the deployed llm_json format: one JSON object a line). */
  accessLog(): string;
  stop(): Promise<void>;
}

/**
 * Runs nginx in the foreground as a child process on free loopback ports, with a generated main
 * config that includes the deployed deploy/nginx/llm/{http,locations}.conf unchanged and an
 * upstream of the given replicas; never touches a system nginx.
 */
export async function startNginx(upstreams: string[], certDir: string): Promise<Nginx> {
  const binary = nginxBinary();
  if (!binary) throw new Error('nginx is not installed');
  const prefix = mkdtempSync(join(tmpdir(), 'llm-nginx-'));
  // Workers run as nobody when the test runs as root: they must reach the prefix.
  chmodSync(prefix, 0o755);
  const [port, tlsPort] = [await freePort(), await freePort()];
  const servers = upstreams.map((u) => `    server ${u.replace(/^https?:\/\//, '')} max_fails=1 fail_timeout=10s;`).join('\n');
  const conf = `
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 512; }
http {
  default_type application/octet-stream;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  include ${NGINX_DIR}/llm/http.conf;
  access_log ${prefix}/access.log llm_json;
  upstream llm_api {
${servers}
    keepalive 8;
  }
  server {
    listen 127.0.0.1:${port};
    include ${NGINX_DIR}/llm/locations.conf;
  }
  server {
    listen 127.0.0.1:${tlsPort} ssl;
    ssl_certificate ${certDir}/tls.crt;
    ssl_certificate_key ${certDir}/tls.key;
    include ${NGINX_DIR}/llm/locations.conf;
  }
}
`;
  const file = join(prefix, 'nginx.conf');
  writeFileSync(file, conf);
  execFileSync(binary, ['-t', '-q', '-e', join(prefix, 'error.log'), '-p', prefix, '-c', file], { stdio: 'pipe' });
  const child: ChildProcess = spawn(binary, ['-e', join(prefix, 'error.log'), '-p', prefix, '-c', file, '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 10_000;
  for (;;) {
    try {
      await fetch(`${url}/health`);
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > until) throw new Error(`nginx did not start: ${stderr} ${readLog(prefix)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    tlsUrl: `https://127.0.0.1:${tlsPort}`,
    prefix,
    log: () => readLog(prefix),
    accessLog: () => readLog(prefix, 'access.log'),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGQUIT'); // graceful: finish open requests
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 3000)))]);
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

function readLog(prefix: string, file = 'error.log'): string {
  try {
    return readFileSync(join(prefix, file), 'utf8');
  } catch {
    return '';
  }
}
