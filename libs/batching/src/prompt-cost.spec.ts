import type { BatchItem, DecodeRuntime } from './batching.types';
import { busyPromptPackTokens, measurePromptCost, PromptCost } from './prompt-cost';

/** A runtime whose prompt steps cost fixed + perToken * n ms (reported as engine compute), with `slow` added to chosen calls. */
function costRuntime(fixed: number, perToken: number, options: { batchSize?: number; contextSize?: number; slow?: (call: number) => number } = {}) {
  const calls: BatchItem[][] = [];
  const truncated: [number, number][] = [];
  const runtime: DecodeRuntime = {
    slotCount: 2,
    batchSize: options.batchSize ?? 512,
    contextSize: options.contextSize ?? 2048,
    configure: () => undefined,
    decode: async (items) => {
      calls.push([...items]);
      const n = items.reduce((sum, i) => sum + i.tokens.length, 0);
      return { computeMs: fixed + perToken * n + (options.slow?.(calls.length) ?? 0), threads: 1 };
    },
    sample: async (slots) => slots.map(() => 0),
    isEndOfGeneration: () => false,
    truncate: (slot, from) => {
      truncated.push([slot, from]);
      return from;
    },
  };
  return { runtime, calls, truncated };
}

describe('measurePromptCost', () => {
  it('fits c(n) = fixed + perToken * n from a short and a long prompt, evaluated as a request prompt is', async () => {
    const { runtime, calls, truncated } = costRuntime(4, 0.25);
    const cost = (await measurePromptCost(runtime, [7, 8, 9])) as PromptCost;
    expect(cost.fixedMs).toBeCloseTo(4, 9);
    expect(cost.perTokenMs).toBeCloseTo(0.25, 9);
    // One unmeasured long prompt first, then short and long in turn, three times.
    expect(calls.map((c) => c[0].tokens.length)).toEqual([128, 32, 128, 32, 128, 32, 128]);
    for (const [item] of calls) expect(item).toMatchObject({ slot: 0, position: 0, logits: true });
    expect(calls[1][0].tokens.slice(0, 4)).toEqual([7, 8, 9, 7]);
    // Every evaluation starts from an empty slot, and the slot is left empty.
    expect(truncated.filter(([slot, from]) => slot === 0 && from === 0)).toHaveLength(calls.length + 1);
  });

  it('keeps the fastest of each length: a step slowed by another process does not count', async () => {
    const { runtime } = costRuntime(4, 0.25, { slow: (call) => (call === 2 || call === 5 || call === 7 ? 50 : 0) });
    const cost = (await measurePromptCost(runtime, [1])) as PromptCost;
    expect(cost.fixedMs).toBeCloseTo(4, 9);
    expect(cost.perTokenMs).toBeCloseTo(0.25, 9);
  });

  it('fits the lengths into the batch and the context; gives up where they are too small or cannot be told apart', async () => {
    const small = costRuntime(1, 0.5, { batchSize: 64 });
    await measurePromptCost(small.runtime, [1]);
    expect(new Set(small.calls.map((c) => c[0].tokens.length))).toEqual(new Set([64, 32]));
    expect(await measurePromptCost(costRuntime(1, 0.5, { contextSize: 12 }).runtime, [1])).toBeNull();
    expect(await measurePromptCost(costRuntime(3, 0).runtime, [1])).toBeNull();
    expect(await measurePromptCost(costRuntime(3, 0.1).runtime, [])).toBeNull();
  });

  it('measures again, up to `attempts` times, when a measurement cannot tell the lengths apart', async () => {
    // The first measurement (7 evaluations) overlaps another process: every long prompt as fast as a short one.
    // (The second call's first 7 evaluations are flat again: its first attempt fails too.)
    const busy = costRuntime(4, 0.25);
    const decode = busy.runtime.decode;
    busy.runtime.decode = async (items) => {
      const report = await decode(items);
      return busy.calls.length <= 7 && report ? { ...report, computeMs: 40 } : report;
    };
    expect(await measurePromptCost(busy.runtime, [1])).toBeNull();
    expect(busy.calls).toHaveLength(7);
    busy.calls.length = 0;
    const cost = (await measurePromptCost(busy.runtime, [1], { attempts: 3 })) as PromptCost;
    // The unmeasured first evaluation once, then six a measurement.
    expect(busy.calls).toHaveLength(13);
    expect(cost.fixedMs).toBeCloseTo(4, 9);
    expect(cost.perTokenMs).toBeCloseTo(0.25, 9);
    // Never told apart: gives up after the attempts, the slot left empty.
    const flat = costRuntime(3, 0);
    expect(await measurePromptCost(flat.runtime, [1], { attempts: 3 })).toBeNull();
    expect(flat.calls).toHaveLength(19);
    expect(flat.truncated.at(-1)).toEqual([0, 0]);
  });

  it('clears the slot even when a decode fails', async () => {
    const { runtime, truncated } = costRuntime(1, 1);
    runtime.decode = async () => {
      throw new Error('decode failed');
    };
    await expect(measurePromptCost(runtime, [1])).rejects.toThrow('decode failed');
    expect(truncated.at(-1)).toEqual([0, 0]);
  });
});

describe('busyPromptPackTokens', () => {
  it('packs prompt work within ~40 ms and ten times the fixed cost, never below the floor or above the batch', () => {
    // A 2-core CPU where a prompt token costs ~0.9 ms: one short prompt a step, as with 16.
    expect(busyPromptPackTokens({ fixedMs: 5, perTokenMs: 0.9 }, 512, 16)).toBe(44);
    expect(busyPromptPackTokens({ fixedMs: 1, perTokenMs: 0.9 }, 512, 16)).toBe(16);
    // Matrix units (AMX), measured: 0.266 ms a token, 3.8 ms a step: a few short prompts.
    expect(busyPromptPackTokens({ fixedMs: 3.8, perTokenMs: 0.266 }, 512, 16)).toBe(142);
    // A tiny model: no fixed cost to save, so no packing beyond the floor.
    expect(busyPromptPackTokens({ fixedMs: 0, perTokenMs: 0.1 }, 512, 16)).toBe(16);
    // GPU-like: the whole batch.
    expect(busyPromptPackTokens({ fixedMs: 5, perTokenMs: 0.01 }, 512, 16)).toBe(512);
    expect(busyPromptPackTokens({ fixedMs: 5, perTokenMs: 0.9 }, 512, 16, 10)).toBe(16);
    expect(busyPromptPackTokens({ fixedMs: 5, perTokenMs: 0.1 }, 64)).toBe(64);
  });
});
