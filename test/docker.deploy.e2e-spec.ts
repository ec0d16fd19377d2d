import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { load } from 'js-yaml';
import { AppConfig, CONFIG_SPEC } from '@app/common';
import { dockerIgnored, exists, expand, parseDockerfile, read, stagesUsed } from './support/deploy-files';
import { nginxBinary } from './support/nginx';
import { ROOT } from './support/server-process';

/**
 * No Docker engine runs here: the Dockerfile and docker-compose.yml are checked by parsing
 * (structure, every referenced file exists, ports and health checks agree with the app's
 * configuration), and the Compose nginx.conf by Debian's `nginx -t`.
 */
const DEFAULTS = AppConfig.fromEnv({});
const dockerfile = parseDockerfile(read('Dockerfile'));
const VARIANTS: Record<string, string>[] = [{}, { VARIANT: 'cpu' }, { VARIANT: 'cuda' }, { VARIANT: 'cuda', CUDA_SOURCE_BUILD: 'true' }];

/* eslint-disable @typescript-eslint/no-explicit-any */
const compose = load(read('docker-compose.yml')) as { services: Record<string, any>; volumes: Record<string, unknown> };
const api = compose.services.api;
const env = (service: any): Record<string, string> => service.environment as Record<string, string>;

describe('Dockerfile', () => {
  const runtime = dockerfile.stages.at(-1)!;
  const runtimeAll = (keyword: string): string[] => runtime.instructions.filter((i) => i.keyword === keyword).map((i) => i.args);

  it.each(VARIANTS)('builds %j from stages and images that exist, on Node 20', (args) => {
    const stages = stagesUsed(dockerfile, args);
    const images = stages.map((s) => expand(s.from, new Map([...dockerfile.globalArgs, ...Object.entries(args)]))).filter((f) => !stages.some((s) => s.name === f));
    expect(images.some((i) => /^node:20[-.]/.test(i))).toBe(true);
    if (args.VARIANT === 'cuda') expect(images.some((i) => i.startsWith('nvidia/cuda:13.1'))).toBe(true);
    else expect(images.some((i) => i.startsWith('nvidia/cuda'))).toBe(false);
    // the source build compiles ggml-cuda only when asked
    expect(stages.some((s) => s.name === 'ggml-cuda')).toBe(args.CUDA_SOURCE_BUILD === 'true');
  });

  it('defaults to the CPU variant, which carries no GPU library', () => {
    expect(dockerfile.globalArgs.get('VARIANT')).toBe('cpu');
    const cpu = dockerfile.stages.find((s) => s.name === 'deps-cpu')!;
    expect(cpu.instructions.map((i) => i.args).join('\n')).toMatch(/rm -rf .*@node-llama-cpp\/\*cuda\*/);
    expect(dockerfile.stages.find((s) => s.name === 'base-cpu')!.instructions.map((i) => i.args)).toContain('GPU=cpu');
  });

  it('installs production dependencies only, and never builds node-llama-cpp at install', () => {
    const build = dockerfile.stages.find((s) => s.name === 'build')!.instructions.map((i) => i.args).join('\n');
    expect(build).toContain('npm ci');
    expect(build).toMatch(/npm prune --omit=dev/);
    expect(build).toContain('NODE_LLAMA_CPP_SKIP_DOWNLOAD=true');
  });

  it('runs as a non-root user, with models and data as volumes', () => {
    const user = runtimeAll('USER');
    expect(user).toHaveLength(1);
    expect(user[0]).not.toMatch(/^(0|root)(:|$)/);
    expect(JSON.parse(runtimeAll('VOLUME')[0])).toEqual(expect.arrayContaining(['/models', '/data']));
    expect(runtimeAll('ENV').join(' ')).toContain('DATA_DIR=/data');
  });

  it("health-checks /health/live on the port it exposes, which is the app's PORT", () => {
    const envs = runtimeAll('ENV').join(' ');
    expect(envs).toContain(`PORT=${DEFAULTS.port}`);
    expect(runtimeAll('EXPOSE')).toEqual([String(DEFAULTS.port)]);
    const [check] = runtimeAll('HEALTHCHECK');
    expect(check).toContain("/health/live'");
    expect(check).toContain(`process.env.PORT||${DEFAULTS.port}`);
    // what CMD runs is what `npm start` runs
    const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.start;
    expect(JSON.parse(runtimeAll('CMD')[0])).toEqual(start.split(' '));
  });

  it('copies only files that exist and that .dockerignore lets into the context', () => {
    const ignore = read('.dockerignore').split('\n');
    const sources = dockerfile.stages
      .flatMap((s) => s.instructions)
      .filter((i) => i.keyword === 'COPY' && !i.args.includes('--from='))
      .flatMap((i) => i.args.split(/\s+/).filter((w) => !w.startsWith('--')).slice(0, -1));
    expect(sources).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'apps', 'libs', 'models/stories260K.gguf']));
    for (const src of sources) {
      expect([src, exists(src)]).toEqual([src, true]);
      expect([src, dockerIgnored(src, ignore)]).toEqual([src, false]);
    }
    // heavy or private things stay out
    for (const path of ['node_modules', 'dist', 'data', '.git', 'models/synth-110m.gguf', '.env']) expect([path, dockerIgnored(path, ignore)]).toEqual([path, true]);
  });
});

