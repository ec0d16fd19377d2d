import { Histogram, Registry } from 'prom-client';
import { boundHistogram } from './bound.histogram';

describe('boundHistogram', () => {
  const make = (registry: Registry, name: string) =>
    new Histogram({ name, help: 'h', labelNames: ['model', 'other'] as const, buckets: [0.001, 0.01, 0.1, 1], registers: [registry] });
  const values = [0, 0.0005, 0.001, 0.0011, 0.05, 0.1, 0.7, 1, 3, 250];

  /** The exposition lines of a histogram with its name replaced, to compare two of them. */
  const lines = async (registry: Registry, name: string): Promise<string> =>
    (await registry.getSingleMetricAsString(name)).replaceAll(name, 'h');

  it('exports exactly what observe() exports, beside other label sets', async () => {
    const registry = new Registry();
    const plain = make(registry, 'plain_seconds');
    const bound = make(registry, 'bound_seconds');
    const observe = boundHistogram(bound, { model: 'a' });
    for (const v of values) {
      plain.observe({ model: 'a' }, v);
      observe(v);
      // Another series of the same histogram is left alone.
      plain.observe({ model: 'b', other: 'x' }, v * 2);
      bound.observe({ model: 'b', other: 'x' }, v * 2);
    }
    expect(await lines(registry, 'bound_seconds')).toBe(await lines(registry, 'plain_seconds'));
    expect(await lines(registry, 'bound_seconds')).toContain('h_count{model="a"} 10');
  });

  it('keeps counting after a reset of the registry', async () => {
    const registry = new Registry();
    const plain = make(registry, 'plain_seconds');
    const bound = make(registry, 'bound_seconds');
    const observe = boundHistogram(bound, { model: 'a' });
    observe(0.5);
    plain.observe({ model: 'a' }, 0.5);
    registry.resetMetrics();
    for (const v of [0.002, 0.2]) {
      observe(v);
      plain.observe({ model: 'a' }, v);
    }
    expect(await lines(registry, 'bound_seconds')).toBe(await lines(registry, 'plain_seconds'));
    expect(await lines(registry, 'bound_seconds')).toContain('h_count{model="a"} 2');
  });

  it('rejects a value that is not a finite number, as observe() does', () => {
    const registry = new Registry();
    const observe = boundHistogram(make(registry, 'bound_seconds'), { model: 'a' });
    expect(() => observe(NaN)).toThrow(TypeError);
    expect(() => observe(Infinity)).toThrow(TypeError);
  });

  it('shows no series before the first observation', async () => {
    const registry = new Registry();
    const bound = make(registry, 'bound_seconds');
    boundHistogram(bound, { model: 'a' });
    expect(await registry.getSingleMetricAsString('bound_seconds')).not.toContain('model="a"');
  });
});
