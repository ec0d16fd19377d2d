import { randomBytes } from 'node:crypto';
import { AppConfig } from '@app/common';
import { AuthStatsService } from './auth-stats.service';
import { Principal } from './key.types';
import { RateLimitService } from './rate-limit.service';

const principal = (tpm: number): Principal => ({
  id: `key_${randomBytes(8).toString('hex')}`,
  name: 'k',
  scopes: ['generate'],
  limits: { rpm: 0, tpm, concurrency: 0 },
  priority: 'normal',
  source: 'store',
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** reserve → settle/release, in memory and in a real Redis (127.0.0.1:6379, a private key prefix). */
describe.each([
  ['memory', {}],
  ['redis', { REDIS_URL: 'redis://127.0.0.1:6379/0', REDIS_KEY_PREFIX: `test-rl-${randomBytes(4).toString('hex')}:` }],
])('RateLimitService token reservations (%s)', (_, env) => {
  let limits: RateLimitService;
  beforeAll(async () => {
    limits = new RateLimitService(AppConfig.with({ ...env, RATE_LIMIT_WINDOW_MS: '1000' }, {}), new AuthStatsService());
    await limits.onModuleInit();
  });
  afterAll(() => limits.onApplicationShutdown());

  const used = async (p: Principal): Promise<number> => (await limits.tokenWindow(p))?.used ?? -1;

  it('holds what a request may use; parallel reservations never exceed the limit', async () => {
    const p = principal(100);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => limits.reserve(p, 25)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(4);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ code: 'token_rate_limit_exceeded', status: 429 });
    expect(refused.reason.headers['Retry-After']).toBeDefined();
    expect(await used(p)).toBe(100);
  });

  it('settles to the real count, releases to nothing, and counts each end once', async () => {
    const p = principal(100);
    const a = await limits.reserve(p, 60);
    const b = await limits.reserve(p, 30);
    expect(await used(p)).toBe(90);
    await a.settle(12);
    await a.settle(50); // a second end changes nothing
    expect(await used(p)).toBe(42);
    await b.release();
    expect(await used(p)).toBe(12);
  });

  it('refuses a request larger than the whole limit, saying so, without Retry-After', async () => {
    await expect(limits.reserve(principal(100), 101)).rejects.toMatchObject({
      message: expect.stringMatching(/may use up to 101 tokens, more than this API key's limit of 100 tokens per 1 s; lower max_tokens/),
      headers: expect.not.objectContaining({ 'Retry-After': expect.anything() }),
    });
  });

  it('a reservation made in a window that has ended charges its real count to the current one', async () => {
    const p = principal(100);
    const r = await limits.reserve(p, 80);
    await sleep(1100);
    const next = await limits.reserve(p, 10);
    await r.settle(7);
    // Not 10 - 73: the tokens the old window held went with it.
    expect(await used(p)).toBe(17);
    await next.release();
    expect(await used(p)).toBe(7);
  });

  it('a key without a token limit reserves nothing', async () => {
    const free = await limits.reserve(principal(0), 1_000_000);
    expect(free.tokens).toBe(0);
    await free.settle(5);
  });
});