describe('docker-compose.yml', () => {
  it('has the whole stack: 2 api replicas, redis, postgres, nginx, prometheus, grafana, jaeger', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['api', 'grafana', 'jaeger', 'nginx', 'postgres', 'prometheus', 'redis']);
    expect(api.deploy.replicas).toBe(2);
    expect(api.ports).toBeUndefined(); // only nginx faces clients
    expect(exists(api.build.dockerfile)).toBe(true);
    expect(api.init).toBe(true);
  });

  it('configures the api only with variables the app knows, valid for AppConfig', () => {
    const vars = env(api);
    for (const name of Object.keys(vars)) expect([name, name in CONFIG_SPEC]).toEqual([name, true]);
    const resolved = Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, String(v).replace(/\$\{(\w+):-([^}]*)\}/g, '$2')]));
    const config = AppConfig.fromEnv({ ...resolved, MODEL_PATH: join(ROOT, 'models', 'stories260K.gguf') });
    expect(config.port).toBe(DEFAULTS.port);
    expect(new URL(config.redisUrl!).host).toBe('redis:6379');
    const db = new URL(config.databaseUrl!);
    const pg = env(compose.services.postgres);
    expect([db.hostname, db.port, db.username, db.pathname.slice(1)]).toEqual(['postgres', '5432', pg.POSTGRES_USER, pg.POSTGRES_DB]);
    expect(String(vars.DATABASE_URL)).toContain(':${POSTGRES_PASSWORD:-llm}@');
    expect(pg.POSTGRES_PASSWORD).toBe('${POSTGRES_PASSWORD:-llm}');
    expect(config.otelExporterOtlpEndpoint).toBe('http://jaeger:4318');
    expect(compose.services.jaeger.expose).toContain('4318');
    // the model comes from the mounted volume
    expect(api.volumes).toContain('./models:/models:ro');
    expect(vars.MODEL_PATH).toMatch(/^\/models\//);
    // running generations finish before Docker's SIGKILL
    expect(Number(/^(\d+)s$/.exec(api.stop_grace_period)![1]) * 1000).toBeGreaterThan(config.drainTimeoutMs);
  });

  it("health-checks each replica's /health/live on the app's port", () => {
    const test = api.healthcheck.test as string[];
    expect(test.join(' ')).toContain(`http://127.0.0.1:${env(api).PORT}/health/live`);
    expect(Number(env(api).PORT)).toBe(DEFAULTS.port);
    expect(api.expose).toEqual([String(DEFAULTS.port)]);
    expect(compose.services.nginx.depends_on.api.condition).toBe('service_healthy');
    for (const dep of ['redis', 'postgres']) {
      expect(api.depends_on[dep].condition).toBe('service_healthy');
      expect(compose.services[dep].healthcheck.test.length).toBeGreaterThan(1);
    }
  });

  it('keeps Redis append-only and every stateful service on a named volume', () => {
    const cmd = (compose.services.redis.command as string[]).join(' ');
    expect(cmd).toContain('--appendonly yes');
    for (const [service, target] of [['redis', '/data'], ['postgres', '/var/lib/postgresql/data'], ['prometheus', '/prometheus'], ['grafana', '/var/lib/grafana']]) {
      const mount = (compose.services[service].volumes as string[]).find((v) => v.split(':')[1] === target)!;
      expect(Object.keys(compose.volumes)).toContain(mount.split(':')[0]);
    }
  });

  it('mounts only files that exist (the certificate is made by gen-cert.sh)', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      for (const volume of (service.volumes ?? []) as string[]) {
        const host = volume.split(':')[0];
        if (!host.startsWith('./')) continue;
        if (host === './deploy/nginx/certs') {
          expect(read('deploy/nginx/gen-cert.sh')).toContain('tls.crt');
          expect(read('deploy/nginx/.gitignore')).toContain('certs/');
        } else expect([name, host, exists(host)]).toEqual([name, host, true]);
      }
    }
  });

  it("points nginx at the api replicas' port, with the mounted includes and certificate", () => {
    const conf = read('deploy/nginx/nginx.conf');
    expect(conf).toContain(`server api:${DEFAULTS.port}`);
    const mounts = Object.fromEntries((compose.services.nginx.volumes as string[]).map((v) => [v.split(':')[1], v.split(':')[0]]));
    for (const include of conf.matchAll(/include (\/etc\/nginx\/llm\/[\w.]+);/g)) {
      expect(exists(include[1].replace('/etc/nginx/llm', mounts['/etc/nginx/llm']))).toBe(true);
    }
    expect(conf).toContain('ssl_certificate     /etc/nginx/certs/tls.crt');
    expect(mounts['/etc/nginx/certs']).toBe('./deploy/nginx/certs');
    expect(mounts['/etc/nginx/nginx.conf']).toBe('./deploy/nginx/nginx.conf');
    expect((compose.services.nginx.ports as string[]).map((p) => p.split(':').at(-1))).toEqual(['80', '443']);
  });

  it('provisions Prometheus (every replica scraped on its port) and Grafana from deploy/', () => {
    const prom = compose.services.prometheus;
    const configFile = (prom.command as string[]).find((a) => a.startsWith('--config.file='))!.split('=')[1];
    const mount = (prom.volumes as string[]).find((v) => configFile.startsWith(v.split(':')[1] + '/'))!;
    const hostConfig = configFile.replace(mount.split(':')[1], mount.split(':')[0]);
    expect(exists(hostConfig)).toBe(true);
    const promConfig = load(read(hostConfig)) as any;
    const job = promConfig.scrape_configs[0];
    expect(job.metrics_path).toBe('/metrics');
    expect(job.dns_sd_configs[0]).toMatchObject({ names: ['api'], port: DEFAULTS.port });
    for (const rules of promConfig.rule_files as string[]) expect(exists(join('deploy/prometheus', rules))).toBe(true);

    const grafana = compose.services.grafana;
    const gmounts = Object.fromEntries((grafana.volumes as string[]).map((v) => [v.split(':')[1], v.split(':')[0]]));
    const ds = load(read(join(gmounts['/etc/grafana/provisioning/datasources'], 'prometheus.yml'))) as any;
    expect(ds.datasources[0].url).toBe('http://prometheus:9090');
    const providers = load(read(join(gmounts['/etc/grafana/provisioning/dashboards'], 'dashboards.yml'))) as any;
    expect(gmounts[providers.providers[0].options.path]).toBe('./deploy/grafana/dashboards');
  });

  const promtool = (() => {
    try {
      return execFileSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).trim();
    } catch {
      return '';
    }
  })();
  (promtool ? it : it.skip)('the Compose Prometheus config passes `promtool check config`', () => {
    const out = execFileSync(promtool, ['check', 'config', join(ROOT, 'deploy/prometheus/prometheus.compose.yml')], { encoding: 'utf8' });
    expect(out).toContain('SUCCESS');
  });

  const nginx = nginxBinary();
  (nginx ? it : it.skip)("nginx.conf passes Debian nginx's `nginx -t` (api host and paths mapped to this machine)", () => {
    const dir = mkdtempSync(join(tmpdir(), 'llm-nginx-t-'));
    try {
      execFileSync('bash', [join(ROOT, 'deploy/nginx/gen-cert.sh'), dir], { stdio: 'pipe' });
      const conf = read('deploy/nginx/nginx.conf')
        .replace(`server api:${DEFAULTS.port}`, `server 127.0.0.1:${DEFAULTS.port}`)
        .replaceAll('/etc/nginx/llm/', join(ROOT, 'deploy/nginx/llm') + '/')
        .replaceAll('/etc/nginx/certs/', dir + '/')
        .replace('pid /tmp/nginx.pid;', `pid ${dir}/nginx.pid;`)
        // the container's stdout/stderr; the test's are pipes nginx cannot open by name
        .replace('/dev/stderr', join(dir, 'error.log'))
        .replace('/dev/stdout', join(dir, 'access.log'));
      expect(conf).not.toMatch(/\/etc\/nginx\/(llm|certs)|api:/);
      writeFileSync(join(dir, 'nginx.conf'), conf);
      const out = execFileSync(nginx!, ['-t', '-e', join(dir, 'error.log'), '-p', dir, '-c', join(dir, 'nginx.conf')], { encoding: 'utf8', stdio: 'pipe' });
      expect(out).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
