import { useEffect, useState } from 'preact/hooks';
import { api, Status } from './api';
import { Meter } from './chart';
import { bytes, n } from './format';

const POLL_MS = 2000;

export function LivePage() {
  const [status, setStatus] = useState<Status | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    const tick = async (): Promise<void> => {
      try {
        const s = await api<Status>('GET', '/admin/status');
        if (live) {
          setStatus(s);
          setError(null);
        }
      } catch (err) {
        if (live) setError((err as Error).message);
      }
    };
    void tick();
    const timer = setInterval(() => void tick(), POLL_MS);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, []);

  if (!status) return <section>{error ? <p class="error">{error}</p> : <p class="muted">Loading…</p>}</section>;
  const s = status.scheduler;
  const hitRate = (c: { hit: number; miss: number }): string => (c.hit + c.miss > 0 ? `${Math.round((100 * c.hit) / (c.hit + c.miss))}%` : '—');
  return (
    <section>
      <div class="page-head">
        <h1>Models and live figures</h1>
        <span class="muted">
          replica <code>{status.instance}</code> · updated {status.time.slice(11, 19)} UTC
        </span>
      </div>
      {error && <p class="error">{error}</p>}
      <div class="grid">
        {status.models.map((m) => (
          <div class="card" key={m.id} aria-label={`Model ${m.id}`}>
            <h2>
              {m.id} <span class={`badge ${m.state}`}>{m.state}</span>
            </h2>
            <dl class="facts">
              <dt>Backend</dt>
              <dd>{m.backend ?? '—'}</dd>
              <dt>Architecture</dt>
              <dd>{m.architecture ?? '—'}</dd>
              <dt>Parameters</dt>
              <dd>{m.parameters ? n(m.parameters) : '—'}</dd>
              <dt>File size</dt>
              <dd>{bytes(m.size_bytes)}</dd>
              <dt>Context / slot</dt>
              <dd>{m.context_size ? n(m.context_size) : '—'}</dd>
              <dt>Chat template</dt>
              <dd>{m.chat_template ?? '—'}</dd>
            </dl>
          </div>
        ))}
        <div class="card" aria-label="Scheduler">
          <h2>
            Scheduler <span class={`badge ${s.accepting ? 'active' : 'revoked'}`}>{s.accepting ? 'accepting' : 'draining'}</span>
          </h2>
          <Meter label="Slots busy" value={s.slots_busy} max={s.slots_total} />
          <Meter label="Queue" value={s.queue_depth} max={s.queue_capacity} />
          <Meter label="KV cache tokens" value={s.kv_cache_tokens} max={s.kv_cache_capacity_tokens} />
        </div>
        <div class="card" aria-label="Traffic">
          <h2>Traffic (since start)</h2>
          <dl class="facts">
            <dt>Requests in flight</dt>
            <dd>{n(status.requests.active)}</dd>
            <dt>Requests answered</dt>
            <dd>{n(status.requests.total)}</dd>
            <dt>Tokens generated</dt>
            <dd>{n(status.tokens.generated)}</dd>
            <dt>Prompt tokens</dt>
            <dd>
              {n(status.tokens.prompt)} ({n(status.tokens.prompt_cached)} from KV cache)
            </dd>
            <dt>Avg. time to first token</dt>
            <dd>{status.time_to_first_token_avg_seconds === null ? '—' : `${(status.time_to_first_token_avg_seconds * 1000).toFixed(1)} ms`}</dd>
            <dt>Exact cache hit rate</dt>
            <dd>
              {hitRate(status.cache.exact)} ({n(status.cache.exact.hit)} hits)
            </dd>
            <dt>Semantic cache hit rate</dt>
            <dd>{hitRate(status.cache.semantic)}</dd>
            <dt>Budget refusals</dt>
            <dd>{n(status.budgets.exceeded)}</dd>
            <dt>Usage not yet written</dt>
            <dd>
              {n(status.usage.buffered)} bucket(s), {status.usage.lagSeconds.toFixed(1)} s
            </dd>
          </dl>
        </div>
      </div>
    </section>
  );
}
