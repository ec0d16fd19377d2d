import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadAll, load } from 'js-yaml';
import { AppConfig, CONFIG_SPEC } from '@app/common';
import { read } from './support/deploy-files';
import { metric, scrape } from './support/metrics';
import { ROOT, ServerProcess, startServer, waitForModel } from './support/server-process';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; [k: string]: any };

const BASE = 'deploy/k8s/base';
const manifests: Manifest[] = readdirSync(join(ROOT, BASE))
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .flatMap((f) => loadAll(read(join(BASE, f))) as Manifest[]);
const one = (kind: string): Manifest => {
  const found = manifests.filter((m) => m.kind === kind);
  expect(found).toHaveLength(1);
  return found[0];
};

const kubectl = (() => {
  try {
    return execFileSync('sh', ['-c', 'command -v kubectl'], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
})();

describe('Kubernetes manifests (deploy/k8s)', () => {
  const deployment = one('Deployment');
  const pod = deployment.spec.template;
  const container = pod.spec.containers[0];
  const config = one('ConfigMap');
  const secret = one('Secret');
  const env = { ...config.data, ...secret.stringData } as Record<string, string>;
  let server: ServerProcess;

  beforeAll(async () => {
    // The configuration as the pod gets it, on this machine (the image's bundled model path
    // becomes the repository's; the database and Redis hosts are the cluster's, never reached here).
    const { DATABASE_URL: _db, REDIS_URL: _redis, OTEL_EXPORTER_OTLP_ENDPOINT: _otel, MODEL_PATH: _model, PORT: _port, ...local } = env;
    server = await startServer({ ...local, API_KEYS: 'k8s-test-key', LOG_LEVEL: 'warn' });
    await waitForModel(server);
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('are well-formed, labelled objects; the kustomization lists every one', () => {
    for (const m of manifests) {
      expect(m.apiVersion).toBeTruthy();
      expect(m.metadata.name).toMatch(/^[a-z0-9-]+$/);
      expect(m.metadata.labels?.['app.kubernetes.io/name']).toBe('llm-api');
    }
    expect(manifests.map((m) => m.kind).sort()).toEqual(
      ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PersistentVolumeClaim', 'PodDisruptionBudget', 'Secret', 'Service'],
    );
    const listed = (load(read(join(BASE, 'kustomization.yaml'))) as { resources: string[] }).resources;
    expect(listed.sort()).toEqual(readdirSync(join(ROOT, BASE)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort());
  });

  it('configure the app only with variables it knows, with values AppConfig accepts', () => {
    for (const name of Object.keys(env)) expect([name, name in CONFIG_SPEC]).toEqual([name, true]);
    const parsed = AppConfig.fromEnv({ ...env, MODEL_PATH: join(ROOT, 'models', 'stories260K.gguf') });
    expect(parsed.port).toBe(AppConfig.fromEnv({}).port);
    expect(env.MODEL_PATH).toBe('/app/models/stories260K.gguf'); // where the Dockerfile puts the bundled model
    expect(read('Dockerfile')).toContain('MODEL_PATH=/app/models/stories260K.gguf');
    expect(container.envFrom).toEqual([{ configMapRef: { name: config.metadata.name } }, { secretRef: { name: secret.metadata.name } }]);
    expect(container.env).toContainEqual({ name: 'INSTANCE_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
  });

  it("probe the app's real routes on its port, and each answers 200 on a running server", async () => {
    const port = container.ports.find((p: { name: string }) => p.name === 'http');
    expect(port.containerPort).toBe(Number(env.PORT));
    expect(port.containerPort).toBe(AppConfig.fromEnv({}).port);
    expect(read('Dockerfile')).toContain(`EXPOSE ${port.containerPort}`);
    const probes = { startupProbe: '/health/startup', livenessProbe: '/health/live', readinessProbe: '/health/ready' } as const;
    for (const [probe, path] of Object.entries(probes)) {
      expect(container[probe].httpGet).toEqual({ path, port: 'http' });
      const res = await fetch(`${server.url}${path}`);
      expect([path, res.status]).toEqual([path, 200]);
    }
    // startup tolerates a slow model load; liveness never kills a pod that is only loading
    expect(container.startupProbe.periodSeconds * container.startupProbe.failureThreshold).toBeGreaterThanOrEqual(120);
    expect(pod.metadata.annotations['prometheus.io/port']).toBe(String(port.containerPort));
    expect(pod.metadata.annotations['prometheus.io/path']).toBe('/metrics');
  });

  it('give running generations time to drain before SIGKILL', () => {
    const grace = pod.spec.terminationGracePeriodSeconds * 1000;
    const preStop = container.lifecycle.preStop.sleep.seconds * 1000;
    expect(grace).toBeGreaterThan(preStop + Number(env.DRAIN_TIMEOUT_MS));
  });

  it('run non-root with resources, models as a read-only volume, and a writable /data and /tmp', () => {
    expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
    expect(read('Dockerfile')).toContain('USER 10001:10001');
    expect(container.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });
    expect(container.resources.requests.cpu).toBeTruthy();
    expect(container.resources.limits.memory).toBeTruthy();
    const mounts = Object.fromEntries(container.volumeMounts.map((m: { name: string; mountPath: string }) => [m.mountPath, m]));
    expect(mounts['/models']).toMatchObject({ readOnly: true });
    expect(mounts['/data']).toBeDefined();
    expect(mounts['/tmp']).toBeDefined();
    const claim = pod.spec.volumes.find((v: { name: string }) => v.name === mounts['/models'].name).persistentVolumeClaim.claimName;
    expect(one('PersistentVolumeClaim').metadata.name).toBe(claim);
  });

  it('wire the Service, PodDisruptionBudget and autoscaler to the Deployment', () => {
    const labels = pod.metadata.labels;
    expect(deployment.spec.selector.matchLabels).toEqual(labels);
    const service = one('Service');
    expect(service.spec.selector).toEqual(labels);
    expect(service.spec.ports[0].targetPort).toBe('http');
    const pdb = one('PodDisruptionBudget');
    expect(pdb.spec.selector.matchLabels).toEqual(labels);
    expect(pdb.spec.minAvailable).toBeLessThan(deployment.spec.replicas);
    const hpa = one('HorizontalPodAutoscaler');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    expect(hpa.spec.minReplicas).toBeGreaterThan(pdb.spec.minAvailable);
    expect(hpa.spec.metrics.map((m: any) => m.resource?.name ?? m.pods?.metric.name)).toEqual(['cpu', 'llm_queue_depth']);
  });

  it("scales on a queue-depth metric that the app exports and the Prometheus adapter serves", async () => {
    const name = one('HorizontalPodAutoscaler').spec.metrics[1].pods.metric.name;
    expect(metric(await scrape(server.url), name)).toBe(0);
    const adapter = load(read('deploy/k8s/prometheus-adapter-values.yaml')) as any;
    const rule = adapter.rules.custom[0];
    expect(rule.seriesQuery).toContain(name);
    expect(rule.name.as).toBe(name);
    expect(Object.keys(rule.resources.overrides).sort()).toEqual(['namespace', 'pod']);
  });

  (kubectl ? it : it.skip)('render with kustomize (offline), the GPU overlay adding nvidia.com/gpu and the CUDA image', () => {
    const render = (dir: string): Manifest[] => loadAll(execFileSync(kubectl, ['kustomize', join(ROOT, dir)], { encoding: 'utf8' })) as Manifest[];
    expect(render(BASE).map((m) => m.kind).sort()).toEqual(manifests.map((m) => m.kind).sort());
    const gpu = render('deploy/k8s/gpu').find((m) => m.kind === 'Deployment')!;
    const c = gpu.spec.template.spec.containers[0];
    expect(c.resources.limits['nvidia.com/gpu']).toBe(1);
    expect(c.resources.requests.cpu).toBe(container.resources.requests.cpu); // merged, not replaced
    expect(c.image).toBe('llm-api:cuda');
    expect(c.env.map((e: { name: string }) => e.name).sort()).toEqual(['GPU', 'INSTANCE_ID']);
    expect(c.startupProbe).toEqual(container.startupProbe);
  });
});
