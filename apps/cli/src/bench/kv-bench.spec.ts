import { markdownTable, median, spread } from './bench.format';
import { parseKvConfigs } from './kv-bench.command';

describe('bench kv', () => {
  it('reads fa:k:v settings, V defaulting to K, and refuses a quantized V without flash attention', () => {
    expect(parseKvConfigs('off:f16:f16,on:q8_0')).toEqual([
      { label: 'FA off, K f16, V f16', flashAttention: 'off', k: 'f16', v: 'f16' },
      { label: 'FA on, K q8_0, V q8_0', flashAttention: 'on', k: 'q8_0', v: 'q8_0' },
    ]);
    expect(() => parseKvConfigs('off:q4_0:q4_0')).toThrow(/needs flash attention/);
    expect(() => parseKvConfigs('auto:f16:f16')).toThrow(/fa:k:v/);
    expect(() => parseKvConfigs('on:q5_1:f16')).toThrow(/fa:k:v/);
  });

  it('summarises rounds as median and range', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(spread([10, 30, 20])).toBe('20.0 (10.0–30.0)');
    expect(spread([])).toBe('–');
    expect(markdownTable(['a', 'bb'], [['1', '2']])).toBe('| a | bb |\n|---|----|\n| 1 | 2  |\n');
  });
});
