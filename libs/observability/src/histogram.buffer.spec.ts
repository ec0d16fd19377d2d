import { Histogram, Registry } from 'prom-client';
import { flushBuffersOf, HistogramBuffer } from './histogram.buffer';

describe('HistogramBuffer', () => {
  const make = () => {
    const registry = new Registry();
    const histogram = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['model'], buckets: [0.01, 0.1], registers: [registry], collect: flushBuffersOf });
    return { registry, histogram };
  };
  const count = async (registry: Registry, model: string): Promise<string | undefined> =>
    (await registry.metrics()).split('\n').find((l) => l.startsWith(`h_seconds_count{model="${model}"}`));

  it('shows at the next read exactly what observing each value would have shown', async () => {
    const { registry, histogram } = make();
    const direct = new Histogram({ name: 'd_seconds', help: 'd', labelNames: ['model'], buckets: [0.01, 0.1], registers: [registry] });
    const buffer = new HistogramBuffer(histogram, { model: 'a' });
    const values = [0.005, 0.02, 0.5, 0.05, 0.001];
    for (const v of values) {
      buffer.observe(v);
      direct.observe({ model: 'a' }, v);
    }
    const text = await registry.metrics();
    const series = (name: string) => text.split('\n').filter((l) => l.startsWith(name)).map((l) => l.slice(name.length));
    expect(series('h_seconds_')).toEqual(series('d_seconds_'));
    expect(series('h_seconds_')).toContain('count{model="a"} 5');
    // Read again: nothing counted twice.
    expect(await count(registry, 'a')).toBe('h_seconds_count{model="a"} 5');
  });

  it('hands a full buffer over by itself, and keeps models apart', async () => {
    const { registry, histogram } = make();
    const a = new HistogramBuffer(histogram, { model: 'a' });
    const b = new HistogramBuffer(histogram, { model: 'b' });
    // Without the collect hook, a read shows what went over by itself: 1,024 when the buffer filled.
    const plain = new Histogram({ name: 'p_seconds', help: 'p', labelNames: ['model'], buckets: [0.01], registers: [registry] });
    const p = new HistogramBuffer(plain, { model: 'a' });
    for (let i = 0; i < 1500; i++) {
      a.observe(0.001);
      p.observe(0.001);
    }
    b.observe(1);
    const countOf = async (h: Histogram<string>) => (await h.get()).values.find((v) => v.metricName?.endsWith('_count') && v.labels.model === 'a')?.value;
    expect(await countOf(plain)).toBe(1024);
    expect(await countOf(histogram)).toBe(1500);
    expect(await count(registry, 'b')).toBe('h_seconds_count{model="b"} 1');
  });

  it('refuses a value prom-client would refuse, when it is observed', () => {
    const { histogram } = make();
    const buffer = new HistogramBuffer(histogram, { model: 'a' });
    expect(() => buffer.observe(Number.NaN)).toThrow(TypeError);
    expect(() => buffer.observe(Number.POSITIVE_INFINITY)).toThrow(TypeError);
  });

  it('closed, it hands over what it held and is no longer flushed by reads', async () => {
    const { registry, histogram } = make();
    const buffer = new HistogramBuffer(histogram, { model: 'a' });
    buffer.observe(0.02);
    buffer.close();
    expect(await count(registry, 'a')).toBe('h_seconds_count{model="a"} 1');
  });
});
